import middy from '@middy/core'
import { entry, type Entry, type Scenario } from '../util/types.js'
import { median, summarize, timeSequential, type Latency } from '../util/stats.js'
import { floorCpu, floorLockTxns, floorP50, runGo } from '../util/go.js'
import type { GoResult } from '../util/gopeer.js'
import { lambdaContext } from '../../testing/index.js'
import { countRpcs, formatRpcs, type RpcCounts } from '../util/rpcs.js'

/** Runs of our invocations and of Go's (alternating). */
const RUNS = 3

/**
 * Warm invocations of a no-op handler behind `etcdLock` (Middy + a Lambda-like context),
 * sequentially, against a bare Middy handler, one put, Go's per-invocation lock (new session,
 * lock, unlock, close) and etcd3's own `Lock` (acquire + release; it grants a lease per lock).
 * Also the Node CPU per invocation against the CPU of two puts (Lambda bills CPU-scaled time).
 */
export const lockInvocation: Scenario = {
  name: 'lock-invocation',
  async run(ctx) {
    const n = Math.max(200, Math.round(2000 * ctx.scale))
    const name = ctx.prefix('inv')
    const bare = summarize(await timeSequential(n, () => middy(async () => 'ok')({}, lambdaContext())))
    const bareFn = middy(async () => 'ok')
    const bareWarm = summarize(await timeSequential(n, () => bareFn({}, lambdaContext())))

    const ep = ctx.endpoints[0]
    const rpcs: Record<string, RpcCounts> = {}
    const runs: { latency: Latency; cpuMs: number }[] = []
    const goRuns: GoResult[] = []
    let goWhy: string | undefined
    let why: string | undefined
    try {
      const { etcdLock } = (await import('../../middleware/index.js')) as typeof import('../../middleware/index.js')
      const fn = middy(async () => 'ok').use(etcdLock({ name, client: ctx.client }))
      for (let i = 0; i < 50; i++) await fn({}, lambdaContext())
      for (let r = 0; r < RUNS; r++) {
        const cpu0 = process.cpuUsage()
        const measured = await countRpcs(ep, n, () => timeSequential(n, () => fn({}, lambdaContext()), 0))
        const cpu = process.cpuUsage(cpu0)
        runs.push({ latency: summarize(measured.result), cpuMs: (cpu.user + cpu.system) / 1000 / n })
        rpcs.ours = measured.perOp
        // Go between our runs, so both see the same machine load over the scenario.
        const goRun = await countRpcs(ep, n, () => runGo(ctx, ['-scenario', 'lock-invocation', '-n', String(n)]))
        if (goRun.result.result) {
          goRuns.push(goRun.result.result)
          rpcs.go = goRun.perOp
        } else goWhy = goRun.result.why
      }
    } catch (err) {
      why = `etcdLock not available: ${(err as Error).message}`
      ctx.log(why)
    }

    const lockName = ctx.prefix('etcd3lock')
    const e3 = await countRpcs(ep, n, () =>
      timeSequential(
        n,
        async () => {
          const lock = ctx.client.lock(lockName)
          await lock.acquire()
          await lock.release()
        },
        0,
      ),
    )
    const etcd3 = summarize(e3.result)
    rpcs.etcd3 = e3.perOp
    const put = floorP50(ctx)
    const putCpu = floorCpu(ctx)
    const rawPair = floorLockTxns(ctx)
    const p50 = runs.map((r) => r.latency.p50)
    const p99 = runs.map((r) => r.latency.p99)
    const cpu = runs.map((r) => r.cpuMs)
    const ours = runs.length ? { p50: median(p50), p99: median(p99), cpuMs: median(cpu) } : null
    const label = 'warm invocation, etcdLock no-op handler'
    const entries: Entry[] = [
      entry(label, 'p50 ms', p50, 'one put (floor)', put, { kind: 'max-ratio', ratio: 2.2 }, why),
      entry(
        label,
        'CPU ms per invocation',
        cpu,
        'CPU of two puts (floor)',
        putCpu === null ? null : 2 * putCpu,
        { kind: 'max-ratio', ratio: 1.2 },
        why,
      ),
      entry(label, 'p50 ms', p50, "the lock's two Txns sent raw (floor)", rawPair?.p50 ?? null, { kind: 'none' }, why),
      entry(
        label,
        'CPU ms per invocation',
        cpu,
        "CPU of the lock's two Txns sent raw (floor)",
        rawPair?.cpuMs ?? null,
        { kind: 'none' },
        why,
      ),
      entry(
        label,
        'p50 ms',
        p50,
        'Go lock-invocation',
        goRuns.map((g) => g.p50_ms!),
        { kind: 'max-ratio', ratio: 1 },
        why ?? goWhy,
      ),
      entry(
        label,
        'p99 ms',
        p99,
        'Go lock-invocation',
        goRuns.map((g) => g.p99_ms!),
        { kind: 'none' },
        why ?? goWhy,
      ),
      entry(label, 'p50 ms', p50, 'etcd3 Lock acquire+release', etcd3.p50, { kind: 'none' }, why),
      entry(label, 'p99 ms', p99, 'etcd3 Lock acquire+release', etcd3.p99, { kind: 'none' }, why),
    ]
    const f = (l: Latency) => `p50 ${l.p50.toFixed(3)} / p99 ${l.p99.toFixed(3)} ms`
    return {
      entries,
      notes: [
        `${RUNS} runs of ${n} sequential warm invocations, Go's runs between ours (medians). etcdLock no-op: ${ours ? `p50 ${ours.p50.toFixed(3)} / p99 ${ours.p99.toFixed(3)} ms, Node CPU ${ours.cpuMs.toFixed(3)} ms per invocation` : 'not available'}; bare Middy no-op: ${f(bareWarm)}` +
          (ours ? ` (overhead of the lock: p50 ${(ours.p50 - bareWarm.p50).toFixed(3)} ms)` : '') +
          `; etcd3 Lock acquire+release: ${f(etcd3)}; Go new session+lock+unlock+close: ${goRuns.length ? `p50 ${median(goRuns.map((g) => g.p50_ms!))} / p99 ${median(goRuns.map((g) => g.p99_ms!))} ms` : goWhy}. ` +
          `etcd requests per invocation (server metrics): etcdLock ${rpcs.ours ? formatRpcs(rpcs.ours) : 'n/a'}; etcd3 Lock ${formatRpcs(rpcs.etcd3)}; Go ${rpcs.go ? formatRpcs(rpcs.go) : 'n/a'}.`,
      ],
      details: { ours, runs, bare: bareWarm, bareNewMiddy: bare, etcd3Lock: etcd3, go: goRuns, rpcsPerInvocation: rpcs },
    }
  },
}
