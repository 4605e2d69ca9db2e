// One of several processes contending for one lock (bench/scenarios/lock-contention.ts):
//   node --import tsx bench/util/lock-process.ts PREFIX WORKERS OPS
// Connects, prints {"ready":true}, waits for a line on stdin, runs the lock/increment/unlock
// workload with WORKERS workers x OPS (the counter is left as the bench set it) and prints the
// run as one JSON line.
import { createInterface } from 'node:readline'
import { createClient } from '../../lib/index.js'
import { libMutex, lockCounter } from './workload.js'

const [prefix, workers, ops] = process.argv.slice(2)
const client = createClient({ endpoints: process.env.ETCD_ENDPOINTS })
// Connected before the start, as the Go program's dial is.
await client.get(`${prefix}/counter`).string()
console.log(JSON.stringify({ ready: true }))
await new Promise<void>((resolve) => createInterface({ input: process.stdin }).once('line', () => resolve()))
const run = await lockCounter(client, libMutex, prefix, Number(workers), Number(ops), { resetCounter: false })
console.log(
  JSON.stringify({ ops: run.ops, seconds: run.seconds, startUnixMs: run.startUnixMs, endUnixMs: run.endUnixMs, cpuShare: run.cpuShare }),
)
client.close()
process.exit(0)
