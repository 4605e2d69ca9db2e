/**
 * A child-process contender for the crash and fault tests, so a test can SIGKILL / SIGSTOP a
 * real holder. Run as `node --import tsx test/support/worker.ts '<json config>'` (see
 * `workers.ts`). Reads one JSON command per stdin line, writes one JSON event per stdout line.
 * Whatever it holds stays held until the process dies or is told otherwise: that is the point.
 */
import { createInterface } from 'node:readline'
import {
  ClaimLostError,
  createClient,
  DoubleBarrier,
  EtcdUnavailableError,
  Election,
  Mutex,
  Queue,
  RateLimiter,
  Semaphore,
  Session,
  type LeaseLostError,
  type Message,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { machineNow } from './history.js'

interface Config {
  endpoints: string[]
  namespace?: string
}

const config = JSON.parse(process.argv[2] ?? '{}') as Config
const client = createClient({ endpoints: config.endpoints, namespace: config.namespace ?? '', env: {} })
const ks = keyspace(client)

const say = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(event, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`)

let mutex: Mutex | undefined
const messages = new Map<string, Message>()
let queue: Queue | undefined
const sessions: Session[] = []

async function session(ttl: number) {
  const s = await Session.create(client, { ttl })
  sessions.push(s)
  s.signal.addEventListener('abort', () => say({ event: 'lost', leaseId: s.leaseId, reason: (s.signal.reason as LeaseLostError).reason }), {
    once: true,
  })
  return s
}

type Command = Record<string, any> & { op: string }

async function run(cmd: Command) {
  switch (cmd.op) {
    case 'lock': {
      mutex = new Mutex(await session(cmd.ttl), cmd.name)
      await mutex.lock()
      return say({ event: 'locked', key: mutex.key, fence: mutex.fence, leaseId: mutex.session.leaseId })
    }
    case 'fencedPut': {
      // The write a holder guards with ownerCompare(): it must not land once the hold is gone.
      const res = await ks.txn([mutex!.ownerCompare()], [ks.put(cmd.key, cmd.value)])
      return say({ event: 'put', succeeded: res.succeeded, lost: mutex!.session.signal.aborted })
    }
    case 'campaign': {
      const election = new Election(await session(cmd.ttl), cmd.name)
      await election.campaign(cmd.value)
      return say({ event: 'elected', key: election.key, rev: election.rev })
    }
    case 'receive': {
      queue = new Queue(client, cmd.queue)
      const got = await queue.receive({ max: cmd.max, visibilityTimeout: cmd.visibilityTimeout })
      for (const m of got) messages.set(m.id, m)
      return say({
        event: 'received',
        messages: got.map((m) => ({ id: m.id, value: m.value, receiveCount: m.receiveCount, group: m.group })),
      })
    }
    case 'ack': {
      // As a consumer under faults would: an ack that could not reach etcd is sent again; if
      // the claim is then gone, the first one may have landed (ambiguous).
      const acked: string[] = []
      const ambiguous: string[] = []
      for (const id of cmd.ids as string[]) {
        for (let attempt = 0; ; attempt++) {
          try {
            await queue!.ack(messages.get(id)!)
            acked.push(id)
            break
          } catch (err) {
            if (attempt > 0 && err instanceof ClaimLostError && err.reason === 'gone') {
              ambiguous.push(id)
              break
            }
            if (!(err instanceof EtcdUnavailableError) || attempt >= 50) throw err
            await new Promise((r) => setTimeout(r, 100))
          }
        }
      }
      return say({ event: 'acked', ids: acked, ambiguous })
    }
    case 'enqueue': {
      // `count` messages of queue `queue`, each delayed `delayMs`, as this process's clock (perhaps skewed) keys them.
      const q = new Queue(client, cmd.queue)
      const keys: string[] = []
      for (let i = 0; i < (cmd.count ?? 1); i++) keys.push((await q.enqueue(`${cmd.value ?? 'm'}${i}`, { delayMs: cmd.delayMs ?? 0 })).key)
      return say({ event: 'enqueued', keys })
    }
    case 'redrive': {
      // Moves dead letters back one Txn each; a test SIGKILLs it midway.
      const done = await new Queue(client, cmd.to).redrive({ from: cmd.from })
      return say({ event: 'redriven', ...done })
    }
    case 'enter': {
      const barrier = new DoubleBarrier(await session(cmd.ttl), cmd.name, cmd.count)
      await barrier.enter()
      return say({ event: 'entered', key: barrier.key })
    }
    case 'semHold': {
      // Takes a permit and keeps it until the process dies.
      const semaphore = new Semaphore(await session(cmd.ttl), cmd.name, cmd.permits)
      await semaphore.acquire()
      return say({ event: 'semHeld', key: semaphore.key, fence: semaphore.fence, leaseId: semaphore.session.leaseId })
    }
    case 'semWatch': {
      // Takes a permit, then ticks every 20 ms as a holder's work loop would. The first tick after
      // a pause of over a second (the parent froze us) reports what the holder sees of its grant
      // then: Node runs timers that were due before the session's expiry timer first.
      const semaphore = new Semaphore(await session(cmd.ttl), cmd.name, cmd.permits)
      await semaphore.acquire()
      let last = performance.now()
      const tick = setInterval(() => {
        const now = performance.now()
        const paused = now - last
        last = now
        if (paused < 1000) return
        clearInterval(tick)
        const pastBound = now >= semaphore.session.aliveUntil
        const aborted = semaphore.session.signal.aborted
        let fenced = 'built'
        try {
          semaphore.fenced()
        } catch (err) {
          fenced = (err as Error).name
        }
        say({ event: 'woke', pausedMs: paused, pastBound, aborted, fenced })
      }, 20)
      return say({ event: 'semHeld', key: semaphore.key, fence: semaphore.fence })
    }
    case 'semLoop':
      return say({ event: 'semDone', tag: cmd.tag, ...(await semaphoreLoop(cmd)) })
    case 'rateLoop':
      return say({ event: 'rateDone', ...(await rateLoop(cmd)) })
    default:
      throw new Error(`worker: unknown op ${JSON.stringify(cmd.op)}`)
  }
}

/**
 * `count` acquisitions of semaphore `name`, one after another: each reports `enter` (with its
 * fence) and `leave` to the downstream at `url` while it holds the permit.
 */
async function semaphoreLoop(cmd: Command) {
  const s = await session(cmd.ttl)
  const fences: string[] = []
  for (let i = 0; i < cmd.count; i++) {
    const semaphore = new Semaphore(s, cmd.name, cmd.permits)
    await semaphore.acquire()
    const fence = semaphore.fence.toString()
    fences.push(fence)
    await fetch(`${cmd.url}/enter`, { method: 'POST', body: fence })
    await new Promise((r) => setTimeout(r, Math.random() * cmd.holdMs))
    await fetch(`${cmd.url}/leave`, { method: 'POST', body: fence })
    await semaphore.release()
  }
  return { fences }
}

/**
 * `callers` concurrent loops of `acquire()`, spread over `clients` clients with one
 * RateLimiter each (as functions each have their own), from the wall-clock time `start` until
 * `until`; reports every admission's wall-clock time (ms, sub-ms precision). `clockOffsetMs`
 * shifts this process's `Date.now()`: the limiter must not care. `waiterTtl` is the limiter's.
 */
async function rateLoop(cmd: Command) {
  if (cmd.clockOffsetMs) {
    const real = Date.now
    Date.now = () => real() + cmd.clockOffsetMs
  }
  const wall = machineNow
  const clients = Array.from({ length: cmd.clients ?? 1 }, () =>
    createClient({ endpoints: config.endpoints, namespace: config.namespace ?? '', env: {} }),
  )
  const limiters = clients.map(
    (c) => new RateLimiter(c, cmd.name, { rate: cmd.rate, per: cmd.per, burst: cmd.burst, waiterTtl: cmd.waiterTtl }),
  )
  // Ready before the start (lease, settings), as after a function's init phase.
  await Promise.all(limiters.map((l) => l.ready()))
  await new Promise((r) => setTimeout(r, Math.max(0, (cmd.start ?? 0) - wall())))
  const admitted: number[] = []
  const errors: string[] = []
  await Promise.all(
    Array.from({ length: cmd.callers }, async (_, i) => {
      const limiter = limiters[i % limiters.length]
      while (wall() < cmd.until) {
        try {
          await limiter.acquire({ signal: AbortSignal.timeout(Math.max(1, Math.ceil(cmd.until - wall()))) })
          admitted.push(wall())
        } catch (err) {
          if ((err as Error).name !== 'TimeoutError') errors.push(`${(err as Error).name}: ${(err as Error).message}`)
        }
      }
    }),
  )
  await Promise.all(limiters.map((l) => l.close()))
  for (const c of clients) c.close()
  return { admitted, errors }
}

say({ event: 'ready', pid: process.pid })
const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const cmd = JSON.parse(line) as Command
  run(cmd).catch((err: Error) => say({ event: 'error', op: cmd.op, name: err.name, message: err.message }))
})
lines.on('close', () => {
  // The parent went away: let the leases expire on their own, as a crash would.
  for (const s of sessions) s.orphan()
  client.close()
})
