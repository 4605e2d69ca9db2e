import type { EtcdClient } from '../../lib/index.js'
import { entry, type Scenario } from '../util/types.js'
import { runGo } from '../util/go.js'
import { countRpcs, formatRpcs, type RpcCounts } from '../util/rpcs.js'

/** Messages claimed per receive (batches are allowed by the scenario). */
const BATCH = 16

/**
 * Queue: 4 producers and 4 consumers (each on its own client, as the Go peer) move c*n items
 * through one queue, at least once: `receive({ max: 16 })` then one `ackMany` of the batch. Against
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
    const { result: go, perOp: goRpcs } = await countRpcs(ep, total, () => runGo(ctx, ['-scenario', 'queue', '-c', String(c), '-n', String(n)]))
    const g = go.result
    let ourRpcs: RpcCounts | undefined
    let why: string | undefined
    let ours: { perSecond: number; seconds: number; distinct: number; duplicates: number; receives: number; cpuShare: number } | null = null
    try {
      const modPath = '../../lib/queue.js'
      const { Queue } = (await import(modPath)) as typeof import('../../lib/queue.js')
      const name = ctx.prefix('queue')
      const seen = new Map<string, number>()
      const done = new AbortController()
      let receives = 0
      const clients: EtcdClient[] = Array.from({ length: 2 * c }, () => ctx.newClient())
      const before = await import('../util/rpcs.js').then((m) => m.rpcSnapshot(ep))
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      await Promise.all([
        ...Array.from({ length: c }, async (_, w) => {
          const q = new Queue(clients[w], name)
          for (let i = 0; i < n; i++) await q.enqueue(`${w}-${i}`)
        }),
        ...Array.from({ length: c }, async (_, w) => {
          const q = new Queue(clients[c + w], name)
          while (!done.signal.aborted) {
            let batch
            try {
              batch = await q.receive({ max: BATCH, signal: done.signal })
            } catch (err) {
              if (done.signal.aborted) return
              throw err
            }
            receives++
            const lost = (await q.ackMany(batch)).filter((e) => e !== undefined)
            if (lost.length > 0) throw new Error(`ackMany lost ${lost.length} claims: ${lost[0]!.message}`)
            for (const m of batch) seen.set(m.value, (seen.get(m.value) ?? 0) + 1)
            if (seen.size === total) done.abort(new Error('all items received'))
          }
        }),
      ])
      const seconds = (performance.now() - t0) / 1000
      const cpu = process.cpuUsage(cpu0)
      const cpuShare = (cpu.user + cpu.system) / 1e6 / seconds
      const { rpcSnapshot, rpcPerOp } = await import('../util/rpcs.js')
      ourRpcs = rpcPerOp(before, await rpcSnapshot(ep), total)
      const duplicates = [...seen.values()].reduce((a, k) => a + k - 1, 0)
      ours = { perSecond: total / seconds, seconds, distinct: seen.size, duplicates, receives, cpuShare }
    } catch (err) {
      why = `Queue not measured: ${(err as Error).message}`
      ctx.log(why)
    }
    return {
      entries: [entry(label, 'items/s', ours?.perSecond ?? null, 'Go queue', g?.ops_per_s ?? null, { kind: 'min-ratio', ratio: 3 }, why ?? go.why)],
      notes: [
        `Ours: ${ours ? `${ours.perSecond.toFixed(1)} items/s (${ours.distinct} distinct of ${total}, ${ours.duplicates} duplicates, ${ours.receives} receive calls, Node CPU ${(ours.cpuShare * 100).toFixed(0)}% of a core)` : why}. ` +
          `Go recipes.Queue (delete on claim, at-most-once): ${g ? `${g.ops_per_s.toFixed(1)} items/s (${g.extra?.distinct} distinct, ${g.extra?.duplicates} duplicates)` : go.why}. ` +
          `etcd requests per item (server metrics): ours ${ourRpcs ? formatRpcs(ourRpcs) : 'n/a'}; Go ${g ? formatRpcs(goRpcs) : 'n/a'}.`,
      ],
      details: { ours, go: g, rpcsPerItem: { ours: ourRpcs, go: goRpcs } },
    }
  },
}
