import { setMaxListeners } from 'node:events'
import middy from '@middy/core'
import { Election, Mutex, Semaphore, Session, type EtcdClient } from '../../lib/index.js'
import { idempotencyKeys } from '../../lib/core/keys.js'
import { encodeRecord } from '../../lib/idempotency/record.js'
import { etcdIdempotency } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { rpcSnapshot, sentBytes, type RpcCounts } from '../util/rpcs.js'
import { pct, timeSequential } from '../util/stats.js'
import { entry, type BenchContext, type Entry, type Scenario } from '../util/types.js'

/**
 * Issue 25: how a cost grows with the work. Each row runs the same operation at a small and a
 * large size on the same etcd in the same run, and divides: etcd requests, bytes etcd sent to
 * clients, and p50 latency, per operation.
 *
 *   - lock handoff with 1,000 waiters queued vs 10 (every grantee releases and queues again at
 *     the back, so the queue keeps its length while the handoffs are counted);
 *   - semaphore acquire/release (permits 3) with 1,000 waiters vs 10, the same loop;
 *   - election failover with 1,000 candidates vs 2 (the leader's session is closed; the next
 *     candidate's campaign returns);
 *   - idempotency duplicate of a completed call with 1,000,000 stored records vs 1,000.
 */

interface Cost {
  /** etcd messages received per operation (every unary request and stream message). */
  requests: number
  /** Bytes etcd sent to its gRPC clients per operation. */
  bytes: number
  /** Per-operation latency, ms. */
  p50: number
  samples: number
}

async function counters(endpoint: string): Promise<{ rpcs: RpcCounts; bytes: number }> {
  return { rpcs: await rpcSnapshot(endpoint), bytes: await sentBytes(endpoint) }
}

function costOf(before: { rpcs: RpcCounts; bytes: number }, after: { rpcs: RpcCounts; bytes: number }, ops: number, lat: number[]): Cost {
  let requests = 0
  for (const [k, v] of Object.entries(after.rpcs)) requests += v - (before.rpcs[k] ?? 0)
  return { requests: requests / ops, bytes: (after.bytes - before.bytes) / ops, p50: pct(lat, 0.5), samples: lat.length }
}

/** Sessions spread over a few clients (a thousand waiters are a thousand functions, not one connection). */
async function sessionsFor(clients: EtcdClient[], n: number): Promise<Session[]> {
  const out: Session[] = []
  for (let i = 0; i < n; i += 100) {
    const batch = Math.min(100, n - i)
    out.push(
      ...(await Promise.all(Array.from({ length: batch }, (_, j) => Session.create(clients[(i + j) % clients.length], { ttl: 60 })))),
    )
  }
  return out
}

interface Holdable {
  take(signal: AbortSignal): Promise<void>
  give(): Promise<void>
}

/**
 * `waiters + permits` workers contend for `permits` slots; once every one of them has its key in
 * the queue, `handoffs` grants are counted (each grantee gives back at once and queues again at
 * the back, so the queue length stays `waiters`). Latency: a release to the next grant.
 */
async function handoffsWith(
  ctx: BenchContext,
  clients: EtcdClient[],
  waiters: number,
  permits: number,
  handoffs: number,
  open: (s: Session, name: string) => Holdable,
  keysOf: (name: string) => string,
): Promise<Cost> {
  const name = ctx.prefix(`scale-${permits}-${waiters}`)
  const sessions = await sessionsFor(clients, waiters + permits)
  const stop = new AbortController()
  setMaxListeners(0, stop.signal) // one listener per waiting worker
  let counting = false
  let granted = 0
  let lastRelease = 0
  const lat: number[] = []
  let done!: () => void
  let fail!: (err: unknown) => void
  // Resolves after `handoffs` grants; rejects with the first worker's error (no hang on a failure).
  const finished = new Promise<void>((resolve, reject) => ((done = resolve), (fail = reject)))
  const loops = sessions.map(async (s) => {
    const h = open(s, name)
    while (!stop.signal.aborted) {
      try {
        await h.take(stop.signal)
      } catch (err) {
        if (!stop.signal.aborted) fail(err)
        return
      }
      const got = performance.now()
      if (counting) {
        if (lastRelease > 0) lat.push(got - lastRelease)
        if (++granted >= handoffs) done()
      }
      await h.give()
      lastRelease = performance.now()
    }
  })
  // Counting starts once the queue holds `waiters` keys (the holders have theirs too).
  const count = async () => (await ctx.client.getAll().prefix(keysOf(name)).count()) as number
  while ((await count()) < waiters) await new Promise((r) => setTimeout(r, 50))
  const before = await counters(ctx.endpoints[0])
  lastRelease = 0
  counting = true
  await finished
  const after = await counters(ctx.endpoints[0])
  stop.abort()
  await Promise.allSettled(loops)
  await Promise.all(sessions.map((s) => s.close().catch(() => {})))
  return costOf(before, after, handoffs, lat)
}

/** `failovers` times: close the leader's session, time until the next candidate's campaign returns. */
async function failoversWith(ctx: BenchContext, clients: EtcdClient[], candidates: number, failovers: number): Promise<Cost> {
  const name = ctx.prefix(`scale-election-${candidates}`)
  // One more candidate per failover, so `candidates` are still queued at the last one.
  const sessions = await sessionsFor(clients, candidates + failovers)
  const elections = sessions.map((s) => new Election(s, name))
  const elected = elections.map((e, i) => e.campaign(`c${i}`).then(() => performance.now()))
  // The candidates still queued at the end are stopped by closing their sessions.
  for (const p of elected) p.catch(() => {})
  const count = async () => (await ctx.client.getAll().prefix(`${name}/`).count()) as number
  while ((await count()) < sessions.length) await new Promise((r) => setTimeout(r, 50))
  // The campaigns started together, so the line is etcd's create order, not the array's.
  const line = (await ctx.client.getAll().prefix(`${name}/`).sort('Create', 'Ascend').keys()).map((key) =>
    sessions.findIndex((s) => key === `${name}/${s.leaseHex}`),
  )
  await elected[line[0]]
  const lat: number[] = []
  const before = await counters(ctx.endpoints[0])
  for (let i = 0; i < failovers; i++) {
    const t0 = performance.now()
    await sessions[line[i]].close()
    lat.push((await elected[line[i + 1]]) - t0)
  }
  const after = await counters(ctx.endpoints[0])
  for (const i of line.slice(failovers)) await sessions[i].close().catch(() => {})
  await Promise.allSettled(elected)
  return costOf(before, after, failovers, lat)
}

/** Completed idempotency records, written straight in the store's layout (128 puts per Txn, on one lease). */
async function storeRecords(ctx: BenchContext, prefix: string, n: number): Promise<void> {
  const lease = ctx.client.lease(3600, { autoKeepAlive: false })
  const id = await lease.grant()
  const value = encodeRecord({ state: 'completed', result: { statusCode: 200, body: '{"order":"x"}' } })
  const perTxn = 128
  let next = 0
  const writer = async () => {
    while (next < n) {
      const from = next
      next = Math.min(n, next + perTxn)
      const puts = []
      for (let i = from; i < next; i++)
        puts.push(
          ctx.client
            .put(idempotencyKeys.record(prefix, `k${i}`))
            .value(value)
            .lease(id),
        )
      // One Txn of puts (the comparison always holds): 128 writes in one raft entry.
      await ctx.client
        .if(prefix, 'Version', '>', -1)
        .then(...puts)
        .commit()
    }
  }
  await Promise.all(Array.from({ length: 8 }, writer))
}

async function duplicatesWith(ctx: BenchContext, records: number, n: number): Promise<Cost> {
  const prefix = ctx.prefix(`scale-idem-${records}`)
  await storeRecords(ctx, prefix, records)
  const handler = middy(async () => ({ statusCode: 200, body: 'ran' })).use(
    etcdIdempotency<{ id: string }>({ key: (e) => e.id, prefix, client: ctx.client }),
  )
  // Duplicates of keys spread over the whole store (k0 … k{records-1}).
  const keyOf = (i: number) => `k${Math.floor(((i + 1) * 7919 * records) / (n + 1)) % records}`
  await timeSequential(50, (i) => handler({ id: keyOf(i) }, lambdaContext()), 0)
  const before = await counters(ctx.endpoints[0])
  const lat = await timeSequential(
    n,
    async (i) => {
      const res = await handler({ id: keyOf(i) }, lambdaContext())
      if ((res as { body: string }).body === 'ran') throw new Error('a duplicate of a stored record ran the handler')
    },
    0,
  )
  const after = await counters(ctx.endpoints[0])
  return costOf(before, after, n, lat)
}

/** The three rows of one comparison: requests, bytes and p50, large over small. */
function rows(label: string, large: string, small: string, l: Cost, s: Cost, limit: number): Entry[] {
  const goal = { kind: 'max-ratio' as const, ratio: limit }
  return [
    entry(`${label}: ${large} vs ${small}`, 'requests/op', l.requests, small, s.requests, goal),
    entry(`${label}: ${large} vs ${small}`, 'bytes received/op', l.bytes, small, s.bytes, goal),
    entry(`${label}: ${large} vs ${small}`, 'p50 ms', l.p50, small, s.p50, goal),
  ]
}

const fmt = (c: Cost) => `${c.requests.toFixed(2)} requests, ${Math.round(c.bytes)} B, p50 ${c.p50.toFixed(2)} ms (${c.samples} samples)`

export const scaling: Scenario = {
  name: 'scaling',
  async run(ctx) {
    const big = ctx.scale < 1 ? 200 : 1000
    const records = ctx.scale < 1 ? 100_000 : 1_000_000
    const clients = Array.from({ length: 10 }, () => ctx.newClient())
    const handoffs = Math.max(50, Math.round(300 * ctx.scale))
    const mutex = (s: Session, name: string): Holdable => {
      const m = new Mutex(s, name)
      return { take: (signal) => m.lock({ signal }), give: () => m.unlock() }
    }
    const semaphore = (s: Session, name: string): Holdable => {
      const x = new Semaphore(s, name, 3)
      return { take: (signal) => x.acquire({ signal }).then(() => {}), give: () => x.release() }
    }
    const k = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}M` : n >= 1000 ? `${n / 1000}k` : String(n))
    const step = async <T extends Cost>(what: string, work: () => Promise<T>): Promise<T> => {
      ctx.log(`  scaling: ${what}…`)
      const c = await work()
      ctx.log(`  scaling: ${what}: ${fmt(c)}`)
      return c
    }
    const lockSmall = await step('lock, 10 waiters', () => handoffsWith(ctx, clients, 10, 1, handoffs, mutex, (n) => `${n}/`))
    const lockLarge = await step(`lock, ${k(big)} waiters`, () => handoffsWith(ctx, clients, big, 1, handoffs, mutex, (n) => `${n}/`))
    const semSmall = await step('semaphore, 10 waiters', () =>
      handoffsWith(ctx, clients, 10, 3, handoffs, semaphore, (n) => `${n}/waiters/`),
    )
    const semLarge = await step(`semaphore, ${k(big)} waiters`, () =>
      handoffsWith(ctx, clients, big, 3, handoffs, semaphore, (n) => `${n}/waiters/`),
    )
    const failovers = Math.max(10, Math.round(30 * ctx.scale))
    const electSmall = await step('election, 2 candidates', () => failoversWith(ctx, clients, 2, failovers))
    const electLarge = await step(`election, ${k(big)} candidates`, () => failoversWith(ctx, clients, big, failovers))
    const dups = Math.max(200, Math.round(1000 * ctx.scale))
    const idemSmall = await step('idempotency, 1k records', () => duplicatesWith(ctx, 1000, dups))
    const idemLarge = await step(`idempotency, ${k(records)} records`, () => duplicatesWith(ctx, records, dups))
    return {
      entries: [
        ...rows('lock handoff', `${k(big)} waiters`, '10 waiters', lockLarge, lockSmall, 1.5),
        ...rows('semaphore acquire/release (permits 3)', `${k(big)} waiters`, '10 waiters', semLarge, semSmall, 1.5),
        ...rows('election failover', `${k(big)} candidates`, '2 candidates', electLarge, electSmall, 1.5),
        ...rows('idempotency duplicate', `${k(records)} records`, '1k records', idemLarge, idemSmall, 1.2),
      ],
      notes: [
        `Cost as the work grows, per operation (requests = etcd messages received, bytes = what etcd sent its gRPC clients; ${clients.length} clients, one session per waiter). ` +
          `Lock handoff, ${handoffs} handoffs, every grantee queues again at the back: 10 waiters ${fmt(lockSmall)}; ${k(big)} ${fmt(lockLarge)}. ` +
          `Semaphore (permits 3), the same loop: 10 ${fmt(semSmall)}; ${k(big)} ${fmt(semLarge)}. ` +
          `Election failover, ${failovers} in a row: 2 candidates ${fmt(electSmall)}; ${k(big)} ${fmt(electLarge)}. ` +
          `Idempotency duplicate (warm etcdIdempotency, keys spread over the store, records on one lease): 1k records ${fmt(idemSmall)}; ${k(records)} ${fmt(idemLarge)}.`,
      ],
      details: { lockSmall, lockLarge, semSmall, semLarge, electSmall, electLarge, idemSmall, idemLarge },
    }
  },
}
