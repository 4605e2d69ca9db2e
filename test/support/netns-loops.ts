/**
 * The workload loops the partition agent (`netns-agent.ts`) runs: lock holders, leader-guarded
 * handlers, queue consumers and producers, STM counters. Each reports what happened as JSON
 * events on stdout with wall-clock times (`machineNow`, comparable across processes on one
 * machine), and returns a summary (counts, errors by class) when stopped.
 */
import middy from '@middy/core'
import pg from 'pg'
import {
  ClaimLostError,
  createClient,
  fencedUpsert,
  Isolation,
  Mutex,
  Queue,
  runSTM,
  Session,
  type EtcdClient,
  type LeaseLostError,
  type Message,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { leaderGuard } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/lambda.js'
import { machineNow } from './history.js'

/** Writes one event line. */
export const say = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(event, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`)

/** Resolves after `ms` (never, for Infinity) or when `signal` aborts; leaves no listener behind. */
export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined
    signal?.addEventListener('abort', done, { once: true })
  })

/** Calls give up after 2 s here (default 5 s), so a cut-off client notices within a scenario. */
const CALL_TIMEOUT_MS = 2000
/** Every etcd client the agent made (closed when it ends). */
export const clients: EtcdClient[] = []
/** A client of the agent (closed when the agent ends). */
export function client(endpoints: string[]): EtcdClient {
  const c = createClient({ endpoints, env: {}, callTimeoutMs: CALL_TIMEOUT_MS })
  clients.push(c)
  return c
}

const sharedClients = new Map<string, EtcdClient>()
/** One client per endpoint list for one-off reads and writes. */
export function shared(endpoints: string[]): EtcdClient {
  const key = endpoints.join(',')
  if (!sharedClients.has(key)) sharedClients.set(key, client(endpoints))
  return sharedClients.get(key)!
}

/** Where a loop's Postgres writes go (the table is `fenced_rows(id text primary key, value text, fence bigint)`). */
export interface PgTarget {
  host: string
  port: number
  user: string
  database: string
  row: string
}

/** One command line from the parent (`op` plus its fields). */
export type Command = Record<string, any> & { op: string }

/** A running loop, as the agent keeps it. */
export interface Loop {
  stop: AbortController
  done: Promise<Record<string, unknown>>
  /** Set by lock loops: the current (or last) hold, for stale writes after it was lost. */
  mutex?: Mutex
  fence?: bigint
  /** Set by a held queue batch: released by `ackHeld`. */
  ackHeld?: () => void
}
/** Postgres pools by server (ended when the agent ends). */
export const pools = new Map<string, pg.Pool>()

function pool(target: PgTarget): pg.Pool {
  const key = `${target.host}:${target.port}`
  let p = pools.get(key)
  if (!p) {
    p = new pg.Pool({
      host: target.host,
      port: target.port,
      user: target.user,
      database: target.database,
      max: 2,
      connectionTimeoutMillis: 3000,
      query_timeout: 3000,
    })
    p.on('error', () => {})
    pools.set(key, p)
  }
  return p
}

/** A fenced upsert of the loop's row; reports whether Postgres applied it. */
export async function pgWrite(id: string, target: PgTarget, value: string, fence: bigint) {
  const at = machineNow()
  try {
    const res = await pool(target).query(fencedUpsert({ table: 'fenced_rows', key: { id: target.row }, set: { value }, fence }))
    say({ event: 'pgWrite', id, fence, value, applied: res.rowCount === 1, at, doneAt: machineNow() })
  } catch (err) {
    say({ event: 'pgWrite', id, fence, value, error: (err as Error).message, at, doneAt: machineNow() })
  }
}

/** Counts an error by its class name. */
export const tally = (errors: Record<string, number>, err: unknown) => {
  const name = err instanceof Error ? err.name : typeof err
  errors[name] = (errors[name] ?? 0) + 1
}

/** When `signal` (a session's) aborted, recorded at that moment: a hold ends when its holder learns of the loss. */
function watchLoss(signal: AbortSignal): { at?: number; stop(): void } {
  const loss: { at?: number; stop(): void } = { stop: () => signal.removeEventListener('abort', onLost) }
  const onLost = () => (loss.at = machineNow())
  if (signal.aborted) loss.at = machineNow()
  else signal.addEventListener('abort', onLost, { once: true })
  return loss
}

/** Holds `ms` (Infinity: until stopped), ending early on the loss; says when the hold ended and why. */
async function hold(
  ms: number,
  stop: AbortSignal,
  lost: AbortSignal,
  loss: { at?: number; stop(): void },
): Promise<{ lost: boolean; at: number }> {
  await sleep(ms, AbortSignal.any([stop, lost]))
  loss.stop()
  return loss.at !== undefined ? { lost: true, at: loss.at } : { lost: false, at: machineNow() }
}

/**
 * Lock loop: lock, one etcd write guarded by ownership that reads the previous writer's fence,
 * optionally a fenced Postgres write, hold `holdMs` (or until the session is lost), release.
 * `once`: take the lock one time and hold it until lost or stopped (the scenario's victim).
 */
export async function lockLoop(id: string, loop: Loop, c: Command) {
  const etcd = client(c.endpoints)
  const ks = keyspace(etcd)
  const errors: Record<string, number> = {}
  let grants = 0
  let session: Session | undefined
  while (!loop.stop.signal.aborted) {
    try {
      if (!session?.active) session = await Session.create(etcd, { ttl: c.ttl })
      const mutex = new Mutex(session, c.name)
      await mutex.lock({ signal: loop.stop.signal })
      loop.mutex = mutex
      loop.fence = mutex.fence
      grants++
      say({ event: 'grant', id, fence: mutex.fence, at: machineNow() })
      const lost = session.signal
      const loss = watchLoss(lost)
      const write = await ks
        .txn([mutex.ownerCompare()], [ks.get(c.fenceKey), ks.put(c.fenceKey, mutex.fence.toString())])
        .catch((err) => (tally(errors, err), undefined))
      if (write)
        say({ event: 'write', id, fence: mutex.fence, ok: write.succeeded, prev: write.results[0]?.range?.kvs[0]?.value.toString() ?? '0' })
      if (c.pg && write?.succeeded) await pgWrite(id, c.pg, `${id}@${mutex.fence}`, mutex.fence)
      const held = await hold(c.once ? Infinity : c.holdMs, loop.stop.signal, lost, loss)
      say({
        event: 'release',
        id,
        fence: mutex.fence,
        at: held.at,
        lost: held.lost,
        reason: held.lost ? (lost.reason as LeaseLostError).reason : undefined,
      })
      if (c.once) break
      await mutex.unlock().catch(async (err) => {
        tally(errors, err)
        const stale = session
        session = undefined
        await stale?.close().catch(() => stale.orphan())
      })
    } catch (err) {
      if (loop.stop.signal.aborted) break
      tally(errors, err)
      await session?.close().catch(() => {})
      session = undefined
      await sleep(100, loop.stop.signal)
    }
  }
  // A lost victim keeps its Mutex for stale writes; a stopped one gives its lease back.
  if (!c.once || loop.stop.signal.aborted) await session?.close().catch(() => session?.orphan())
  return { grants, errors }
}

/**
 * Leader loop: invokes a Middy handler guarded by `leaderGuard` over and over. The leader's
 * handler reports its term (`rev` is the fence), does one write guarded by `leaderCompare()`, and
 * holds for `holdMs` (or until the lease is lost); followers are turned away and try again.
 */
export async function leaderLoop(id: string, loop: Loop, c: Command) {
  const etcd = client(c.endpoints)
  const ks = keyspace(etcd)
  const errors: Record<string, number> = {}
  let terms = 0
  let followed = 0
  const handler = middy(async (_event: unknown, context: any) => {
    const lead = context.etcd.leader
    terms++
    say({ event: 'grant', id, fence: lead.rev, at: machineNow() })
    const loss = watchLoss(lead.signal)
    const write = await ks
      .txn([lead.leaderCompare()], [ks.get(c.fenceKey), ks.put(c.fenceKey, lead.rev.toString())])
      .catch((err) => (tally(errors, err), undefined))
    if (write)
      say({ event: 'write', id, fence: lead.rev, ok: write.succeeded, prev: write.results[0]?.range?.kvs[0]?.value.toString() ?? '0' })
    const held = await hold(c.once ? Infinity : c.holdMs, loop.stop.signal, lead.signal, loss)
    say({ event: 'release', id, fence: lead.rev, at: held.at, lost: held.lost })
    return { leader: true }
  }).use(leaderGuard({ election: c.name, ttl: c.ttl, client: etcd, value: id }))
  while (!loop.stop.signal.aborted) {
    try {
      const res = (await handler({}, lambdaContext(120_000, id))) as { leader: boolean }
      if (!res.leader) {
        followed++
        await sleep(50, loop.stop.signal)
      } else if (c.once) break
    } catch (err) {
      if (loop.stop.signal.aborted) break
      tally(errors, err)
      await sleep(100, loop.stop.signal)
    }
  }
  return { terms, followed, errors }
}

/**
 * Consumer loop: receive a batch, report it, ack each message. With `holdBatch`, receive one
 * batch and ack it only when told (`ackHeld`), e.g. after a partition healed.
 */
export async function consumeLoop(id: string, loop: Loop, c: Command) {
  const queue = new Queue(client(c.endpoints), c.queue)
  const errors: Record<string, number> = {}
  let received = 0
  while (!loop.stop.signal.aborted) {
    let batch: Message[]
    try {
      batch = await queue.receive({ max: c.batch, visibilityTimeout: c.visibilityTimeout, signal: loop.stop.signal })
    } catch (err) {
      if (loop.stop.signal.aborted) break
      tally(errors, err)
      await sleep(200, loop.stop.signal)
      continue
    }
    received += batch.length
    say({
      event: 'delivered',
      id,
      messages: batch.map((m) => ({ id: m.id, value: m.value, receiveCount: m.receiveCount })),
      at: machineNow(),
    })
    if (c.holdBatch) await new Promise<void>((resolve) => (loop.ackHeld = resolve))
    for (const m of batch) await ackOne(id, queue, m, errors)
    if (c.holdBatch) break
  }
  return { received, errors }
}

/** Acks one message, retrying unavailability; a "gone" after a failed attempt is ambiguous. */
async function ackOne(id: string, queue: Queue, m: Message, errors: Record<string, number>) {
  let failedBefore = false
  for (let attempt = 0; attempt < 8; attempt++) {
    try {
      await queue.ack(m)
      return say({ event: 'ack', id, msgId: m.id, outcome: 'acked' })
    } catch (err) {
      if (err instanceof ClaimLostError) {
        const ambiguous = err.reason === 'gone' && failedBefore
        return say({ event: 'ack', id, msgId: m.id, outcome: ambiguous ? 'ambiguous' : 'lost', reason: err.reason })
      }
      failedBefore = true
      tally(errors, err)
      await sleep(200)
    }
  }
  say({ event: 'ack', id, msgId: m.id, outcome: 'failed' })
}

/** Producer: enqueues `count` payloads `<id>-<n>`, `intervalMs` apart; a failed enqueue is reported, not retried. */
export async function produceLoop(id: string, loop: Loop, c: Command) {
  const queue = new Queue(client(c.endpoints), c.queue)
  const errors: Record<string, number> = {}
  let enqueued = 0
  for (let n = 0; n < c.count && !loop.stop.signal.aborted; n++) {
    const payload = `${id}-${n}`
    try {
      const sent = await queue.enqueue(payload)
      enqueued++
      say({ event: 'enqueued', id, msgId: sent.id, payload })
    } catch (err) {
      // It may have landed (the answer was lost): the checker treats it as "maybe enqueued".
      tally(errors, err)
      say({ event: 'enqueueFailed', id, payload, error: (err as Error).name })
    }
    await sleep(c.intervalMs ?? 0, loop.stop.signal)
  }
  return { enqueued, errors }
}

/** STM counter: each runSTM adds 1 to `key`; resolved and failed calls are counted. */
export async function stmLoop(_id: string, loop: Loop, c: Command) {
  const etcd = client(c.endpoints)
  const errors: Record<string, number> = {}
  let committed = 0
  let failed = 0
  while (!loop.stop.signal.aborted) {
    try {
      await runSTM(etcd, async (stm) => stm.put(c.key, String(Number((await stm.get(c.key)) || '0') + 1)), {
        isolation: c.isolation ?? Isolation.SerializableSnapshot,
      })
      committed++
    } catch (err) {
      failed++
      tally(errors, err)
      await sleep(200, loop.stop.signal)
    }
    await sleep(c.intervalMs ?? 20, loop.stop.signal)
  }
  return { committed, failed, errors }
}

/** Every loop kind, by the name the `loop` command gives. */
export const kinds = { lock: lockLoop, leader: leaderLoop, consume: consumeLoop, produce: produceLoop, stm: stmLoop }
