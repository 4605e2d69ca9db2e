// Development aid (not part of `npm run bench`): where the wall time of a lock + unlock goes,
// as the median µs of each phase between sending and answering the two Txns, e.g.
// `node --import tsx bench/util/trace-invocation.ts 3000 invocation` (modes: invocation, a warm
// etcdLock invocation; mutex, Mutex lock + unlock on one session; raw, the same two Txns sent
// straight through etcd3: bench/scenarios/floor.ts `lockShapedPair`).
import middy from '@middy/core'
import { createClient, Mutex, Session } from '../../lib/index.js'
import { lockShapedPair } from '../scenarios/floor.js'
import { etcdLock } from '../../middleware/index.js'
import { lambdaContext, startEtcd } from '../../testing/index.js'

const n = Number(process.argv[2] ?? 2000)
const cluster = await startEtcd({ nodes: 1 })
const client = createClient({ endpoints: cluster.endpoints })
const marks: [string, number][] = []
const mark = (what: string) => marks.push([what, performance.now()])
const kv = client.kv as unknown as { txn: (r: unknown) => Promise<unknown> }
const txn = kv.txn.bind(kv)
let i = 0
kv.txn = async (r) => {
  const k = i++ % 2 === 0 ? 'lock' : 'unlock'
  mark(`${k} sent`)
  const res = await txn(r)
  mark(`${k} answered`)
  return res
}
const mode = process.argv[3] ?? 'invocation'
const session = await Session.create(client, { ttl: 10 })
const m = new Mutex(session, 'trace-mutex')
const ops: Record<string, () => Promise<unknown>> = {
  invocation: (() => {
    const f = middy(async () => {
      mark('handler')
      return 'ok'
    }).use(etcdLock({ name: 'trace', client }))
    return () => f({}, lambdaContext())
  })(),
  mutex: async () => {
    await m.lock()
    mark('handler')
    await m.unlock()
  },
  raw: lockShapedPair(client, session, 'trace-raw'),
}
const fn = ops[mode]
const phases = new Map<string, number[]>()
for (let j = 0; j < n; j++) {
  marks.length = 0
  mark('start')
  await fn()
  mark('end')
  for (let m = 1; m < marks.length; m++) {
    const key = `${marks[m - 1][0]} -> ${marks[m][0]}`
    if (!phases.has(key)) phases.set(key, [])
    phases.get(key)!.push((marks[m][1] - marks[m - 1][1]) * 1000)
  }
}
for (const [k, xs] of phases) {
  xs.sort((a, b) => a - b)
  console.log(k.padEnd(34), 'p50', xs[Math.floor(xs.length / 2)].toFixed(0).padStart(6), 'µs  n', xs.length)
}
client.close()
await cluster.stop()
