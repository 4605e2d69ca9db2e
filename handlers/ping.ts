import { sharedClient } from '../lib/client.js'

/** GET /ping: proves the function reaches etcd (ETCD_ENDPOINTS injected by the plugin). */
export const handler = async () => {
  const client = sharedClient()
  await client.put('example/ping').value(new Date().toISOString())
  return { statusCode: 200, body: JSON.stringify({ ok: true, endpoints: process.env.ETCD_ENDPOINTS }) }
}
