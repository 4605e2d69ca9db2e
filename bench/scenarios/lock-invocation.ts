import middy from '@middy/core'
import { entry, type Entry, type Scenario } from '../util/types.js'
import { summarize, timeSequential, type Latency } from '../util/stats.js'
import { floorP50, runGo } from '../util/go.js'
import { lambdaContext } from '../../testing/index.js'
import { countRpcs, formatRpcs, type RpcCounts } from '../util/rpcs.js'

/**
 * Warm invocations of a no-op handler behind `etcdLock` (Middy + a Lambda-like context),
 * sequentially, against a bare Middy handler, one put, Go's per-invocation lock (new session,
 * lock, unlock, close) and etcd3's own `Lock` (acquire + release; it grants a lease per lock).
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
    let ours: Latency | null = null
    let why: string | undefined
    try {
      const { etcdLock } = (await import('../../middleware/index.js')) as typeof import('../../middleware/index.js')
      const fn = middy(async () => 'ok').use(etcdLock({ name, client: ctx.client }))
      for (let i = 0; i < 50; i++) await fn({}, lambdaContext())
      const measured = await countRpcs(ep, n, () => timeSequential(n, () => fn({}, lambdaContext()), 0))
      ours = summarize(measured.result)
      rpcs.ours = measured.perOp
    } catch (err) {
      why = `etcdLock not available: ${(err as Error).message}`
      ctx.log(why)
    }

    const lockName = ctx.prefix('etcd3lock')
    const e3 = await countRpcs(ep, n, () =>
      timeSequential(n, async () => {
        const lock = ctx.client.lock(lockName)
        await lock.acquire()
        await lock.release()
      }, 0),
    )
    const etcd3 = summarize(e3.result)
    rpcs.etcd3 = e3.perOp
    const goRun = await countRpcs(ep, n, () => runGo(ctx, ['-scenario', 'lock-invocation', '-n', String(n)]))
    const go = goRun.result
    rpcs.go = goRun.perOp
    const g = go.result
    const put = floorP50(ctx)
    const label = 'warm invocation, etcdLock no-op handler'
    const entries: Entry[] = [
      entry(label, 'p50 ms', ours?.p50 ?? null, 'one put (floor)', put, { kind: 'max-ratio', ratio: 2.2 }, why),
      entry(label, 'p50 ms', ours?.p50 ?? null, 'Go lock-invocation', g?.p50_ms ?? null, { kind: 'max-ratio', ratio: 1 }, why ?? go.why),
      entry(label, 'p99 ms', ours?.p99 ?? null, 'Go lock-invocation', g?.p99_ms ?? null, { kind: 'none' }, why ?? go.why),
      entry(label, 'p50 ms', ours?.p50 ?? null, 'etcd3 Lock acquire+release', etcd3.p50, { kind: 'none' }, why),
      entry(label, 'p99 ms', ours?.p99 ?? null, 'etcd3 Lock acquire+release', etcd3.p99, { kind: 'none' }, why),
    ]
    const f = (l: Latency) => `p50 ${l.p50.toFixed(3)} / p99 ${l.p99.toFixed(3)} ms`
    return {
      entries,
      notes: [
        `${n} sequential warm invocations. etcdLock no-op: ${ours ? f(ours) : 'not available'}; bare Middy no-op: ${f(bareWarm)}` +
          (ours ? ` (overhead of the lock: p50 ${(ours.p50 - bareWarm.p50).toFixed(3)} ms)` : '') +
          `; etcd3 Lock acquire+release: ${f(etcd3)}; Go new session+lock+unlock+close: ${g ? `p50 ${g.p50_ms} / p99 ${g.p99_ms} ms` : go.why}. ` +
          `etcd requests per invocation (server metrics): etcdLock ${rpcs.ours ? formatRpcs(rpcs.ours) : 'n/a'}; etcd3 Lock ${formatRpcs(rpcs.etcd3)}; Go ${g ? formatRpcs(rpcs.go) : 'n/a'}.`,
      ],
      details: { ours, bare: bareWarm, bareNewMiddy: bare, etcd3Lock: etcd3, go: g, rpcsPerInvocation: rpcs },
    }
  },
}
