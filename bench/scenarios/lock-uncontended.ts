import { Mutex, Session } from '../../lib/index.js'
import { entry, type Scenario } from '../util/types.js'
import { summarize, timeSequential } from '../util/stats.js'
import { runGo } from '../util/go.js'

/** lock + unlock on one long-lived session, sequentially (Go `lock-uncontended`). */
export const lockUncontended: Scenario = {
  name: 'lock-uncontended',
  async run(ctx) {
    const n = Math.max(200, Math.round(2000 * ctx.scale))
    const session = await Session.create(ctx.client)
    const m = new Mutex(session, ctx.prefix('unc'))
    let ours
    try {
      ours = summarize(await timeSequential(n, async () => { await m.lock(); await m.unlock() }, 50))
    } finally {
      await session.close()
    }
    // The two-round-trip floor of this client: two sequential puts, timed the same way.
    const key = ctx.prefix('unc-put')
    const puts = summarize(await timeSequential(n, async () => { await ctx.client.put(key).value('1'); await ctx.client.put(key).value('2') }, 50))
    const go = await runGo(ctx, ['-scenario', 'lock-uncontended', '-n', String(n)])
    const g = go.result
    return {
      entries: [
        entry('lock + unlock, long-lived session', 'p50 ms', ours.p50, 'Go lock-uncontended', g?.p50_ms ?? null, { kind: 'max-ratio', ratio: 1.1 }, go.why),
        entry('lock + unlock, long-lived session', 'p99 ms', ours.p99, 'Go lock-uncontended', g?.p99_ms ?? null, { kind: 'none' }, go.why),
        entry('lock + unlock, long-lived session', 'p50 ms', ours.p50, 'two sequential puts (etcd3 client)', puts.p50, { kind: 'none' }),
      ],
      notes: [
        `${n} sequential lock()+unlock() pairs on one Session/Mutex: two round trips (the lock Txn that puts the key and reads the owner, the unlock Txn), as Go's Lock+Unlock. Two sequential puts on the same client: p50 ${puts.p50.toFixed(3)} / p99 ${puts.p99.toFixed(3)} ms${g?.p50_ms ? ` (${(puts.p50 / g.p50_ms).toFixed(2)}x Go's lock+unlock before any lock logic)` : ''}.`,
      ],
      details: { ours, twoPuts: puts, go: g },
    }
  },
}
