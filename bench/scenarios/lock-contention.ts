import { entry, type BenchContext, type Entry, type Scenario } from '../util/types.js'
import { median, pct } from '../util/stats.js'
import { runGo } from '../util/go.js'
import { libMutex, lockCounter, type CounterRun } from '../util/workload.js'
import type { GoResult } from '../util/gopeer.js'
import { countRpcs, formatRpcs, type RpcCounts } from '../util/rpcs.js'

interface Shape {
  label: string
  c: number
  n: number
  /** Repeats of short shapes; the median run is reported. */
  repeats: number
  minRatio: number
}

/** Runs a lock/increment/unlock shape for lib's Mutex and Go. */
async function measure(ctx: BenchContext, shape: Shape) {
  const runs: CounterRun[] = []
  const rpcs: Record<string, RpcCounts> = {}
  const ep = ctx.endpoints[0]
  const goRuns: GoResult[] = []
  let goWhy: string | undefined
  for (let r = 0; r < shape.repeats; r++) {
    const { result: run, perOp } = await countRpcs(ep, shape.c * shape.n, () => lockCounter(ctx.client, libMutex, ctx.prefix(shape.label), shape.c, shape.n))
    rpcs.lib = perOp
    if (run.counter !== shape.c * shape.n) throw new Error(`${shape.label}: counter ${run.counter}, expected ${shape.c * shape.n} (mutual exclusion broken)`)
    runs.push(run)
    const { result: go, perOp: goRpcs } = await countRpcs(ep, shape.c * shape.n, () => runGo(ctx, ['-scenario', 'lock-contended', '-c', String(shape.c), '-n', String(shape.n)]))
    if (go.result) rpcs.go = goRpcs
    if (go.result) {
      if (go.result.extra?.counter !== shape.c * shape.n) throw new Error(`Go ${shape.label}: counter ${go.result.extra?.counter}`)
      goRuns.push(go.result)
    } else goWhy = go.why
  }
  const pick = (rs: CounterRun[]) => {
    const m = median(rs.map((r) => r.perSecond))
    return rs.find((r) => r.perSecond === m)!
  }
  const lib = pick(runs)
  const go = goRuns.length ? median(goRuns.map((g) => g.ops_per_s)) : null
  const name = `${shape.label}: ${shape.c} workers x ${shape.n} lock/increment/unlock`
  const entries: Entry[] = [
    entry(name, 'handoffs/s', lib.perSecond, `Go lock-contended -c ${shape.c} -n ${shape.n}`, go, { kind: 'min-ratio', ratio: shape.minRatio }, goWhy),
  ]
  const h = (r: CounterRun) => `handoff p50 ${pct(r.handoffs, 0.5).toFixed(2)} ms / p99 ${pct(r.handoffs, 0.99).toFixed(2)} ms, Node CPU ${(r.cpuShare * 100).toFixed(0)}% of a core`
  const note =
    `${name} (median of ${shape.repeats} run${shape.repeats > 1 ? 's' : ''}): lib Mutex ${lib.perSecond.toFixed(1)}/s (${h(lib)}); ` +
    `Go ${go === null ? `not measured (${goWhy})` : `${go.toFixed(1)}/s`}. ` +
    `etcd requests per lock/increment/unlock (server metrics, incl. the counter's Range+Put): lib ${formatRpcs(rpcs.lib)}; Go ${rpcs.go ? formatRpcs(rpcs.go) : 'n/a'}.`
  return { entries, note, details: { lib: strip(lib), go: goRuns, rpcsPerOp: rpcs, runs: { lib: runs.map((r) => r.perSecond) } } }
}

function strip(r: CounterRun) {
  return { ops: r.ops, seconds: r.seconds, perSecond: r.perSecond, cpuShare: r.cpuShare, handoffP50: pct(r.handoffs, 0.5), handoffP99: pct(r.handoffs, 0.99), handoffs: r.handoffs.length }
}

/** 100 one-shot workers: session, lock, increment, unlock (Go `lock-contended -c 100 -n 1`). */
export const lockContended: Scenario = {
  name: 'lock-contended',
  async run(ctx) {
    const r = await measure(ctx, { label: 'contended', c: 100, n: 1, repeats: 5, minRatio: 1 })
    return { entries: r.entries, notes: [r.note], details: r.details }
  },
}

/** A hot lock: every worker re-locks at once (Go `lock-contended -c 2 -n 50` and `-c 10 -n 100`). */
export const hotLock: Scenario = {
  name: 'hot-lock',
  async run(ctx) {
    const a = await measure(ctx, { label: 'hot lock', c: 2, n: Math.max(10, Math.round(50 * Math.min(1, ctx.scale * 2))), repeats: 3, minRatio: 5 })
    const b = await measure(ctx, { label: 'hot lock', c: 10, n: Math.max(10, Math.round(100 * Math.min(1, ctx.scale * 2))), repeats: 3, minRatio: 5 })
    return { entries: [...a.entries, ...b.entries], notes: [a.note, b.note], details: { c2: a.details, c10: b.details } }
  },
}
