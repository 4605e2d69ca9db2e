import middy from '@middy/core'
import { createClient, Session, Mutex } from '../lib/index.js'
import { etcdLock } from '../middleware/index.js'
import { lambdaContext } from './util/lambda.js'
import { summarize, timeSequential } from './util/stats.js'
const ep = 'http://127.0.0.1:23790'
const client = createClient({ endpoints: ep })
const mode = process.argv[2]
if (mode === 'mw') {
  const fn = middy(async () => 'ok').use(etcdLock({ name: `inv-${Date.now()}`, client }))
  console.log('mw', summarize(await timeSequential(3000, () => fn({}, lambdaContext()), 100)).p50)
} else {
  const s = await Session.create(client); const m = new Mutex(s, `unc-${Date.now()}`)
  console.log('raw', summarize(await timeSequential(3000, async () => { await m.lock(); await m.unlock() }, 100)).p50)
  await s.close()
}
client.close()
process.exit(0)
