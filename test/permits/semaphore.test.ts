/**
 * Semaphore (issue 14) against a real etcd: at most `permits` holders, FIFO without a
 * thundering herd, fences, the stored `permits` every contender must agree on, aborted waits
 * that leave nothing behind, lost sessions, and the keys as etcdctl sees them.
 */
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import {
  ConfigMismatchError,
  InvalidArgumentError,
  LockedError,
  LockReleasedError,
  Semaphore,
  Session,
  SessionExpiredError,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd(1)

const session = (ttl = 10) => Session.create(etcd.client, { ttl })

/** Every key under `<name>/` (the config key included). */
async function keys(name: string): Promise<string[]> {
  return (await etcd.client.getAll().prefix(`${name}/`).keys()).sort()
}

/** The store revision: unchanged means nothing at all was written. */
async function revision(): Promise<bigint> {
  return (await keyspace(etcd.client).range('\0')).revision
}

/** Polls (bounded) until `n` calls queue for `name`. */
async function queued(name: string, n: number) {
  for (let i = 0; i < 200; i++) {
    if ((await etcd.client.getAll().prefix(`${name}/waiters/`).keys()).length === n) return
    await sleep(10)
  }
  throw new Error(`${name}: ${n} waiters never queued`)
}

/** etcdctl (etcd-client), failing loudly when it is not installed. */
function etcdctl(...args: string[]) {
  const env: Record<string, string | undefined> = { ...process.env, ETCDCTL_API: '3' }
  delete env.ETCDCTL_ENDPOINTS
  const run = spawnSync('etcdctl', [`--endpoints=${etcd.cluster.endpoints.join(',')}`, ...args], { env, encoding: 'utf8' })
  if (run.error) throw new Error(`etcdctl could not run (${run.error.message}): apt-get install -y etcd-client`)
  if (run.status !== 0) throw new Error(`etcdctl ${args.join(' ')} failed: ${run.stderr}`)
  return run.stdout
}

/** Whether a grant of `promise` has happened yet (without waiting for it). */
function settled(promise: Promise<unknown>) {
  const state = { done: false }
  promise.then(
    () => (state.done = true),
    () => (state.done = true),
  )
  return state
}

describe('Semaphore', () => {
  it('40 contenders over 3 rounds, holding 0–30 ms: never more than `permits` at once; fences are distinct and later grants get higher ones', async () => {
    const name = uniqueName('sem')
    const sessions = await Promise.all([session(), session(), session()])
    let holding = 0
    let most = 0
    const holds: { fence: bigint; askedAt: number; grantedAt: number; releasedAt: number }[] = []
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        for (let round = 0; round < 3; round++) {
          const s = new Semaphore(sessions[i % 3], name, 4)
          const askedAt = performance.now()
          await s.acquire()
          const grantedAt = performance.now()
          most = Math.max(most, ++holding)
          await sleep(Math.random() * 30)
          holding--
          const releasedAt = performance.now()
          holds.push({ fence: s.fence, askedAt, grantedAt, releasedAt })
          await s.release()
        }
      }),
    )
    expect(holds).toHaveLength(120)
    expect(most).toBeLessThanOrEqual(4)
    expect(most).toBe(4) // the permits were used, not just respected
    expect(new Set(holds.map((h) => h.fence)).size).toBe(120)
    // A call made after a hold ended is granted a higher fence (etcd orders the two Txns). Not
    // "granted after": a grant's answer can be handled after a later grant's, and its hold
    // then seems to start after the other ended although its Txn committed first.
    for (const a of holds) for (const b of holds) if (a.releasedAt < b.askedAt) expect(b.fence).toBeGreaterThan(a.fence)
    expect(await keys(name)).toEqual([`${name}/config`])
    await Promise.all(sessions.map((s) => s.close()))
  })

  it('serves waiters first come, first served; a release by a holder other than the oldest wakes the first waiter', async () => {
    const name = uniqueName('fifo')
    const s = await session()
    const [a, b] = [new Semaphore(s, name, 2), new Semaphore(s, name, 2)]
    await a.acquire()
    await b.acquire()
    const waiters = Array.from({ length: 4 }, () => new Semaphore(s, name, 2))
    const grants: number[] = []
    const waiting = []
    for (const [i, w] of waiters.entries()) {
      waiting.push(w.acquire().then(() => grants.push(i)))
      await queued(name, i + 1)
    }
    await b.release() // the younger holder
    await waiting[0]
    expect(grants).toEqual([0])
    await a.release()
    await waiting[1]
    expect(grants).toEqual([0, 1])
    await waiters[0].release()
    await waiters[1].release()
    await Promise.all(waiting)
    expect(grants).toEqual([0, 1, 2, 3])
    await Promise.all(waiters.slice(2).map((w) => w.release()))
    await s.close()
  })

  it('a release wakes only the head of the queue: the etcd requests of a handoff do not grow with the queue', async () => {
    const name = uniqueName('herd')
    const s = await session()
    const holder = new Semaphore(s, name, 1)
    await holder.acquire()
    const waiters = Array.from({ length: 30 }, () => new Semaphore(s, name, 1))
    const all: Promise<void>[] = []
    for (const [i, w] of waiters.entries()) {
      all.push(w.acquire())
      await queued(name, i + 1) // queue order = index
    }
    await sleep(300) // let every waiter settle on its watch
    const requests = async () => {
      const text = await (await fetch(`${etcd.cluster.endpoints[0]}/metrics`)).text()
      let n = 0
      for (const m of text.matchAll(/^grpc_server_msg_received_total\{grpc_method="(Range|Txn)",[^}]*\} (\d+)/gm)) n += Number(m[2])
      return n
    }
    const before = await requests()
    await holder.release()
    const first = await Promise.race(all.map((p, i) => p.then(() => i)))
    await sleep(300) // anything a herd would do happens now
    const handoff = (await requests()) - before
    expect(first).toBe(0)
    // release (1 Txn) + the head's step (1 Txn), a few reads at most — not one per waiter.
    console.log(`[semaphore] one handoff with 30 queued: ${handoff} Range/Txn requests`)
    expect(handoff).toBeLessThanOrEqual(6)
    await waiters[0].release()
    for (let i = 1; i < 30; i++) {
      await all[i]
      await waiters[i].release()
    }
    await s.close()
  })

  it('tryAcquire takes a free permit, or throws LockedError and writes nothing', async () => {
    const name = uniqueName('try')
    const s = await session()
    const a = new Semaphore(s, name, 1)
    await a.tryAcquire()
    expect(a.key).toBe(`${name}/holders/0`)
    const at = await revision()
    const b = new Semaphore(s, name, 1)
    await expect(b.tryAcquire()).rejects.toBeInstanceOf(LockedError)
    expect(await revision()).toBe(at)
    expect(b.held).toBe(false)
    // With a call queued, a free permit is the queue's: try fails too.
    const c = new Semaphore(s, name, 1)
    const waiting = c.acquire()
    await queued(name, 1)
    await expect(b.tryAcquire()).rejects.toThrow(/queued/)
    await a.release()
    await waiting
    await c.release()
    expect(await keys(name)).toEqual([`${name}/config`])
    await s.close()
  })

  it('a contender with another `permits` fails with ConfigMismatchError and writes nothing', async () => {
    const name = uniqueName('mismatch')
    const s = await session()
    const three = new Semaphore(s, name, 3)
    await three.acquire()
    const at = await revision()
    for (const attempt of [() => new Semaphore(s, name, 4).acquire(), () => new Semaphore(s, name, 2).tryAcquire()]) {
      const err = await attempt().catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigMismatchError)
      expect((err as ConfigMismatchError).stored).toBe('permits=3')
      expect((err as Error).message).toMatch(/etcdctl put .*\/config/)
    }
    expect(await revision()).toBe(at)
    await three.release()
    await s.close()
  })

  it('permits change for everyone with etcdctl put <name>/config: old contenders then fail, new ones run', async () => {
    const name = uniqueName('change')
    const s = await session()
    const old = new Semaphore(s, name, 1)
    await old.acquire()
    await old.release()
    expect(etcdctl('put', `${name}/config`, 'permits=2')).toMatch(/OK/)
    await expect(new Semaphore(s, name, 1).acquire()).rejects.toBeInstanceOf(ConfigMismatchError)
    const [x, y] = [new Semaphore(s, name, 2), new Semaphore(s, name, 2)]
    await x.tryAcquire()
    await y.tryAcquire()
    await x.release()
    await y.release()
    await s.close()
  })

  /** Five holders of `name` with permits 5, then `permits=3` put for everyone; the holders of slots 0–2 release. */
  async function lowered(name: string, s: Session) {
    const old = Array.from({ length: 5 }, () => new Semaphore(s, name, 5))
    for (const o of old) await o.acquire()
    expect(etcdctl('put', `${name}/config`, 'permits=3')).toMatch(/OK/)
    const bySlot = (slot: number) => old.find((o) => o.key === `${name}/holders/${slot}`)!
    return { bySlot, holders: async () => (await keys(name)).filter((k) => k.includes('/holders/')) }
  }

  it('lowering permits (5 → 3) while 5 are held: queued contenders are granted only as the count falls below 3, whatever the slots', async () => {
    const name = uniqueName('lower')
    const s = await session()
    const { bySlot, holders } = await lowered(name, s)
    const contenders = [new Semaphore(s, name, 3), new Semaphore(s, name, 3), new Semaphore(s, name, 3)]
    const grants = contenders.map((c) => settled(c.acquire()))
    await queued(name, 3)
    // Holders 3 and 4 keep their permits: 2 of 3 are in use once 0–2 are back.
    for (const slot of [0, 1, 2]) await bySlot(slot).release()
    const granted = () => grants.filter((g) => g.done).length
    for (let i = 0; i < 100 && granted() < 1; i++) await sleep(20)
    await sleep(300) // time for a wrong second or third grant to show
    expect(granted()).toBe(1)
    expect(await holders()).toHaveLength(3)
    await bySlot(3).release()
    for (let i = 0; i < 100 && granted() < 2; i++) await sleep(20)
    await sleep(200)
    expect(granted()).toBe(2)
    expect(await holders()).toHaveLength(3)
    await bySlot(4).release()
    for (let i = 0; i < 100 && granted() < 3; i++) await sleep(20)
    expect(granted()).toBe(3)
    expect((await holders()).sort()).toEqual([0, 1, 2].map((i) => `${name}/holders/${i}`))
    for (const c of contenders) await c.release()
    await s.close()
  })

  it('lowering permits: a fresh contender that has read nothing yet (a blind first Txn) is not granted beside the higher slots', async () => {
    const name = uniqueName('lower-try')
    const s = await session()
    const { bySlot, holders } = await lowered(name, s)
    for (const slot of [0, 1, 2]) await bySlot(slot).release()
    const tries = await Promise.allSettled([0, 1, 2].map(() => new Semaphore(s, name, 3).tryAcquire()))
    expect(tries.filter((t) => t.status === 'fulfilled')).toHaveLength(1)
    for (const t of tries) if (t.status === 'rejected') expect(t.reason).toBeInstanceOf(LockedError)
    expect(await holders()).toHaveLength(3)
    // One at a time, too: each new object guesses blind.
    for (let i = 0; i < 3; i++) await expect(new Semaphore(s, name, 3).tryAcquire()).rejects.toBeInstanceOf(LockedError)
    expect(await holders()).toHaveLength(3)
    await s.close()
  })

  it('etcdctl sees the keys, and deleting a holder key with etcdctl frees its permit for the next waiter', async () => {
    const name = uniqueName('ctl')
    const s = await session()
    const holder = new Semaphore(s, name, 1)
    await holder.acquire()
    const waiter = new Semaphore(s, name, 1)
    const waiting = waiter.acquire()
    await queued(name, 1)
    const listed = etcdctl('get', '--prefix', '--keys-only', `${name}/`).split('\n').filter(Boolean).sort()
    expect(listed).toEqual([`${name}/config`, `${name}/holders/0`, expect.stringMatching(new RegExp(`^${name}/waiters/\\d{19}$`))])
    expect(etcdctl('get', `${name}/config`, '--print-value-only').trim()).toBe('permits=1')
    etcdctl('del', holder.key)
    await waiting
    expect(waiter.fence).toBeGreaterThan(holder.fence)
    // The old holder's guarded writes are refused, and its release deletes nothing of the new holder's.
    const ks = keyspace(etcd.client)
    expect((await ks.txn([holder.ownerCompare()], [ks.put(`${name}-data`, 'stale')])).succeeded).toBe(false)
    await holder.release()
    expect(await keys(name)).toContain(waiter.key)
    await waiter.release()
    expect(etcdctl('del', '--prefix', `${name}/`).trim()).toBe('1') // only the config key was left
    await s.close()
  })

  it('1,000 waits aborted at random moments while permits change hands: no key left, no permit lost', async () => {
    const name = uniqueName('aborts')
    const permits = 3
    const sessions = await Promise.all([session(), session()])
    let stop = false
    // Holders that keep taking and giving back permits, so aborts race with grants.
    const churn = Array.from({ length: permits }, async (_, i) => {
      while (!stop) {
        const s = new Semaphore(sessions[i % 2], name, permits)
        await s.acquire()
        await sleep(Math.random() * 8)
        await s.release()
      }
    })
    let aborted = 0
    let grantedAnyway = 0
    for (let wave = 0; wave < 20; wave++) {
      await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const s = new Semaphore(sessions[i % 2], name, permits)
          try {
            await s.acquire({ signal: AbortSignal.timeout(1 + Math.floor(Math.random() * 40)) })
            grantedAnyway++ // granted before the abort: a real hold, given back
            await s.release()
          } catch (err) {
            expect((err as Error).name).toBe('TimeoutError')
            expect(s.held).toBe(false)
            aborted++
          }
        }),
      )
    }
    stop = true
    await Promise.all(churn)
    console.log(`[semaphore] 1000 waits: ${aborted} aborted, ${grantedAnyway} granted before their abort`)
    expect(aborted + grantedAnyway).toBe(1000)
    expect(aborted).toBeGreaterThan(500)
    expect(await keys(name)).toEqual([`${name}/config`])
    // Every permit is still there: `permits` tries succeed at once, one more does not.
    const all = Array.from({ length: permits }, (_, i) => new Semaphore(sessions[i % 2], name, permits))
    for (const s of all) await s.tryAcquire()
    await expect(new Semaphore(sessions[0], name, permits).tryAcquire()).rejects.toBeInstanceOf(LockedError)
    for (const s of all) await s.release()
    await Promise.all(sessions.map((s) => s.close()))
  })

  it('a holder whose lease can no longer be kept alive learns it through session.signal before the permit goes to the next waiter', async () => {
    const name = uniqueName('expire')
    const doomed = await session(2)
    const holder = new Semaphore(doomed, name, 1)
    await holder.acquire()
    const waiter = new Semaphore(await session(), name, 1)
    const waiting = waiter.acquire()
    await queued(name, 1)
    let signalledAt = 0
    doomed.signal.addEventListener('abort', () => (signalledAt = performance.now()))
    doomed.orphan() // keepalives stop, as in a frozen function: the lease runs out
    await waiting
    const grantedAt = performance.now()
    expect(signalledAt).toBeGreaterThan(0)
    expect(signalledAt).toBeLessThan(grantedAt)
    await waiter.release()
    await waiter.session.close()
  })

  it('a waiter whose session ends stops waiting with SessionExpiredError and leaves no key', async () => {
    const name = uniqueName('lost')
    const s = await session()
    const holder = new Semaphore(s, name, 1)
    await holder.acquire()
    const short = await session(2)
    const waiter = new Semaphore(short, name, 1)
    // The rejection may come before close() returns: take it as soon as it exists.
    const outcome = waiter.acquire().then(
      () => 'granted',
      (err: unknown) => err,
    )
    await queued(name, 1)
    await short.close()
    expect(await outcome).toBeInstanceOf(SessionExpiredError)
    expect(await keys(name)).toEqual([`${name}/config`, `${name}/holders/0`])
    await holder.release()
    await s.close()
  })

  it('misuse is a typed error: a second call on one object, acquire while held, release or fence without a hold', async () => {
    const name = uniqueName('misuse')
    const s = await session()
    const holder = new Semaphore(s, name, 1)
    await holder.acquire()
    const waiter = new Semaphore(s, name, 1)
    const first = waiter.acquire()
    await expect(waiter.acquire()).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(holder.acquire()).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(new Semaphore(s, name, 1).release()).rejects.toBeInstanceOf(LockReleasedError)
    expect(() => new Semaphore(s, name, 1).fence).toThrow(LockReleasedError)
    const state = settled(first)
    await sleep(50)
    expect(state.done).toBe(false)
    await holder.release()
    await first
    await waiter.release()
    await expect(waiter.release()).rejects.toBeInstanceOf(LockReleasedError)
    await s.close()
  })

  it('fenced() writes only while the permit is held', async () => {
    const name = uniqueName('fenced')
    const s = await session()
    const sem = new Semaphore(s, name, 2)
    await sem.acquire()
    const done = await sem
      .fenced()
      .then(etcd.client.put(`${name}-data`).value('v1'))
      .commit()
    expect(done.succeeded).toBe(true)
    const compare = sem.ownerCompare()
    await sem.release()
    const ks = keyspace(etcd.client)
    expect((await ks.txn([compare], [ks.put(`${name}-data`, 'v2')])).succeeded).toBe(false)
    expect(await etcd.client.get(`${name}-data`).string()).toBe('v1')
    await s.close()
  })
})
