/**
 * A child process holding a PrefixCache, for the freeze tests of test/config: SIGSTOP it (a
 * Lambda frozen between invocations), change etcd, SIGCONT it, ask it for `current()`. Speaks
 * the protocol of `workers.ts`: one JSON command per stdin line, one JSON event per stdout line.
 */
import { createInterface } from 'node:readline'
import { createClient, PrefixCache } from '../../lib/index.js'

const config = JSON.parse(process.argv[2] ?? '{}') as { endpoints: string[]; namespace?: string }
const client = createClient({ endpoints: config.endpoints, namespace: config.namespace ?? '', env: {} })
let cache: PrefixCache<string> | undefined
const reloads: string[] = []

const say = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(event, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`)

async function run(cmd: { op: string; prefix?: string; maxStaleMs?: number }) {
  switch (cmd.op) {
    case 'open': {
      cache = new PrefixCache<string>(client, cmd.prefix!)
      cache.onChange((e) => {
        if (e.type === 'reload') reloads.push(e.reason)
      })
      await cache.ready
      return say({ event: 'opened', revision: cache.revision })
    }
    case 'current': {
      const snapshot = await cache!.current({ maxStaleMs: cmd.maxStaleMs! })
      return say({ event: 'current', revision: snapshot.revision, values: snapshot.values, reloads })
    }
    default:
      throw new Error(`unknown op ${cmd.op}`)
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line)
  run(cmd).catch((err: Error & { code?: string }) =>
    say({ event: 'error', op: cmd.op, name: err.name, code: err.code, message: err.message }),
  )
})
say({ event: 'ready' })
