import { Session } from '../../lib/index.js'
import { entry, type Scenario } from '../util/types.js'
import { sleep, summarize } from '../util/stats.js'
import { runGo } from '../util/go.js'

/**
 * Leader failover (Go `election-failover`): a leader and a waiting candidate on separate
 * sessions (TTL 10); the leader's session is closed (lease revoked); time until the waiting
 * candidate's campaign returns.
 */
export const electionFailover: Scenario = {
  name: 'election-failover',
  async run(ctx) {
    const n = Math.max(5, Math.round(50 * ctx.scale))
    let ours: ReturnType<typeof summarize> | null = null
    let why: string | undefined
    try {
      const { Election } = (await import('../../lib/election.js')) as typeof import('../../lib/election.js')
      const lat: number[] = []
      for (let i = 0; i < n; i++) {
        const name = ctx.prefix('failover')
        const s1 = await Session.create(ctx.client, { ttl: 10 })
        const s2 = await Session.create(ctx.client, { ttl: 10 })
        await new Election(s1, name).campaign('a')
        let t0 = 0
        const elected = new Election(s2, name).campaign('b').then(() => performance.now())
        await sleep(50)
        t0 = performance.now()
        await s1.close()
        lat.push((await elected) - t0)
        await s2.close()
      }
      ours = summarize(lat)
    } catch (err) {
      why = `Election not available: ${(err as Error).message}`
      ctx.log(why)
    }
    const go = await runGo(ctx, ['-scenario', 'election-failover', '-n', String(n)])
    const g = go.result
    return {
      entries: [
        entry('leader failover: session closed -> waiting campaign returns', 'p50 ms', ours?.p50 ?? null, 'Go election-failover', g?.p50_ms ?? null, { kind: 'max-ratio', ratio: 0.2 }, why ?? go.why),
        entry('leader failover: session closed -> waiting campaign returns', 'p99 ms', ours?.p99 ?? null, 'Go election-failover', g?.p99_ms ?? null, { kind: 'none' }, why ?? go.why),
      ],
      notes: [
        `${n} failovers. Ours: ${ours ? `p50 ${ours.p50.toFixed(2)} / p99 ${ours.p99.toFixed(2)} ms` : 'not available'}; Go: ${g ? `p50 ${g.p50_ms} / p99 ${g.p99_ms} ms` : go.why}. ` +
          'Timed from the start of the leader session\'s close (lease revoke) to the waiting campaign resolving.',
      ],
      details: { ours, go: g },
    }
  },
}
