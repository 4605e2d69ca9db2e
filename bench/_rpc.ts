import { Etcd3 } from 'etcd3'
import { createClient } from '../lib/index.js'
import { keyspace } from '../lib/kv.js'
import { pct } from './util/stats.js'
const ep = 'http://127.0.0.1:23790'
const ours = createClient({ endpoints: ep })
const plain = new Etcd3({ hosts: ep })
const ks = keyspace(ours)
async function t(label: string, op: () => Promise<unknown>, n = 2000) {
  for (let i = 0; i < 200; i++) await op()
  const xs: number[] = []
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < n; i++) { const s = performance.now(); await op(); xs.push(performance.now() - s) }
  const wall = performance.now() - t0
  const cpu = process.cpuUsage(c0)
  console.log(label.padEnd(28), 'p50', pct(xs, .5).toFixed(3), 'p99', pct(xs, .99).toFixed(3), 'cpu/op ms', ((cpu.user + cpu.system) / 1000 / n).toFixed(3))
}
await t('ours builder put', async () => { await ours.put('rk').value('v') })
await t('plain etcd3 builder put', async () => { await plain.put('rk').value('v') })
await t('ours raw kv.put', () => ours.kv.put({ key: Buffer.from('rk'), value: Buffer.from('v') }))
await t('plain raw kv.put', () => plain.kv.put({ key: Buffer.from('rk'), value: Buffer.from('v') }))
await t('ours raw kv.range', () => ours.kv.range({ key: Buffer.from('rk') }))
await t('ks.txn put', () => ks.txn([], [ks.put('rk', 'v')]))
ours.close(); plain.close()
