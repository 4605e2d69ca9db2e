import middy from '@middy/core'
import { singleFlight } from '../../lib/index.js'
import { etcdIdempotency } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { floorP50 } from '../util/go.js'
import { countRpcs, formatRpcs } from '../util/rpcs.js'
import { p50s, pct, sleep, summarize, timeSequential, type Latency } from '../util/stats.js'
import { entry, type Scenario } from '../util/types.js'

/** Concurrent singleFlight callers, each on its own connection (like separate functions). */
const FLIGHT_CALLERS = 50
/** What the leader's fn takes (a rate-limited upstream call). */
const FLIGHT_FN_MS = 200

/**
 * etcdIdempotency on warm invocations, sequentially: a duplicate of a completed invocation (the
 * stored response, handler not run) against a bare warm Middy invocation and one put; a first
 * run (a new key: begin, the handler, store the response); etcd requests per invocation of
 * each. Then singleFlight: 50 callers on separate connections, the followers' p99 latency
 * against the leader's whole duration.
 */
export const idempotency: Scenario = {
  name: 'idempotency',
  async run(ctx) {
    const n = Math.max(200, Math.round(2000 * ctx.scale))
    const ep = ctx.endpoints[0]
    const bareFn = middy(async () => ({ statusCode: 200, body: 'ok' }))
    const bare = summarize(await timeSequential(n, () => bareFn({}, lambdaContext())))

    const prefix = ctx.prefix('idem')
    const handler = middy(async (event: { id: string }) => ({ statusCode: 200, body: JSON.stringify({ order: event.id }) })).use(
      etcdIdempotency<{ id: string }>({ key: (e) => e.id, prefix, client: ctx.client }),
    )
    await handler({ id: 'dup' }, lambdaContext())
    for (let i = 0; i < 50; i++) await handler({ id: 'dup' }, lambdaContext())
    const dupRun = await countRpcs(ep, n, () => timeSequential(n, () => handler({ id: 'dup' }, lambdaContext()), 0))
    const duplicate = summarize(dupRun.result)

    let next = 0
    const firstRun = await countRpcs(ep, n, () => timeSequential(n, () => handler({ id: `new-${next++}` }, lambdaContext()), 0))
    const first = summarize(firstRun.result)

    const flights = await flightRounds(ctx, Math.max(3, Math.round(10 * ctx.scale)))
    const put = floorP50(ctx)
    const dupName = 'idempotency: duplicate of a completed invocation (warm)'
    const f = (l: Latency) => `p50 ${l.p50.toFixed(3)} / p99 ${l.p99.toFixed(3)} ms`
    return {
      entries: [
        // Judged on the median p50 of the three thirds of the samples (their spread shown).
        entry(dupName, 'p50 ms', p50s(dupRun.result), 'one put (floor)', put, { kind: 'max-ratio', ratio: 1.6 }),
        entry(dupName, 'p50 ms', duplicate.p50, 'bare warm Middy invocation', bare.p50, { kind: 'none' }),
        entry(dupName, 'p99 ms', duplicate.p99, 'one put (floor)', put, { kind: 'none' }),
        entry('idempotency: first run of a key (warm)', 'p50 ms', first.p50, 'one put (floor)', put, { kind: 'none' }),
        entry(
          `singleFlight: ${FLIGHT_CALLERS} callers, followers`,
          'p99 ms',
          flights.p99s,
          'leader duration + 50 ms',
          flights.leader + 50,
          { kind: 'max-ratio', ratio: 1 },
        ),
      ],
      notes: [
        `${n} sequential warm invocations each. Duplicate of a completed invocation (stored response, handler not run): ${f(duplicate)}; ` +
          `bare warm Middy no-op: ${f(bare)} (the duplicate's cost over it: p50 ${(duplicate.p50 - bare.p50).toFixed(3)} ms); ` +
          `first run of a new key (begin, handler, store the response on a lease of its own): ${f(first)}. ` +
          `etcd requests per invocation (server metrics): duplicate ${formatRpcs(dupRun.perOp)}; first run ${formatRpcs(firstRun.perOp)}.`,
        `singleFlight, ${FLIGHT_CALLERS} concurrent callers on separate connections in this one process, fn ${FLIGHT_FN_MS} ms, median of ${flights.rounds} rounds: ` +
          `leader ${flights.leader.toFixed(1)} ms, followers p50 ${flights.followersP50.toFixed(1)} / p99 ${flights.followersP99.toFixed(1)} ms ` +
          `(p99 − leader: ${(flights.followersP99 - flights.leader).toFixed(1)} ms; fn ran once per round: ${flights.once}).`,
      ],
      details: { bare, duplicate, first, rpcsPerInvocation: { duplicate: dupRun.perOp, first: firstRun.perOp }, singleFlight: flights },
    }
  },
}

/** Rounds of concurrent singleFlight calls; medians over rounds of the leader's and followers' latencies. */
async function flightRounds(ctx: Parameters<Scenario['run']>[0], rounds: number) {
  const callers = Array.from({ length: FLIGHT_CALLERS }, () => ctx.newClient())
  const key = ctx.prefix('flight')
  // Warm connections and flight sessions, as module-scope clients of warm functions are.
  await Promise.all(callers.map((c, i) => singleFlight(c, `${key}-warm-${i}`, async () => i)))
  const leaders: number[] = []
  const p50s: number[] = []
  const p99s: number[] = []
  let once = true
  for (let round = 0; round < rounds; round++) {
    let calls = 0
    const timed = await Promise.all(
      callers.map(async (c) => {
        let led = false
        const t0 = performance.now()
        await singleFlight(c, `${key}-${round}`, async () => ((led = true), calls++, await sleep(FLIGHT_FN_MS), { round }))
        return { ms: performance.now() - t0, led }
      }),
    )
    once &&= calls === 1
    const followers = timed.filter((t) => !t.led).map((t) => t.ms)
    leaders.push(timed.find((t) => t.led)!.ms)
    p50s.push(pct(followers, 0.5))
    p99s.push(pct(followers, 0.99))
  }
  return { rounds, leader: pct(leaders, 0.5), followersP50: pct(p50s, 0.5), followersP99: pct(p99s, 0.5), p99s, once }
}
