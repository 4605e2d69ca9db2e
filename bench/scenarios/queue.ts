import { entry, type Scenario } from '../util/types.js'
import { runGo } from '../util/go.js'

/**
 * Queue: 4 producers and 4 consumers move >= 2,000 items through one queue, at-least-once
 * (receive + ack, batches allowed), against Go's recipes.Queue (Enqueue / Dequeue, which
 * deletes on claim). Ours needs lib/queue.ts; until it exists this reports "not available".
 */
export const queue: Scenario = {
  name: 'queue',
  async run(ctx) {
    const c = 4
    const n = Math.max(50, Math.round(500 * Math.min(1, ctx.scale * 2)))
    const go = await runGo(ctx, ['-scenario', 'queue', '-c', String(c), '-n', String(n)])
    const g = go.result
    let why = 'lib/queue.ts (Queue with receive/ack) is not in the tree yet: not measured'
    let ours: number | null = null
    const modPath = '../../lib/queue.js'
    try {
      const mod = await import(modPath)
      if (typeof mod.Queue !== 'function') throw new Error('lib/queue.js exports no Queue')
      why = 'Queue exists but this scenario has no driver for its API yet: not measured'
    } catch (err) {
      ctx.log(`queue: ${(err as Error).message}`)
    }
    return {
      entries: [entry(`queue: ${c} producers, ${c} consumers, ${c * n} items`, 'items/s', ours, 'Go queue', g?.ops_per_s ?? null, { kind: 'min-ratio', ratio: 3 }, why)],
      notes: [`Ours: ${why}. Go recipes.Queue: ${g ? `${g.ops_per_s.toFixed(1)} items/s (${g.extra?.distinct} distinct, ${g.extra?.duplicates} duplicates)` : go.why}.`],
      details: { go: g },
    }
  },
}
