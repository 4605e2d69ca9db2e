import middy from '@middy/core'
import { createClient, Session, Mutex } from '../lib/index.js'
import { etcdLock } from '../middleware/index.js'
import { lambdaContext } from './util/lambda.js'
import { countRpcs, formatRpcs } from './util/rpcs.js'
import { summarize, timeSequential } from './util/stats.js'
import { Mutex as Patched } from './patched/mutex.js'
import { lockCounter } from './util/workload.js'
const ep = 'http://127.0.0.1:23790'
const client = createClient({ endpoints: ep })
const fn = middy(async () => 'ok').use(etcdLock({ name: `inv-${Date.now()}`, client }))
for (let i = 0; i < 50; i++) await fn({}, lambdaContext())
const a = await countRpcs(ep, 500, () => timeSequential(500, () => fn({}, lambdaContext()), 0))
console.log('etcdLock invocation', summarize(a.result).p50.toFixed(3), formatRpcs(a.perOp))
const s = await Session.create(client); const m = new Mutex(s, `unc-${Date.now()}`)
const b = await countRpcs(ep, 500, () => timeSequential(500, async () => { await m.lock(); await m.unlock() }, 0))
console.log('lock+unlock', summarize(b.result).p50.toFixed(3), formatRpcs(b.perOp))
await s.close()
for (const [label, make] of [['lib', (s: Session, n: string) => new Mutex(s, n)], ['patched', (s: Session, n: string) => new Patched(s, n)]] as const) {
  const c = await countRpcs(ep, 200, () => lockCounter(client, make, `hot-${label}-${Date.now()}`, 2, 100))
  console.log('hot 2x100', label, c.result.perSecond.toFixed(1), 'cpu', c.result.cpuShare.toFixed(2), formatRpcs(c.perOp))
}
client.close()
