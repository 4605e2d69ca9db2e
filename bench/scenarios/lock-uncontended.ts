import { Mutex, Session } from '../../lib/index.js'
import { entry, type Scenario } from '../util/types.js'
import { median, summarize, timeSequential, type Latency } from '../util/stats.js'
import { floorLockTxns, runGo } from '../util/go.js'
import type { GoResult } from '../util/gopeer.js'

/** Runs of each side, alternating (ours, two puts, Go). */
const RUNS = 3

/**
 * lock + unlock on one long-lived session, sequentially (Go `lock-uncontended`), against the
 * client's own floor for two round trips: two sequential puts on the same client.
 */
export const lockUncontended: Scenario = {
  name: 'lock-uncontended',
  async run(ctx) {
    const n = Math.max(200, Math.round(2000 * ctx.scale))
    const session = await Session.create(ctx.client)
    const m = new Mutex(session, ctx.prefix('unc'))
    const key = ctx.prefix('unc-put')
    const ours: Latency[] = []
    const puts: Latency[] = []
    const cpu: number[] = []
    const goRuns: GoResult[] = []
    let goWhy: string | undefined
    try {
      for (let r = 0; r < RUNS; r++) {
        const cpu0 = process.cpuUsage()
        ours.push(
          summarize(
            await timeSequential(
              n,
              async () => {
                await m.lock()
                await m.unlock()
              },
              50,
            ),
          ),
        )
        const used = process.cpuUsage(cpu0)
        cpu.push((used.user + used.system) / 1000 / (n + 50))
        puts.push(
          summarize(
            await timeSequential(
              n,
              async () => {
                await ctx.client.put(key).value('1')
                await ctx.client.put(key).value('2')
              },
              50,
            ),
          ),
        )
        const go = await runGo(ctx, ['-scenario', 'lock-uncontended', '-n', String(n)])
        if (go.result) goRuns.push(go.result)
        else goWhy = go.why
      }
    } finally {
      await session.close()
    }
    const label = 'lock + unlock, long-lived session'
    const p50 = ours.map((l) => l.p50)
    const putsP50 = puts.map((l) => l.p50)
    const goP50 = goRuns.map((g) => g.p50_ms!)
    const rawPair = floorLockTxns(ctx)
    return {
      entries: [
        entry(label, 'p50 ms', p50, 'two sequential puts (etcd3 client)', putsP50, { kind: 'max-ratio', ratio: 1.05 }),
        entry(label, 'p50 ms', p50, "the lock's two Txns sent raw (floor)", rawPair?.p50 ?? null, { kind: 'none' }),
        entry(label, 'CPU ms per pair', cpu, "CPU of the lock's two Txns sent raw (floor)", rawPair?.cpuMs ?? null, { kind: 'none' }),
        entry(label, 'p50 ms', p50, 'Go lock-uncontended', goP50, { kind: 'none' }, goWhy),
        entry(
          label,
          'p99 ms',
          ours.map((l) => l.p99),
          'Go lock-uncontended',
          goRuns.map((g) => g.p99_ms!),
          { kind: 'none' },
          goWhy,
        ),
      ],
      notes: [
        `${RUNS} runs each of ${n} sequential lock()+unlock() pairs on one Session/Mutex, two sequential puts, and Go's Lock+Unlock, alternating (medians): ours p50 ${median(p50).toFixed(3)} ms (Node CPU ${median(cpu).toFixed(3)} ms per pair), two puts p50 ${median(putsP50).toFixed(3)} ms, Go p50 ${goP50.length ? median(goP50) : 'n/a'} ms. ` +
          "Both lock and unlock are one round trip (the lock Txn puts the key and reads the youngest keys, the unlock Txn deletes it fenced by its create revision), as Go's Lock+Unlock; two puts are the same client's floor for two round trips" +
          (goP50.length ? ` (${(median(putsP50) / median(goP50)).toFixed(2)}x Go's lock+unlock before any lock logic).` : '.'),
      ],
      details: { ours, twoPuts: puts, cpuMsPerPair: cpu, go: goRuns },
    }
  },
}
