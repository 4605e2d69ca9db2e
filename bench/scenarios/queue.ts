import { Session, type EtcdClient } from '../../lib/index.js'
import { entry, type BenchContext, type Scenario } from '../util/types.js'
import { runGo } from '../util/go.js'
import type { GoResult } from '../util/gopeer.js'
import { median } from '../util/stats.js'
import { countRpcs, formatRpcs, rpcPerOp, rpcSnapshot, type RpcCounts } from '../util/rpcs.js'

/** Runs of the targeted row (ours and Go's, alternating). */
const RUNS = 3

/** Messages claimed per receive (batches are allowed by the scenario). */
const BATCH = 16

/** Message groups of the grouped run: items of one group are delivered one at a time, in order. */
const GROUPS = 64
/** Delay of every item in the delayed run. */
const DELAY_MS = 1000

interface QueueRun {
  perSecond: number
  seconds: number
  distinct: number
  duplicates: number
  receives: number
  cpuShare: number
  rpcs: RpcCounts
  /** Grouped run: items delivered out of their group's order (must be 0). */
  outOfOrder?: number
  /** Delayed run: ms after its due time (enqueue start + delay) each item was received: p50, p99, max; and any received early (must be 0). */
  lateness?: { p50: number; p99: number; max: number; early: number }
}

/** What the producers add to each enqueue. */
type Shape = { kind: 'plain' } | { kind: 'groups' } | { kind: 'delays' }

/**
 * c producers and c consumers (each on its own client, as the Go peer) move c*n items through
 * one queue: `receive({ max: 16 })` then one `ackMany` of the batch. `claim: 'visibility'`
 * claims each batch with a lease of its own (granted per receive, revoked when the batch is
 * settled: what a function does); `'session'` claims with one long-lived Session per consumer.
 * `shape` adds message groups or a delay to every enqueue.
 */
async function ours(
  ctx: BenchContext,
  c: number,
  n: number,
  claim: 'visibility' | 'session',
  shape: Shape = { kind: 'plain' },
): Promise<QueueRun> {
  const { Queue } = (await import('../../lib/queue/queue.js')) as typeof import('../../lib/queue/queue.js')
  const total = c * n
  const ep = ctx.endpoints[0]
  const name = ctx.prefix('queue')
  const seen = new Map<string, number>()
  const sentAt = new Map<string, number>()
  const lastOfGroup = new Map<string, number>()
  const late: number[] = []
  let outOfOrder = 0
  let early = 0
  const done = new AbortController()
  let receives = 0
  const clients: EtcdClient[] = Array.from({ length: 2 * c }, () => ctx.newClient())
  const before = await rpcSnapshot(ep)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await Promise.all([
    ...Array.from({ length: c }, async (_, w) => {
      const q = new Queue(clients[w], name)
      for (let i = 0; i < n; i++) {
        const value = `${w}-${i}`
        sentAt.set(value, performance.now())
        // Each producer's items spread over all groups, in order within each.
        if (shape.kind === 'groups') await q.enqueue(value, { group: `g${(w * n + i) % GROUPS}` })
        else if (shape.kind === 'delays') await q.enqueue(value, { delayMs: DELAY_MS })
        else await q.enqueue(value)
      }
    }),
    ...Array.from({ length: c }, async (_, w) => {
      const q = new Queue(clients[c + w], name)
      const session = claim === 'session' ? await Session.create(clients[c + w], { ttl: 30 }) : undefined
      try {
        while (!done.signal.aborted) {
          let batch
          try {
            batch = await q.receive({ max: BATCH, signal: done.signal, ...(session ? { session } : {}) })
          } catch (err) {
            if (done.signal.aborted) return
            throw err
          }
          receives++
          const lost = (await q.ackMany(batch)).filter((e) => e !== undefined)
          if (lost.length > 0) throw new Error(`ackMany lost ${lost.length} claims: ${lost[0]!.message}`)
          const now = performance.now()
          for (const m of batch) {
            seen.set(m.value, (seen.get(m.value) ?? 0) + 1)
            if (shape.kind === 'delays') {
              const after = now - sentAt.get(m.value)! - DELAY_MS
              if (after < 0) early++
              late.push(after)
            }
            if (m.group !== undefined) {
              // One producer's items of a group were enqueued one after the other: they must arrive in that order.
              const [producer, i] = m.value.split('-').map(Number)
              const key = `${m.group}/${producer}`
              if ((lastOfGroup.get(key) ?? -1) > i) outOfOrder++
              lastOfGroup.set(key, i)
            }
          }
          if (seen.size === total) done.abort(new Error('all items received'))
        }
      } finally {
        await session?.close()
      }
    }),
  ])
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const rpcs = rpcPerOp(before, await rpcSnapshot(ep), total)
  const duplicates = [...seen.values()].reduce((a, k) => a + k - 1, 0)
  if (seen.size !== total) throw new Error(`queue (${claim}): ${seen.size} of ${total} items received`)
  late.sort((a, b) => a - b)
  const at = (q: number) => Math.round(late[Math.floor(q * (late.length - 1))])
  return {
    perSecond: total / seconds,
    seconds,
    distinct: seen.size,
    duplicates,
    receives,
    cpuShare: (cpu.user + cpu.system) / 1e6 / seconds,
    rpcs,
    ...(shape.kind === 'groups' ? { outOfOrder } : {}),
    ...(shape.kind === 'delays' ? { lateness: { p50: at(0.5), p99: at(0.99), max: at(1), early } } : {}),
  }
}

/**
 * Queue: 4 producers and 4 consumers move c*n items through one queue, at least once, against
 * Go's recipes.Queue (Enqueue / destructive Dequeue). Checks every item arrived; duplicates
 * (at-least-once redeliveries) are counted, not hidden.
 */
export const queue: Scenario = {
  name: 'queue',
  async run(ctx) {
    const c = 4
    const n = Math.max(50, Math.round(500 * Math.min(1, ctx.scale * 2)))
    const total = c * n
    const label = `queue: ${c} producers, ${c} consumers, ${total} items, receive(max ${BATCH})+ackMany`
    const ep = ctx.endpoints[0]
    const goRuns: GoResult[] = []
    let goRpcs: RpcCounts = {}
    let goWhy: string | undefined
    const lambdaRuns: QueueRun[] = []
    let why: string | undefined
    let lambda: QueueRun | null = null
    let session: QueueRun | null = null
    let grouped: QueueRun | null = null
    let delayed: QueueRun | null = null
    try {
      // The targeted row: runs of ours and of Go, alternating.
      for (let r = 0; r < RUNS; r++) {
        const go = await countRpcs(ep, total, () => runGo(ctx, ['-scenario', 'queue', '-c', String(c), '-n', String(n)]))
        if (go.result.result) {
          goRuns.push(go.result.result)
          goRpcs = go.perOp
        } else goWhy = go.result.why
        lambdaRuns.push(await ours(ctx, c, n, 'visibility'))
      }
      lambda = lambdaRuns.find((x) => x.perSecond === median(lambdaRuns.map((y) => y.perSecond)))!
      session = await ours(ctx, c, n, 'session')
      grouped = await ours(ctx, c, n, 'visibility', { kind: 'groups' })
      delayed = await ours(ctx, c, n, 'visibility', { kind: 'delays' })
      if (grouped.outOfOrder) throw new Error(`grouped run: ${grouped.outOfOrder} items out of their group's order`)
      if (delayed.lateness!.early) throw new Error(`delayed run: ${delayed.lateness!.early} items received before their delay`)
    } catch (err) {
      why = `Queue not measured: ${(err as Error).message}`
      ctx.log(why)
    }
    const g = goRuns.length ? goRuns.find((x) => x.ops_per_s === median(goRuns.map((y) => y.ops_per_s)))! : null
    const f = (r: QueueRun | null) =>
      r
        ? `${r.perSecond.toFixed(1)} items/s (${r.distinct} distinct of ${total}, ${r.duplicates} duplicates, ${r.receives} receive calls, Node CPU ${(r.cpuShare * 100).toFixed(0)}% of a core; etcd requests per item: ${formatRpcs(r.rpcs)})`
        : why
    return {
      entries: [
        entry(
          label,
          'items/s',
          lambdaRuns.map((x) => x.perSecond),
          'Go queue',
          goRuns.map((x) => x.ops_per_s),
          { kind: 'min-ratio', ratio: 3 },
          why ?? goWhy,
        ),
        entry(
          `${label}, claims on a long-lived Session`,
          'items/s',
          session?.perSecond ?? null,
          'Go queue',
          g?.ops_per_s ?? null,
          { kind: 'none' },
          why ?? goWhy,
        ),
        entry(
          `${label}, ${GROUPS} message groups`,
          'items/s',
          grouped?.perSecond ?? null,
          'ours, plain',
          lambda?.perSecond ?? null,
          { kind: 'none' },
          why,
        ),
        entry(
          `${label}, every item delayed ${DELAY_MS} ms`,
          'items/s',
          delayed?.perSecond ?? null,
          'ours, plain',
          lambda?.perSecond ?? null,
          { kind: 'none' },
          why,
        ),
      ],
      notes: [
        `${RUNS} runs of ours (a claim lease per receive) and of Go, alternating; the median run: ours ${f(lambda)} (all runs ${lambdaRuns.map((x) => x.perSecond.toFixed(0)).join(', ')}); Go all runs ${goRuns.map((x) => x.ops_per_s.toFixed(0)).join(', ')}. ` +
          `Ours, claims on one Session per consumer: ${f(session)}. ` +
          `Ours, items spread over ${GROUPS} message groups (one in flight per group, in order; ${grouped?.outOfOrder ?? '?'} out of order): ${f(grouped)}. ` +
          `Ours, every item enqueued with delayMs ${DELAY_MS} (received after its due time — including the wait behind earlier items, as the producers outpace the consumers: p50 ${delayed?.lateness?.p50 ?? '?'} ms, p99 ${delayed?.lateness?.p99 ?? '?'} ms, max ${delayed?.lateness?.max ?? '?'} ms; ${delayed?.lateness?.early ?? '?'} early): ${f(delayed)}. ` +
          `Go recipes.Queue (delete on claim, at-most-once), the median run: ${g ? `${g.ops_per_s.toFixed(1)} items/s (${g.extra?.distinct} distinct, ${g.extra?.duplicates} duplicates; etcd requests per item: ${formatRpcs(goRpcs)})` : goWhy}.`,
      ],
      details: {
        ours: lambda,
        runs: lambdaRuns.map((x) => x.perSecond),
        session,
        grouped,
        delayed,
        go: goRuns,
        rpcsPerItem: { ours: lambda?.rpcs, session: session?.rpcs, grouped: grouped?.rpcs, delayed: delayed?.rpcs, go: goRpcs },
      },
    }
  },
}
