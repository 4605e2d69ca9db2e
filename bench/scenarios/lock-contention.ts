import { join } from 'node:path'
import { entry, type BenchContext, type Entry, type Scenario } from '../util/types.js'
import { median, pct } from '../util/stats.js'
import { runGo } from '../util/go.js'
import { libMutex, lockCounter, type CounterRun } from '../util/workload.js'
import type { GoResult } from '../util/gopeer.js'
import { countRpcs, formatRpcs, rpcPerOp, rpcSnapshot, type RpcCounts } from '../util/rpcs.js'
import { gatedProcess, type GatedProcess } from '../util/procs.js'
import { root } from '../util/build.js'

interface Shape {
  label: string
  c: number
  n: number
  /** Repeats; the median run is reported with the spread of all. */
  repeats: number
  minRatio: number
  /** Also a row "etcd messages per lock/increment/unlock" with the target: fewer than Go. */
  messagesRow?: boolean
}

/** Untimed runs of a shape before its measured ones. */
const WARMUP_RUNS = 2

/** All etcd messages of one per-op count (every method summed). */
const totalOf = (r: RpcCounts) =>
  Number(
    Object.values(r)
      .reduce((a, b) => a + b, 0)
      .toFixed(2),
  )

/** Runs a lock/increment/unlock shape for lib's Mutex and Go, alternating. */
async function measure(ctx: BenchContext, shape: Shape) {
  const runs: CounterRun[] = []
  const rpcs: { lib: RpcCounts[]; go: RpcCounts[] } = { lib: [], go: [] }
  const ep = ctx.endpoints[0]
  const goRuns: GoResult[] = []
  let goWhy: string | undefined
  // Untimed warm-up (JIT): measured, the first runs of a shape in a process come out up to 2x
  // slower than the later ones, which would favour whatever runs later in the bench.
  for (let w = 0; w < WARMUP_RUNS; w++) await lockCounter(ctx.client, libMutex, ctx.prefix(`${shape.label}-warm`), shape.c, shape.n)
  for (let r = 0; r < shape.repeats; r++) {
    const { result: run, perOp } = await countRpcs(ep, shape.c * shape.n, () =>
      lockCounter(ctx.client, libMutex, ctx.prefix(shape.label), shape.c, shape.n),
    )
    rpcs.lib.push(perOp)
    if (run.counter !== shape.c * shape.n)
      throw new Error(`${shape.label}: counter ${run.counter}, expected ${shape.c * shape.n} (mutual exclusion broken)`)
    runs.push(run)
    const { result: go, perOp: goRpcs } = await countRpcs(ep, shape.c * shape.n, () =>
      runGo(ctx, ['-scenario', 'lock-contended', '-c', String(shape.c), '-n', String(shape.n)]),
    )
    if (go.result) {
      if (go.result.extra?.counter !== shape.c * shape.n) throw new Error(`Go ${shape.label}: counter ${go.result.extra?.counter}`)
      goRuns.push(go.result)
      rpcs.go.push(goRpcs)
    } else goWhy = go.why
  }
  const m = median(runs.map((r) => r.perSecond))
  const lib = runs.find((r) => r.perSecond === m)!
  const go = goRuns.length ? median(goRuns.map((g) => g.ops_per_s)) : null
  const name = `${shape.label}: ${shape.c} workers x ${shape.n} lock/increment/unlock`
  const goPeer = `Go lock-contended -c ${shape.c} -n ${shape.n}`
  const entries: Entry[] = [
    entry(
      name,
      'handoffs/s',
      runs.map((r) => r.perSecond),
      goPeer,
      goRuns.map((g) => g.ops_per_s),
      { kind: 'min-ratio', ratio: shape.minRatio },
      goWhy,
    ),
  ]
  if (shape.messagesRow) {
    entries.push(
      entry(name, 'etcd messages per worker', rpcs.lib.map(totalOf), goPeer, rpcs.go.map(totalOf), { kind: 'below', ratio: 1 }, goWhy),
    )
  }
  const h = (r: CounterRun) =>
    `handoff p50 ${pct(r.handoffs, 0.5).toFixed(2)} ms / p99 ${pct(r.handoffs, 0.99).toFixed(2)} ms, Node CPU ${(r.cpuShare * 100).toFixed(0)}% of a core`
  const note =
    `${name} (median of ${shape.repeats} runs, Go's between ours): lib Mutex ${lib.perSecond.toFixed(1)}/s (${h(lib)}; all runs ${runs.map((r) => r.perSecond.toFixed(0)).join(', ')}); ` +
    `Go ${go === null ? `not measured (${goWhy})` : `${go.toFixed(1)}/s (all runs ${goRuns.map((g) => g.ops_per_s.toFixed(0)).join(', ')})`}. ` +
    `etcd requests per lock/increment/unlock (server metrics, incl. the counter's Range+Put; last run): lib ${formatRpcs(rpcs.lib.at(-1)!)} (total ${totalOf(rpcs.lib.at(-1)!)}); Go ${rpcs.go.length ? `${formatRpcs(rpcs.go.at(-1)!)} (total ${totalOf(rpcs.go.at(-1)!)})` : 'n/a'}.`
  return {
    entries,
    note,
    details: {
      lib: strip(lib),
      go: goRuns,
      rpcsPerOp: rpcs,
      runs: { lib: runs.map((r) => r.perSecond), go: goRuns.map((g) => g.ops_per_s) },
    },
  }
}

function strip(r: CounterRun) {
  return {
    ops: r.ops,
    seconds: r.seconds,
    perSecond: r.perSecond,
    cpuShare: r.cpuShare,
    handoffP50: pct(r.handoffs, 0.5),
    handoffP99: pct(r.handoffs, 0.99),
    handoffs: r.handoffs.length,
  }
}

/** One run of `procs` processes started together on one lock: handoffs/s over the span from the first start to the last end. */
async function acrossProcesses(
  ctx: BenchContext,
  prefix: string,
  procs: GatedProcess[],
  total: number,
): Promise<{ perSecond: number; rpcs: RpcCounts }> {
  const ep = ctx.endpoints[0]
  try {
    await Promise.all(procs.map((p) => p.ready))
  } catch {
    // a failed child is reported by its result below
  }
  const before = await rpcSnapshot(ep)
  for (const p of procs) p.start()
  const results = await Promise.all(procs.map((p) => p.result))
  const rpcs = rpcPerOp(before, await rpcSnapshot(ep), total)
  const counter = Number(await ctx.client.get(`${prefix}/counter`).string())
  if (counter !== total)
    throw new Error(`${procs.length} processes on ${prefix}: counter ${counter}, expected ${total} (mutual exclusion broken)`)
  const start = Math.min(...results.map((r) => Number(r.startUnixMs ?? (r.extra as Record<string, number>)?.start_unix_ms)))
  const end = Math.max(...results.map((r) => Number(r.endUnixMs ?? (r.extra as Record<string, number>)?.end_unix_ms)))
  if (!Number.isFinite(start) || !Number.isFinite(end))
    throw new Error(`${procs.length} processes on ${prefix}: a process reported no start/end time`)
  return { perSecond: total / ((end - start) / 1000), rpcs }
}

/**
 * The serverless shape of the contended lock: `procs` separate processes (concurrent
 * invocations) with `c` workers each, started together once all are connected; the same for
 * Go with `procs` Go processes. Reported beside the one-process row.
 */
async function measureProcesses(ctx: BenchContext, procs: number, c: number, repeats: number) {
  const total = procs * c
  const ours: number[] = []
  const go: number[] = []
  const rpcs: { lib?: RpcCounts; go?: RpcCounts } = {}
  const script = join(root, 'bench', 'util', 'lock-process.ts')
  let goWhy = ctx.gopeer.unavailable ?? undefined
  for (let r = 0; r < repeats; r++) {
    const prefix = ctx.prefix('procs')
    await ctx.client.put(`${prefix}/counter`).value('0')
    const children = Array.from({ length: procs }, () =>
      gatedProcess(process.execPath, ['--import', 'tsx', script, prefix, String(c), '1'], { ETCD_ENDPOINTS: ctx.endpoints.join(',') }),
    )
    const run = await acrossProcesses(ctx, prefix, children, total)
    ours.push(run.perSecond)
    rpcs.lib = run.rpcs
    const goPrefix = ctx.prefix('go-procs')
    const cmd = ctx.gopeer.command(['-scenario', 'lock-contended', '-gate', '-c', String(c), '-n', '1', '-prefix', goPrefix])
    if (!cmd) continue
    try {
      await ctx.client.put(`${goPrefix}/counter`).value('0')
      const goRun = await acrossProcesses(
        ctx,
        goPrefix,
        Array.from({ length: procs }, () => gatedProcess(cmd[0], cmd[1])),
        total,
      )
      go.push(goRun.perSecond)
      rpcs.go = goRun.rpcs
    } catch (err) {
      goWhy = `Go processes failed: ${(err as Error).message.slice(0, 200)}`
      ctx.log(goWhy)
    }
  }
  const name = `contended, serverless shape: ${procs} processes x ${c} workers x 1 lock/increment/unlock`
  const peer = `Go lock-contended -gate -c ${c} -n 1, ${procs} processes`
  const note =
    `${name}: each process connects, then all start together (a line on stdin); throughput over the span from the first start to the last end, ${repeats} runs, Go's between ours. ` +
    `lib ${median(ours).toFixed(1)}/s (runs ${ours.map((x) => x.toFixed(0)).join(', ')}); Go ${go.length ? `${median(go).toFixed(1)}/s (runs ${go.map((x) => x.toFixed(0)).join(', ')})` : `not measured (${goWhy})`}. ` +
    `etcd requests per lock/increment/unlock (last run): lib ${rpcs.lib ? `${formatRpcs(rpcs.lib)} (total ${totalOf(rpcs.lib)})` : 'n/a'}; Go ${rpcs.go ? `${formatRpcs(rpcs.go)} (total ${totalOf(rpcs.go)})` : 'n/a'}.`
  return {
    entries: [entry(name, 'handoffs/s', ours, peer, go, { kind: 'none' }, go.length ? undefined : goWhy)],
    note,
    details: { lib: ours, go, rpcsPerOp: rpcs },
  }
}

/** 100 one-shot workers: session, lock, increment, unlock (Go `lock-contended -c 100 -n 1`), in one process and in 4. */
export const lockContended: Scenario = {
  name: 'lock-contended',
  async run(ctx) {
    const r = await measure(ctx, { label: 'contended', c: 100, n: 1, repeats: 5, minRatio: 1, messagesRow: true })
    const p = await measureProcesses(ctx, 4, 25, 3)
    return { entries: [...r.entries, ...p.entries], notes: [r.note, p.note], details: { oneProcess: r.details, processes: p.details } }
  },
}

/** A hot lock: every worker re-locks at once (Go `lock-contended -c 2 -n 50` and `-c 10 -n 100`). */
export const hotLock: Scenario = {
  name: 'hot-lock',
  async run(ctx) {
    const a = await measure(ctx, {
      label: 'hot lock',
      c: 2,
      n: Math.max(10, Math.round(50 * Math.min(1, ctx.scale * 2))),
      repeats: 3,
      minRatio: 5,
    })
    const b = await measure(ctx, {
      label: 'hot lock',
      c: 10,
      n: Math.max(10, Math.round(100 * Math.min(1, ctx.scale * 2))),
      repeats: 3,
      minRatio: 5,
    })
    return { entries: [...a.entries, ...b.entries], notes: [a.note, b.note], details: { c2: a.details, c10: b.details } }
  },
}
