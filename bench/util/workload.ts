import { Mutex, Session, type EtcdClient } from '../../lib/index.js'

/** The lock interface the workloads need (lib's Mutex; any lock with lock/unlock fits). */
export interface LockLike {
  lock(): Promise<void>
  unlock(): Promise<void>
}
export type MutexFactory = (session: Session, name: string) => LockLike

export const libMutex: MutexFactory = (s, name) => new Mutex(s, name)

export interface CounterRun {
  ops: number
  seconds: number
  perSecond: number
  counter: number
  /** ms from the previous holder's unlock returning to the next lock returning (waiters only). */
  handoffs: number[]
  /** CPU time this Node process used during the run, as a share of the wall time (1 = one core). */
  cpuShare: number
  /** Wall-clock start and end (ms since the epoch): runs in several processes are measured as one. */
  startUnixMs: number
  endUnixMs: number
}

/**
 * The Go peer's `lock-contended` workload: `c` workers, each with its own session on the shared
 * client, each `n` times: lock, read the counter, write counter+1, unlock — re-locking at once.
 * Session creation is inside the timed region, as in the Go peer. The counter must end at c*n.
 */
export async function lockCounter(
  client: EtcdClient,
  make: MutexFactory,
  prefix: string,
  c: number,
  n: number,
  options: { resetCounter?: boolean } = {},
): Promise<CounterRun> {
  const key = `${prefix}/counter`
  // One of several processes on one lock leaves the counter as the bench set it.
  if (options.resetCounter !== false) await client.put(key).value('0')
  let lastUnlock = 0
  const handoffs: number[] = []
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await Promise.all(
    Array.from({ length: c }, async () => {
      const session = await Session.create(client)
      try {
        const m = make(session, `${prefix}/lock`)
        for (let i = 0; i < n; i++) {
          const asked = performance.now()
          await m.lock()
          const got = performance.now()
          if (lastUnlock > asked) handoffs.push(got - lastUnlock) // we waited for someone
          const v = Number(await client.get(key).string())
          await client.put(key).value(String(v + 1))
          await m.unlock()
          lastUnlock = performance.now()
        }
      } finally {
        await session.close()
      }
    }),
  )
  const t1 = performance.now()
  const seconds = (t1 - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const cpuShare = (cpu.user + cpu.system) / 1e6 / seconds
  const counter = Number(await client.get(key).string())
  const wall = (t: number) => performance.timeOrigin + t
  return { ops: c * n, seconds, perSecond: (c * n) / seconds, counter, handoffs, cpuShare, startUnixMs: wall(t0), endUnixMs: wall(t1) }
}
