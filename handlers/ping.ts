import { sharedClient } from '../lib/core/client.js'

/** GET /ping: proves the function reaches etcd (ETCD_ENDPOINTS injected by the plugin). */
export const handler = async () => {
  const client = sharedClient()
  await client.put('example/ping').value(new Date().toISOString())
  return { statusCode: 200, body: JSON.stringify({ ok: true, endpoints: process.env.ETCD_ENDPOINTS }) }
}

function fail(): never {
  throw new Error('crash on purpose: this stack trace points at handlers/ping.ts')
}

/**
 * Throws, to show where an offline stack trace points: at this file's lines (the plugin
 * bundles with source maps and turns them on). Invoke it: `aws lambda invoke` or the Invoke API.
 */
export const crash = async () => {
  fail()
}
