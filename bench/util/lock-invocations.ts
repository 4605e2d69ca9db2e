/**
 * A child of the telemetry bench: warm `etcdLock` invocations of a no-op handler, sequentially,
 * in rounds; prints one JSON line with each round's p50 (ms) and CPU per invocation (ms), and
 * whether the library found `@opentelemetry/api`.
 *
 *   node --import tsx [--import <preload>] bench/util/lock-invocations.ts <endpoint> <name> <n> <rounds>
 */
import middy from '@middy/core'
import { createClient, telemetryReady } from '../../lib/index.js'
import { etcdLock } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { pct } from './stats.js'

const [endpoint, name, n, rounds] = process.argv.slice(2)
const client = createClient({ endpoints: [endpoint] })
const fn = middy(async () => 'ok').use(etcdLock({ name, client }))
for (let i = 0; i < 100; i++) await fn({}, lambdaContext())
const p50: number[] = []
const cpuMs: number[] = []
for (let r = 0; r < Number(rounds); r++) {
  const lat: number[] = []
  const cpu0 = process.cpuUsage()
  for (let i = 0; i < Number(n); i++) {
    const t0 = performance.now()
    await fn({}, lambdaContext())
    lat.push(performance.now() - t0)
  }
  const cpu = process.cpuUsage(cpu0)
  p50.push(pct(lat, 0.5))
  cpuMs.push((cpu.user + cpu.system) / 1000 / Number(n))
}
client.close()
process.stdout.write(`${JSON.stringify({ p50, cpuMs, telemetry: await telemetryReady() })}\n`)
