/**
 * `npm run bench`: starts its own etcd, runs every scenario against it in this one process,
 * and writes docs/BENCHMARKS.md + docs/benchmarks.json.
 *
 *   node --import tsx bench/run.ts [--quick] [--only a,b] [--out DIR]
 *
 * --quick scales operation counts down (for development) and, unless --out is given, writes to
 * node_modules/.cache/middy-etcd-bench instead of docs/.
 */
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { createClient, type EtcdClient } from '../lib/index.js'
import { startEtcd } from '../testing/index.js'
import { buildGoPeer } from './util/gopeer.js'
import { cacheDir, root } from './util/build.js'
import { entry, type BenchContext, type Scenario, type ScenarioResult } from './util/types.js'
import { machineInfo, writeReport } from './report.js'
import { floor } from './scenarios/floor.js'
import { lockInvocation } from './scenarios/lock-invocation.js'
import { lockUncontended } from './scenarios/lock-uncontended.js'
import { hotLock, lockContended } from './scenarios/lock-contention.js'
import { queue } from './scenarios/queue.js'
import { queueScale } from './scenarios/queue-scale.js'
import { stm } from './scenarios/stm.js'
import { idempotency } from './scenarios/idempotency.js'
import { electionFailover } from './scenarios/election-failover.js'
import { dispatcherHandover } from './scenarios/dispatcher-handover.js'
import { coldStart } from './scenarios/cold-start.js'
import { packageSize } from './scenarios/package-size.js'
import { semaphore } from './scenarios/semaphore.js'
import { scaling } from './scenarios/scaling.js'
import { transport } from './scenarios/transport.js'
import { config } from './scenarios/config.js'
import { telemetry } from './scenarios/telemetry.js'
import { redis } from './scenarios/redis.js'

/**
 * In report order; the floor first, since later scenarios divide by it; queue-scale last, as it
 * leaves a million keys on the server.
 */
const scenarios: Scenario[] = [
  floor,
  transport,
  lockInvocation,
  telemetry,
  lockUncontended,
  lockContended,
  hotLock,
  queue,
  stm,
  idempotency,
  config,
  electionFailover,
  dispatcherHandover,
  semaphore,
  coldStart,
  packageSize,
  scaling,
  redis,
  queueScale,
]

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}

async function main() {
  const quick = process.argv.includes('--quick')
  const only = arg('--only')?.split(',')
  const out = arg('--out') ?? (quick ? cacheDir : join(root, 'docs'))
  const log = (m: string) => process.stderr.write(`[bench] ${m}\n`)
  const started = Date.now()
  const before = machineInfo()
  log(`starting etcd (${before.etcd})`)
  const cluster = await startEtcd({ nodes: 1 })
  const clients: EtcdClient[] = []
  const newClient = () => {
    const c = createClient({ endpoints: cluster.endpoints })
    clients.push(c)
    return c
  }
  const run = randomUUID().slice(0, 6)
  const results = new Map<string, ScenarioResult>()
  const ctx: BenchContext = {
    endpoints: cluster.endpoints,
    client: newClient(),
    newClient,
    gopeer: await buildGoPeer(cluster.endpoints, log),
    scale: quick ? 0.1 : 1,
    prefix: (label) => `bench-${run}/${label}-${randomUUID().slice(0, 6)}`,
    log,
    results,
  }
  if (ctx.gopeer.unavailable) log(`Go peer: ${ctx.gopeer.unavailable}`)
  const timings: Record<string, number> = {}
  try {
    for (const s of scenarios) {
      if (only && !only.includes(s.name)) continue
      log(`scenario ${s.name}…`)
      const t0 = Date.now()
      try {
        results.set(s.name, await s.run(ctx))
      } catch (err) {
        // A failed scenario is reported as failed, with no numbers, and the run goes on.
        log(`scenario ${s.name} FAILED: ${(err as Error).stack}`)
        results.set(s.name, {
          entries: [entry(s.name, '—', null, '—', null, { kind: 'none' }, `scenario failed: ${(err as Error).message}`)],
          notes: [`FAILED: ${(err as Error).message}`],
        })
      }
      timings[s.name] = (Date.now() - t0) / 1000
      log(`  ${s.name} took ${timings[s.name].toFixed(1)} s`)
      for (const e of results.get(s.name)!.entries)
        log(
          `  ${e.name} | ${e.metric} | ours ${e.ours} | ${e.peer} ${e.peerValue} | ratio ${e.ratio} | ${e.target} ${e.met}${e.note ? ` | ${e.note}` : ''}`,
        )
    }
  } finally {
    for (const c of clients) c.close()
    await cluster.stop()
  }
  const files = writeReport(out, {
    results,
    scenarios: scenarios.map((s) => s.name).filter((n) => results.has(n)),
    machine: { ...machineInfo(), loadBefore: before.load },
    gopeer: ctx.gopeer.unavailable,
    seconds: (Date.now() - started) / 1000,
    timings,
    quick,
  })
  log(`wrote ${files.join(', ')} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`[bench] ${(err as Error).stack}\n`)
    process.exit(1)
  },
)
