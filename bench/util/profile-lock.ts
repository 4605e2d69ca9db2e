// Development aid (not part of `npm run bench`): runs one lock/increment/unlock shape against a
// fresh etcd, e.g. under `node --cpu-prof --import tsx bench/util/profile-lock.ts 100 1 5`.
import { createClient } from '../../lib/index.js'
import { startEtcd } from '../../testing/index.js'
import { libMutex, lockCounter } from './workload.js'
import { pct } from './stats.js'

const [c, n, repeats] = process.argv.slice(2).map(Number)
const cluster = await startEtcd({ nodes: 1 })
const client = createClient({ endpoints: cluster.endpoints })
try {
  for (let r = 0; r < repeats; r++) {
    const run = await lockCounter(client, libMutex, `profile-${r}-${Date.now()}`, c, n)
    console.log(
      `${c}x${n}: ${run.perSecond.toFixed(1)}/s, ${(run.seconds * 1000).toFixed(0)} ms, handoff p50 ${pct(run.handoffs, 0.5).toFixed(2)} ms, sum ${run.handoffs.reduce((a, b) => a + b, 0).toFixed(0)} ms, CPU ${(run.cpuShare * 100).toFixed(0)}% of a core`,
    )
  }
} finally {
  client.close()
  await cluster.stop()
}
