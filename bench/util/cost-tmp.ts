import { createClient, Mutex, Session } from '../../lib/index.js'
import { keyspace } from '../../lib/kv.js'
import { startEtcd } from '../../testing/index.js'
const cluster = await startEtcd({ nodes: 1 })
const client = createClient({ endpoints: cluster.endpoints })
const ks = keyspace(client)
const s = await Session.create(client)
const m = new Mutex(s, 'm')
const N = 3000
const cases: Record<string, () => Promise<unknown>> = {
  twoPuts: async () => { await client.put('p').value('1'); await client.put('p').value('2') },
  rawTxns: async () => {
    const y = ks.get('r/', { prefix: true, sort: ['Create', 'Descend'], limit: 16, keysOnly: true })
    const res = await ks.txn([ks.compare('r/x', 'Create', '==', 0)], [ks.put('r/x', '', s.leaseId), y], [y])
    await ks.txn([ks.compare('r/x', 'Create', '==', res.revision)], [ks.delete('r/x')], [])
  },
  rawPutDel: async () => { await ks.txn([], [ks.put('q', '1')]); await ks.del('q') },
  mutex: async () => { await m.lock(); await m.unlock() },
}
for (let r = 0; r < 5; r++) {
  const out: string[] = []
  for (const [name, op] of Object.entries(cases)) {
    for (let i = 0; i < 100; i++) await op()
    const c0 = process.cpuUsage(); const t0 = performance.now()
    for (let i = 0; i < N; i++) await op()
    const c = process.cpuUsage(c0)
    out.push(`${name}: ${((c.user + c.system) / 1000 / N).toFixed(3)} (${((performance.now() - t0) / N).toFixed(3)})`)
  }
  console.log(out.join(' | '))
}
await s.close(); client.close(); await cluster.stop()
