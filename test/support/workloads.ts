/**
 * The reliability workloads, shared by `test/faults.test.ts` (short, in `npm test`) and
 * `scripts/soak.ts` (long): each runs against a cluster while faults are injected elsewhere,
 * records what happened, and returns counts plus the list of violations it found.
 */
import {
  ClaimLostError,
  createClient,
  EtcdUnavailableError,
  Mutex,
  Queue,
  runSTM,
  Session,
  type EtcdClient,
  type Message,
  type STM,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import type { EtcdCluster } from '../../testing/index.js'
import { LockHistory, machineNow, type Violation } from './history.js'
import { DeliveryLog, type Delivery } from './queue-check.js'
import { Worker, type WorkerEvent } from './workers.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A client on every member (the failover the issue asks for), reading nothing from the environment. */
export function clusterClient(cluster: EtcdCluster): EtcdClient {
  return createClient({ endpoints: cluster.endpoints, env: {} })
}

/** Counts an error by its class name. */
function tally(errors: Record<string, number>, err: unknown) {
  const name = err instanceof Error ? err.name : typeof err
  errors[name] = (errors[name] ?? 0) + 1
}

// ---------------------------------------------------------------------------------------------
// Lock handoffs

export interface HandoffResult {
  handoffs: number
  /** Grants whose hold overlapped a member outage window given by `duringOutage`. */
  grantsDuringOutage: number
  fencedWrites: number
  /** Fenced writes the client applied twice (re-sent after a lost answer): see docs/RELIABILITY.md. */
  replayedWrites: number
  /** Holds whose session reported its lease lost while holding. */
  lostHolds: number
  /** Errors the contenders got and retried after (by class). */
  errors: Record<string, number>
  violations: Violation[]
}

/**
 * `contenders` loops, each on its own all-member client, take and release the lock `name` until
 * `until()` says stop. Every hold is recorded in a {@link LockHistory} and does one write guarded
 * by `ownerCompare()` that also reads the previous writer's fence (it must be lower: fenced writes
 * land in fence order). A failed call (member down) is counted and retried with a new session.
 */
export async function lockHandoffs(
  cluster: EtcdCluster,
  o: { name: string; contenders: number; ttl: number; until: () => boolean; duringOutage?: (t: number) => boolean },
): Promise<HandoffResult> {
  const history = new LockHistory()
  const errors: Record<string, number> = {}
  const violations: Violation[] = []
  let fencedWrites = 0
  let replayedWrites = 0
  let lostHolds = 0
  let grantsDuringOutage = 0
  const fenceKey = `${o.name}-fence`

  const contender = async (id: string) => {
    const client = clusterClient(cluster)
    const ks = keyspace(client)
    let session: Session | undefined
    try {
      while (!o.until()) {
        try {
          if (!session?.active) session = await Session.create(client, { ttl: o.ttl })
          const mutex = new Mutex(session, o.name)
          await mutex.lock()
          const fence = mutex.fence
          history.grant(id, fence, fence)
          if (o.duringOutage?.(machineNow())) grantsDuringOutage++
          try {
            const res = await ks.txn([mutex.ownerCompare()], [ks.get(fenceKey), ks.put(fenceKey, fence.toString())])
            if (res.succeeded) {
              fencedWrites++
              const prev = res.results[0].range!.kvs[0]
              const before = prev ? BigInt(prev.value.toString()) : 0n
              // Equal: this very write, applied twice (the client re-sent it after its first
              // answer was lost with a stopped member); it is still this hold's. Greater: a
              // later holder wrote first, i.e. two holders at once.
              if (before === fence) replayedWrites++
              if (before > fence)
                violations.push({ kind: 'fence', detail: `${id} wrote fence ${fence} after fence ${before} had been written` })
            }
            await sleep(Math.random() * 3)
          } finally {
            const lost = session.signal.aborted
            if (lost) lostHolds++
            history.release(id, { lost })
            await mutex.unlock().catch(async (err) => {
              // Unknown whether the key went: end the session (revoke, or let the lease run
              // out) so the next hold is a new contender, never this one's key again.
              tally(errors, err)
              const stale = session
              session = undefined
              await stale?.close().catch(() => stale.orphan())
            })
          }
        } catch (err) {
          tally(errors, err)
          await session?.close().catch(() => {})
          session = undefined
          await sleep(100)
        }
      }
    } finally {
      await session?.close().catch(() => {})
      client.close()
    }
  }
  await Promise.all(Array.from({ length: o.contenders }, (_, i) => contender(`c${i}`)))
  return {
    handoffs: history.holds.length,
    grantsDuringOutage,
    fencedWrites,
    replayedWrites,
    lostHolds,
    errors,
    violations: [...violations, ...history.check()],
  }
}

// ---------------------------------------------------------------------------------------------
// Queue: every message acked exactly once

export interface QueueResult {
  messages: number
  deliveries: number
  redeliveries: number
  acks: number
  /** Acks answered "gone" after a failed/ambiguous attempt: counted as ours when nobody else acked. */
  ambiguousAcks: number
  /** Messages the killed worker acked before it died / left claimed. */
  workerAcked: number
  workerAbandoned: number
  errors: Record<string, number>
  violations: string[]
}

/**
 * Produces `messages` messages (4 producers), then 3 in-process consumers and one child-process
 * consumer receive batches; the child acks half of its batch and is SIGKILLed (its claims have a
 * 2 s visibility timeout and must be redelivered). Checks: every message acked exactly once (or
 * found gone after an ambiguous ack), none lost, a message is redelivered only when no ack of it
 * succeeded before, and nothing is left in the queue or its claim/counter keys.
 */
export async function queueUnderFaults(
  cluster: EtcdCluster,
  o: {
    name: string
    messages: number
    batch: number
    deadlineMs: number
    /**
     * false (default): enqueue everything first, then call `onProduced` (start the faults there)
     * and consume. true: produce while consuming (and while the caller injects faults); see
     * docs/RELIABILITY.md for why a retried enqueue can then land twice.
     */
    produceDuringFaults?: boolean
    onProduced?: () => void
  },
): Promise<QueueResult> {
  const errors: Record<string, number> = {}
  const log = new DeliveryLog()
  const enqueued = new Map<string, string>() // id -> payload
  const deadline = performance.now() + o.deadlineMs
  let acks = 0
  let workerAcked = 0
  let workerAbandoned = 0
  const stop = new AbortController()

  const deliver = (m: { id: string; value: string; receiveCount: number }): Delivery => log.deliver(m)
  const ackedCount = () => acks + log.ambiguous.size

  // Producers
  let next = 0
  const producer = async () => {
    const client = clusterClient(cluster)
    const queue = new Queue(client, o.name)
    try {
      while (next < o.messages) {
        const payload = `m${next++}`
        for (;;) {
          try {
            const { id } = await queue.enqueue(payload)
            enqueued.set(id, payload)
            break
          } catch (err) {
            tally(errors, err)
            if (performance.now() > deadline) throw err
            await sleep(100)
          }
        }
      }
    } finally {
      client.close()
    }
  }

  const ack = async (queue: Queue, m: Message, d: Delivery) => {
    for (let _attempt = 0; ; _attempt++) {
      try {
        await queue.ack(m)
        log.acked(d)
        acks++
        return
      } catch (err) {
        if (err instanceof ClaimLostError) {
          // 'gone' after an attempt that may have landed (or etcd3's own retry of one that did).
          if (err.reason === 'gone') log.ambiguousAck(m.id)
          return
        }
        tally(errors, err)
        if (performance.now() > deadline) return
        await sleep(100)
      }
    }
  }

  const consumer = async () => {
    const client = clusterClient(cluster)
    const queue = new Queue(client, o.name)
    try {
      while (!stop.signal.aborted && performance.now() < deadline) {
        let batch: Message[]
        try {
          batch = await queue.receive({ max: o.batch, visibilityTimeout: 15, signal: stop.signal })
        } catch (err) {
          if (stop.signal.aborted) return
          tally(errors, err)
          await sleep(100)
          continue
        }
        for (const m of batch) await ack(queue, m, deliver(m))
        if (ackedCount() >= o.messages) stop.abort()
      }
    } finally {
      client.close()
    }
  }

  // The consumer that dies mid-batch: a child process, SIGKILLed after acking half its batch.
  const victim = async () => {
    // Started at once: a child process takes seconds to start on a loaded machine.
    const w = await Worker.start(cluster.endpoints)
    try {
      while (acks < o.messages / 4 && performance.now() < deadline) await sleep(50)
      // A member restart may fail a receive, as it does the other consumers': it tries again
      // (what it may have claimed meanwhile comes back when its 2 s claim lease ends).
      let got: WorkerEvent | undefined
      while (!got) {
        got = await w
          .request({ op: 'receive', queue: o.name, max: o.batch, visibilityTimeout: 2 }, 'received', 30_000)
          .catch((err: Error) => {
            if (!/EtcdUnavailableError/.test(err.message) || performance.now() > deadline) throw err
            tally(errors, err)
            return sleep(100).then(() => undefined)
          })
      }
      const msgs = got.messages as { id: string; value: string; receiveCount: number }[]
      const ds = msgs.map((m) => deliver(m))
      const half = msgs.slice(0, Math.floor(msgs.length / 2)).map((m) => m.id)
      const done = await w.request({ op: 'ack', ids: half }, 'acked', 30_000)
      for (const id of done.ids as string[]) {
        log.acked(ds.find((d) => d.id === id)!)
        acks++
        workerAcked++
      }
      for (const id of done.ambiguous as string[]) log.ambiguousAck(id)
      workerAbandoned = msgs.length - done.ids.length - done.ambiguous.length
      if (ackedCount() >= o.messages) stop.abort()
    } finally {
      await w.kill()
    }
  }

  // Consumers blocked in receive() notice the end only through the signal.
  const timer = setTimeout(() => stop.abort(), o.deadlineMs)
  try {
    const producing = Promise.all(Array.from({ length: 4 }, producer))
    if (!o.produceDuringFaults) {
      await producing
      o.onProduced?.()
    }
    await Promise.all([producing, ...Array.from({ length: 3 }, consumer), victim()])
  } finally {
    clearTimeout(timer)
  }

  // Checks
  const violations = log.violations(enqueued, o.messages)
  const client = clusterClient(cluster)
  try {
    const ks = keyspace(client)
    for (const prefix of [`${o.name}/`, `__claims/${o.name}/`, `__receives/${o.name}/`]) {
      const left = await ks.range(prefix, { prefix: true })
      if (left.kvs.length === 0) continue
      violations.push(`${left.kvs.length} keys left under ${prefix}`)
      // Say why a claim is still there: its lease, and what etcd says about that lease.
      for (const kv of left.kvs.filter((k) => k.lease !== '0').slice(0, 3)) {
        const ttl = await client.leaseClient.leaseTimeToLive({ ID: kv.lease }).catch((err: Error) => ({ error: err.message }))
        violations.push(`  ${kv.key} (mod ${kv.modRevision}) lease ${kv.lease}: ${JSON.stringify(ttl)}`)
      }
    }
  } finally {
    client.close()
  }
  const totals = log.totals()
  return {
    messages: enqueued.size,
    deliveries: totals.deliveries,
    redeliveries: totals.redeliveries,
    acks,
    ambiguousAcks: totals.ambiguousAcks,
    workerAcked,
    workerAbandoned,
    errors,
    violations,
  }
}

// ---------------------------------------------------------------------------------------------
// STM bank

export interface BankResult {
  transfers: number
  attempts: number
  /** Consistent snapshots of all accounts taken while the workers ran (each must sum to the total). */
  snapshots: number
  errors: Record<string, number>
  violations: string[]
}

/**
 * Go's ExampleSTM_apply: 5 accounts of 100; `workers` loops move half of a random account's
 * balance to another with runSTM (default SerializableSnapshot) until `until()`. A snapshot of
 * all accounts (one Range at one revision) is taken every 100 ms and at the end: each must sum
 * to 500.
 */
export async function stmBank(cluster: EtcdCluster, o: { name: string; workers: number; until: () => boolean }): Promise<BankResult> {
  const errors: Record<string, number> = {}
  const violations: string[] = []
  const keys = Array.from({ length: 5 }, (_, i) => `${o.name}/acct${i}`)
  const admin = clusterClient(cluster)
  const ks = keyspace(admin)
  // Seeded in one Txn, retried while a member is down (the caller's faults may already run).
  for (let attempt = 1; ; attempt++) {
    try {
      await ks.txn(
        [],
        keys.map((k) => ks.put(k, '100')),
      )
      break
    } catch (err) {
      if (!(err instanceof EtcdUnavailableError) || attempt >= 20) throw err
      await sleep(200)
    }
  }
  let transfers = 0
  let attempts = 0
  let snapshots = 0

  const transfer = async (stm: STM) => {
    const from = Math.floor(Math.random() * keys.length)
    const to = (from + 1 + Math.floor(Math.random() * (keys.length - 1))) % keys.length
    const fromV = Number(await stm.get(keys[from]))
    const toV = Number(await stm.get(keys[to]))
    const xfer = Math.floor(fromV / 2)
    stm.put(keys[from], String(fromV - xfer))
    stm.put(keys[to], String(toV + xfer))
  }
  const worker = async () => {
    const client = clusterClient(cluster)
    try {
      while (!o.until()) {
        try {
          const r = await runSTM(client, transfer)
          attempts += r.attempts
          transfers++
        } catch (err) {
          tally(errors, err)
          await sleep(100)
        }
      }
    } finally {
      client.close()
    }
  }
  const sum = async () => {
    const res = await ks.range(`${o.name}/`, { prefix: true })
    const s = res.kvs.reduce((n, kv) => n + Number(kv.value.toString()), 0)
    snapshots++
    if (res.kvs.length !== 5 || s !== 500)
      violations.push(`snapshot at revision ${res.revision}: ${res.kvs.length} accounts summing to ${s}`)
  }
  const auditor = async () => {
    while (!o.until()) {
      await sum().catch((err) => tally(errors, err))
      await sleep(100)
    }
  }
  try {
    await Promise.all([...Array.from({ length: o.workers }, worker), auditor()])
    for (;;) {
      try {
        await sum()
        break
      } catch (err) {
        if (!(err instanceof EtcdUnavailableError)) throw err
        await sleep(200)
      }
    }
  } finally {
    admin.close()
  }
  return { transfers, attempts, snapshots, errors, violations }
}

// ---------------------------------------------------------------------------------------------
// STM counter: does each committed transaction apply exactly once?

export interface CounterResult {
  /** runSTM calls that resolved: each applied its increment (at least) once. */
  committed: number
  /** runSTM calls that failed (e.g. EtcdUnavailableError): their increment may or may not have landed. */
  failed: number
  final: number
  errors: Record<string, number>
  violations: string[]
}

/**
 * `workers` loops each add 1 to one counter with runSTM until `until()`. The final value must lie
 * between the number of calls that resolved and that plus the number that failed (an ambiguous
 * failure may have committed). More means some transaction was applied twice.
 */
export async function stmCounter(cluster: EtcdCluster, o: { name: string; workers: number; until: () => boolean }): Promise<CounterResult> {
  const errors: Record<string, number> = {}
  const key = `${o.name}/counter`
  let committed = 0
  let failed = 0
  const worker = async () => {
    const client = clusterClient(cluster)
    try {
      while (!o.until()) {
        try {
          await runSTM(client, async (stm) => stm.put(key, String(Number((await stm.get(key)) || '0') + 1)))
          committed++
        } catch (err) {
          failed++
          tally(errors, err)
          await sleep(100)
        }
      }
    } finally {
      client.close()
    }
  }
  await Promise.all(Array.from({ length: o.workers }, worker))
  const admin = clusterClient(cluster)
  let final = -1
  try {
    for (let attempt = 1; final < 0; attempt++) {
      try {
        const res = await keyspace(admin).range(key)
        final = Number(res.kvs[0]?.value.toString() ?? '0')
      } catch (err) {
        if (attempt >= 20) throw err
        await sleep(200)
      }
    }
  } finally {
    admin.close()
  }
  const violations: string[] = []
  if (final < committed) violations.push(`counter is ${final} after ${committed} committed increments: an increment was lost`)
  if (final > committed + failed)
    violations.push(
      `counter is ${final} after ${committed} committed and ${failed} failed increments: ${final - committed - failed} applied twice`,
    )
  return { committed, failed, final, errors, violations }
}

// ---------------------------------------------------------------------------------------------
// Rate limiter: the token bucket's bound under load

/** Right after the queue forms: excluded from the use of the rate (see {@link rateLimitLoad}). */
const SETTLING_MS = 1000

export interface RateLoadResult {
  admitted: number
  seconds: number
  /** Admissions while demand exceeded the rate, after the queue settled, / (rate × that time). */
  used: number
  /** Admissions in the settling second right after the queue formed. */
  settling: number
  /** ms from the start until at least `rate` calls were queued in etcd (demand above the rate). */
  queuedAfterMs: number
  /** Most admissions in any window of `per` ms (wall-clock times of the callers' admissions). */
  mostInWindow: number
  perSecond: number[]
  errors: string[]
  violations: string[]
}

/**
 * `processes` child processes, each with `clients` clients, run `callers` loops of
 * `RateLimiter.acquire()` in total for `seconds`; one process's wall clock is an hour off.
 * Checks: every window of `per` ms admits at most `rate + burst` (the whole run), and at least
 * `minUsed` of the rate is used while demand exceeds it: from the first moment this process
 * sees at least `rate` calls queued in etcd to the end (the queue never empties meanwhile),
 * less the first second (every caller queues in the same instant: the etcd clients set up a
 * watch per waiter one at a time, and the first handoffs wait for them). That second's
 * admissions are reported as `settling`.
 */
export async function rateLimitLoad(
  endpoints: string[],
  o: {
    name: string
    rate: number
    per: number
    burst: number
    callers: number
    processes: number
    clients: number
    seconds: number
    minUsed: number
  },
): Promise<RateLoadResult> {
  const procs = await Promise.all(Array.from({ length: o.processes }, () => Worker.start(endpoints)))
  const observer = createClient({ endpoints, env: {} })
  const wall = machineNow
  try {
    const start = wall() + 2000
    const until = start + o.seconds * 1000
    const running = Promise.all(
      procs.map((w, i) =>
        w.request(
          {
            op: 'rateLoop',
            name: o.name,
            rate: o.rate,
            per: o.per,
            burst: o.burst,
            callers: Math.round(o.callers / o.processes),
            clients: o.clients,
            start,
            until,
            clockOffsetMs: i === o.processes - 1 ? 3_600_000 : 0,
          },
          'rateDone',
          (o.seconds + 60) * 1000,
        ),
      ),
    )
    // Demand in etcd's view: how many calls queue, polled until the end.
    let demandSince = Infinity
    let emptied = false
    const ks = keyspace(observer)
    while (wall() < until - 200) {
      const queued = (await ks.range(`${o.name}/waiters/`, { prefix: true, countOnly: true })).count
      if (demandSince === Infinity && queued >= BigInt(o.rate)) demandSince = wall()
      else if (demandSince !== Infinity && queued === 0n) emptied = true
      await sleep(50)
    }
    const results = await running
    const errors = results.flatMap((r) => r.errors as string[])
    const times = results.flatMap((r) => r.admitted as number[]).sort((a, b) => a - b)
    let mostInWindow = 0
    for (let i = 0, j = 0; i < times.length; i++) {
      while (j < times.length && times[j] < times[i] + o.per) j++
      mostInWindow = Math.max(mostInWindow, j - i)
    }
    const settled = demandSince + SETTLING_MS
    const used = times.filter((t) => t >= settled).length / (o.rate * ((until - settled) / o.per))
    const settling = times.filter((t) => t >= demandSince && t < settled).length
    const perSecond = Array.from(
      { length: Math.ceil(o.seconds) },
      (_, s) => times.filter((t) => t >= start + s * 1000 && t < start + (s + 1) * 1000).length,
    )
    const violations: string[] = []
    if (mostInWindow > o.rate + o.burst) violations.push(`${mostInWindow} admissions in one ${o.per} ms window (bound ${o.rate + o.burst})`)
    if (demandSince === Infinity) violations.push(`never ${o.rate} calls queued: demand did not exceed the rate`)
    else if (used < o.minUsed)
      violations.push(`only ${(used * 100).toFixed(1)} % of the rate used while demand exceeded it (at least ${o.minUsed * 100} %)`)
    if (emptied) violations.push('the queue emptied during the run: demand did not exceed the rate throughout')
    if (times.length > 0 && times[0] < start) violations.push('an admission before the start')
    return {
      admitted: times.length,
      seconds: o.seconds,
      used,
      settling,
      queuedAfterMs: demandSince - start,
      mostInWindow,
      perSecond,
      errors,
      violations,
    }
  } finally {
    observer.close()
    for (const w of procs) await w.kill()
  }
}
