import { entry, type Scenario } from '../util/types.js'
import { summarize, timeSequential } from '../util/stats.js'
import { runGo } from '../util/go.js'

/** The floor: one `put` round trip, sequentially, on the shared client (and the Go peer's). */
export const floor: Scenario = {
  name: 'floor',
  async run(ctx) {
    const n = Math.max(200, Math.round(3000 * ctx.scale))
    const key = `${ctx.prefix('floor')}/k`
    const cpu0 = process.cpuUsage()
    const ours = summarize(await timeSequential(n, async () => { await ctx.client.put(key).value('v') }, 200))
    const cpu = process.cpuUsage(cpu0)
    // Node CPU per put (warm-up included in both): what one etcd request costs this process.
    const cpuMsPerPut = (cpu.user + cpu.system) / 1000 / (n + 200)
    const go = await runGo(ctx, ['-scenario', 'put', '-n', String(n)])
    const g = go.result
    return {
      entries: [
        entry('floor: one put (etcd3 client)', 'p50 ms', ours.p50, 'Go put', g?.p50_ms ?? null, { kind: 'none' }, go.why),
        entry('floor: one put (etcd3 client)', 'p99 ms', ours.p99, 'Go put', g?.p99_ms ?? null, { kind: 'none' }, go.why),
      ],
      notes: [
        `${n} sequential puts of one key. Node/etcd3 p50 ${ours.p50.toFixed(3)} ms, p99 ${ours.p99.toFixed(3)} ms` +
          (g ? `; Go clientv3 p50 ${g.p50_ms} ms, p99 ${g.p99_ms} ms.` : '.') +
          ` Node CPU per put: ${cpuMsPerPut.toFixed(3)} ms (grpc-js + protobufjs + etcd3 builder) — with one process running every worker, this, not the network, bounds the throughput scenarios.` +
          ' Every "x one put" target below divides by the Node p50 (same client, same server, same run).',
      ],
      details: { ours, go: g, cpuMsPerPut },
    }
  },
}
