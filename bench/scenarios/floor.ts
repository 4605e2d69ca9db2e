import { entry, type Scenario } from '../util/types.js'
import { median, summarize, timeSequential, type Latency } from '../util/stats.js'
import { runGo } from '../util/go.js'
import type { GoResult } from '../util/gopeer.js'

/** Runs of the floor: later targets divide by their median. */
const RUNS = 3

/** What later scenarios read from the floor: medians over its runs. */
export interface FloorDetails {
  /** Median over the runs of each run's p50 / p99 (ms). */
  p50: number
  p99: number
  /** Median over the runs of Node CPU per put (ms). */
  cpuMsPerPut: number
  runs: { ours: Latency; cpuMsPerPut: number }[]
  go: GoResult[]
}

/** The floor: one `put` round trip, sequentially, on the shared client (and the Go peer's). */
export const floor: Scenario = {
  name: 'floor',
  async run(ctx) {
    const n = Math.max(200, Math.round(3000 * ctx.scale))
    const key = `${ctx.prefix('floor')}/k`
    const runs: FloorDetails['runs'] = []
    const goRuns: GoResult[] = []
    let why: string | undefined
    for (let r = 0; r < RUNS; r++) {
      const cpu0 = process.cpuUsage()
      const ours = summarize(await timeSequential(n, async () => { await ctx.client.put(key).value('v') }, 200))
      const cpu = process.cpuUsage(cpu0)
      // Node CPU per put (warm-up included in both): what one etcd request costs this process.
      runs.push({ ours, cpuMsPerPut: (cpu.user + cpu.system) / 1000 / (n + 200) })
      const go = await runGo(ctx, ['-scenario', 'put', '-n', String(n)])
      if (go.result) goRuns.push(go.result)
      else why = go.why
    }
    const details: FloorDetails = {
      p50: median(runs.map((r) => r.ours.p50)),
      p99: median(runs.map((r) => r.ours.p99)),
      cpuMsPerPut: median(runs.map((r) => r.cpuMsPerPut)),
      runs,
      go: goRuns,
    }
    const goP50 = goRuns.map((g) => g.p50_ms!)
    const goP99 = goRuns.map((g) => g.p99_ms!)
    const name = 'floor: one put (etcd3 client)'
    return {
      entries: [
        entry(name, 'p50 ms', runs.map((r) => r.ours.p50), 'Go put', goP50, { kind: 'none' }, why),
        entry(name, 'p99 ms', runs.map((r) => r.ours.p99), 'Go put', goP99, { kind: 'none' }, why),
        entry(name, 'CPU ms per put', runs.map((r) => r.cpuMsPerPut), '—', null, { kind: 'none' }),
      ],
      notes: [
        `${RUNS} runs of ${n} sequential puts of one key (medians): Node/etcd3 p50 ${details.p50.toFixed(3)} ms, p99 ${details.p99.toFixed(3)} ms` +
          (goRuns.length ? `; Go clientv3 p50 ${median(goP50)} ms, p99 ${median(goP99)} ms.` : '.') +
          ` Node CPU per put: ${details.cpuMsPerPut.toFixed(3)} ms (grpc-js + protobufjs + etcd3 builder) — the client's cost of one request, apart from any algorithm; with one process running every worker, this, not the network, bounds the throughput scenarios.` +
          ' Every "x one put" target below divides by the median p50, and every CPU target by the median CPU per put (same client, same server, same run).',
      ],
      details: details as unknown as Record<string, unknown>,
    }
  },
}
