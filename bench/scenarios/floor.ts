import { Session, type EtcdClient } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { AHEAD_READ_LIMIT } from '../../lib/wait/turn.js'
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
  /** The same for the lock's two Txns sent raw (see {@link lockShapedPair}): p50 per pair, CPU per pair. */
  lockTxnsP50: number
  lockTxnsCpuMs: number
  runs: { ours: Latency; cpuMsPerPut: number; lockTxns: Latency; lockTxnsCpuMs: number }[]
  go: GoResult[]
}

/**
 * The two requests a Mutex lock + unlock sends, built as lib/locks/mutex.ts builds them but sent
 * straight through etcd3's `kv.txn` with no lock logic around them: the lock Txn (create the key
 * if absent, and read the youngest keys of the prefix, keys only) and the unlock Txn (delete the
 * key fenced by its create revision). The client's floor for the lock's request shapes, as two
 * puts are its floor for two round trips.
 */
export function lockShapedPair(client: EtcdClient, session: Session, name: string): () => Promise<void> {
  const ks = keyspace(client)
  const key = `${name}/${session.leaseHex}`
  return async () => {
    const youngest = ks.get(`${name}/`, { prefix: true, sort: ['Create', 'Descend'], limit: AHEAD_READ_LIMIT, keysOnly: true })
    const locked = await client.kv.txn({
      compare: [ks.compare(key, 'Create', '==', 0)],
      success: [ks.put(key, '', session.leaseId), youngest],
      failure: [youngest],
    })
    await client.kv.txn({
      compare: [ks.compare(key, 'Create', '==', BigInt(locked.header.revision))],
      success: [ks.deleteOp(key)],
      failure: [],
    })
  }
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
    const session = await Session.create(ctx.client)
    const lockTxns = lockShapedPair(ctx.client, session, ctx.prefix('floor-lock'))
    try {
      for (let r = 0; r < RUNS; r++) {
        let cpu0 = process.cpuUsage()
        const ours = summarize(
          await timeSequential(
            n,
            async () => {
              await ctx.client.put(key).value('v')
            },
            200,
          ),
        )
        const cpu = process.cpuUsage(cpu0)
        cpu0 = process.cpuUsage()
        const pairs = summarize(await timeSequential(n / 2, lockTxns, 100))
        const pairCpu = process.cpuUsage(cpu0)
        // Node CPU per op (warm-up included in both): what one etcd request costs this process.
        runs.push({
          ours,
          cpuMsPerPut: (cpu.user + cpu.system) / 1000 / (n + 200),
          lockTxns: pairs,
          lockTxnsCpuMs: (pairCpu.user + pairCpu.system) / 1000 / (n / 2 + 100),
        })
        const go = await runGo(ctx, ['-scenario', 'put', '-n', String(n)])
        if (go.result) goRuns.push(go.result)
        else why = go.why
      }
    } finally {
      await session.close()
    }
    const details: FloorDetails = {
      p50: median(runs.map((r) => r.ours.p50)),
      p99: median(runs.map((r) => r.ours.p99)),
      cpuMsPerPut: median(runs.map((r) => r.cpuMsPerPut)),
      lockTxnsP50: median(runs.map((r) => r.lockTxns.p50)),
      lockTxnsCpuMs: median(runs.map((r) => r.lockTxnsCpuMs)),
      runs,
      go: goRuns,
    }
    const goP50 = goRuns.map((g) => g.p50_ms!)
    const goP99 = goRuns.map((g) => g.p99_ms!)
    const name = 'floor: one put (etcd3 client)'
    const pairName = "floor: the lock's two Txns sent raw (etcd3 client, no lock logic)"
    return {
      entries: [
        entry(
          name,
          'p50 ms',
          runs.map((r) => r.ours.p50),
          'Go put',
          goP50,
          { kind: 'none' },
          why,
        ),
        entry(
          name,
          'p99 ms',
          runs.map((r) => r.ours.p99),
          'Go put',
          goP99,
          { kind: 'none' },
          why,
        ),
        entry(
          name,
          'CPU ms per put',
          runs.map((r) => r.cpuMsPerPut),
          '—',
          null,
          { kind: 'none' },
        ),
        entry(
          pairName,
          'p50 ms per pair',
          runs.map((r) => r.lockTxns.p50),
          'one put (floor)',
          details.p50,
          { kind: 'none' },
        ),
        entry(
          pairName,
          'CPU ms per pair',
          runs.map((r) => r.lockTxnsCpuMs),
          'CPU of two puts (floor)',
          2 * details.cpuMsPerPut,
          { kind: 'none' },
        ),
      ],
      notes: [
        `${RUNS} runs of ${n} sequential puts of one key (medians): Node/etcd3 p50 ${details.p50.toFixed(3)} ms, p99 ${details.p99.toFixed(3)} ms` +
          (goRuns.length ? `; Go clientv3 p50 ${median(goP50)} ms, p99 ${median(goP99)} ms.` : '.') +
          ` Node CPU per put: ${details.cpuMsPerPut.toFixed(3)} ms (grpc-js + protobufjs + etcd3 builder) — the client's cost of one request, apart from any algorithm; with one process running every worker, this, not the network, bounds the throughput scenarios.` +
          ' Every "x one put" target below divides by the median p50, and every CPU target by the median CPU per put (same client, same server, same run).' +
          ` The lock's two requests (lock Txn: create the key if absent + read the ${AHEAD_READ_LIMIT} youngest keys, keys only; unlock Txn: delete fenced by create revision), built as lib/locks/mutex.ts builds them and sent straight through etcd3's kv.txn with no lock logic: p50 ${details.lockTxnsP50.toFixed(3)} ms and Node CPU ${details.lockTxnsCpuMs.toFixed(3)} ms per pair (${(details.lockTxnsCpuMs / (2 * details.cpuMsPerPut)).toFixed(2)}x the CPU of two puts): the client's floor for the lock's request shapes.`,
      ],
      details: details as unknown as Record<string, unknown>,
    }
  },
}
