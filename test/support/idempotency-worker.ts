/**
 * A child-process function behind etcdIdempotency, for the crash tests: the test can SIGKILL
 * it mid-handler, and can start it with a skewed wall clock (`skewed-clock.ts`). Run through
 * `Worker.start(endpoints, '', { script: 'idempotency-worker.ts' })`. One JSON command per stdin
 * line, one JSON event per stdout line.
 */
import { createInterface } from 'node:readline'
import middy from '@middy/core'
import { createClient } from '../../lib/index.js'
import { etcdIdempotency } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'

const config = JSON.parse(process.argv[2] ?? '{}') as { endpoints: string[] }
const client = createClient({ endpoints: config.endpoints, env: {} })
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`)

interface Invoke {
  op: 'invoke'
  key: string
  prefix: string
  leaseTtl: number
  /** true: the handler never returns (until the process is killed). */
  hang: boolean
  timeoutMs?: number
}

async function invoke(cmd: Invoke) {
  const handler = middy(async () => {
    say({ event: 'running', key: cmd.key, pid: process.pid, wallClock: Date.now() })
    if (cmd.hang) await new Promise(() => {})
    return { ranBy: process.pid }
  }).use(etcdIdempotency({ key: () => cmd.key, prefix: cmd.prefix, leaseTtl: cmd.leaseTtl, client }))
  const response = await handler({}, lambdaContext(cmd.timeoutMs ?? 60_000))
  say({ event: 'result', key: cmd.key, response })
}

say({ event: 'ready', pid: process.pid, wallClock: Date.now() })
createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as Invoke
  invoke(cmd).catch((err: Error) => say({ event: 'error', op: cmd.op, name: err.name, message: err.message }))
})
