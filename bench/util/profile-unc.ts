// Development aid (not part of `npm run bench`): alternates lock+unlock, two puts and a warm
// etcdLock invocation on a fresh etcd and prints p50 and CPU per op of each, e.g. under
// `node --cpu-prof --import tsx bench/util/profile-unc.ts 2000 5`.
import middy from '@middy/core'
import { createClient, Mutex, Session } from '../../lib/index.js'
import { etcdLock } from '../../middleware/index.js'
import { lambdaContext, startEtcd } from '../../testing/index.js'
import { summarize, timeSequential } from './stats.js'

const [n, rounds] = process.argv.slice(2).map(Number)
const only = process.argv[4]?.split(',')
const cluster = await startEtcd({ nodes: 1 })
const client = createClient({ endpoints: cluster.endpoints })
try {
  const session = await Session.create(client)
  const m = new Mutex(session, 'unc')
  const fn = middy(async () => 'ok').use(etcdLock({ name: 'inv', client }))
  const cases: Record<string, () => Promise<unknown>> = {
    lockUnlock: async () => {
      await m.lock()
      await m.unlock()
    },
    twoPuts: async () => {
      await client.put('p').value('1')
      await client.put('p').value('2')
    },
    invocation: () => fn({}, lambdaContext()),
  }
  for (let r = 0; r < rounds; r++) {
    const line: string[] = []
    for (const [name, op] of Object.entries(cases)) {
      if (only && !only.includes(name)) continue
      const cpu0 = process.cpuUsage()
      const lat = summarize(await timeSequential(n, op, 50))
      const cpu = process.cpuUsage(cpu0)
      line.push(`${name} p50 ${lat.p50.toFixed(3)} cpu ${((cpu.user + cpu.system) / 1000 / (n + 50)).toFixed(3)}`)
    }
    console.log(line.join(' | '))
  }
  await session.close()
} finally {
  client.close()
  await cluster.stop()
}
