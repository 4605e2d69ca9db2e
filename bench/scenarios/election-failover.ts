import { Session, type EtcdClient } from '../../lib/index.js'
import { entry, type BenchContext, type Scenario } from '../util/types.js'
import { p50s, sleep, summarize, type Latency } from '../util/stats.js'
import { runGo } from '../util/go.js'

interface Candidate {
  campaign(value: string): Promise<void>
}
type ElectionFactory = (session: Session, name: string) => Candidate

/** n failovers: leader and waiting candidate on their own sessions; close the leader's session. */
async function failovers(
  ctx: BenchContext,
  client: EtcdClient,
  make: ElectionFactory,
  n: number,
): Promise<Latency & { samples: number[] }> {
  const lat: number[] = []
  for (let i = 0; i < n; i++) {
    const name = ctx.prefix('failover')
    const s1 = await Session.create(client, { ttl: 10 })
    const s2 = await Session.create(client, { ttl: 10 })
    await make(s1, name).campaign('a')
    const elected = make(s2, name)
      .campaign('b')
      .then(() => performance.now())
    await sleep(50) // as the Go peer: the candidate is queued well before the leader goes
    const t0 = performance.now()
    await s1.close()
    lat.push((await elected) - t0)
    await s2.close()
  }
  return { ...summarize(lat), samples: lat }
}

/**
 * Leader failover (Go `election-failover`): a leader and a waiting candidate on separate
 * sessions (TTL 10); the leader's session is closed (lease revoked); time until the waiting
 * candidate's campaign returns.
 */
export const electionFailover: Scenario = {
  name: 'election-failover',
  async run(ctx) {
    const n = Math.max(5, Math.round(50 * ctx.scale))
    let ours: (Latency & { samples: number[] }) | null = null
    let why: string | undefined
    try {
      const { Election } = (await import('../../lib/locks/election.js')) as typeof import('../../lib/locks/election.js')
      ours = await failovers(ctx, ctx.client, (s, name) => new Election(s, name), n)
    } catch (err) {
      why = `Election not available: ${(err as Error).message}`
      ctx.log(why)
    }
    const go = await runGo(ctx, ['-scenario', 'election-failover', '-n', String(n)])
    const g = go.result
    const f = (l: Latency | null) => (l ? `p50 ${l.p50.toFixed(2)} / p99 ${l.p99.toFixed(2)} ms` : 'not available')
    return {
      entries: [
        // The target is judged on the median p50 of the three thirds of the samples (their spread shown).
        entry(
          'leader failover: session closed -> waiting campaign returns',
          'p50 ms',
          ours ? p50s(ours.samples) : null,
          'Go election-failover',
          g?.p50_ms ?? null,
          { kind: 'max-ratio', ratio: 0.2 },
          why ?? go.why,
        ),
        entry(
          'leader failover: session closed -> waiting campaign returns',
          'p99 ms',
          ours?.p99 ?? null,
          'Go election-failover',
          g?.p99_ms ?? null,
          { kind: 'none' },
          why ?? go.why,
        ),
      ],
      notes: [
        `${n} failovers. lib Election: ${f(ours)}; Go: ${g ? `p50 ${g.p50_ms} / p99 ${g.p99_ms} ms` : go.why}. ` +
          "Timed from the start of the leader session's close (lease revoke) to the waiting campaign resolving. " +
          'Go watches the leader key from the revision of the Range that found it (an unsynced watcher: the revoke reaches it at etcd\'s next 100 ms catch-up tick); lib watches from "now" and closes the gap with one Range (see findings).',
      ],
      details: { ours: ours && { n: ours.n, p50: ours.p50, p99: ours.p99, mean: ours.mean }, go: g },
    }
  },
}
