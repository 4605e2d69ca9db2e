// The example service's own settings, read from etcd with etcdConfig: every key under
// example/settings/ at one revision, kept current by a watch (no etcd request on a warm
// invocation), seeded for `npm start` by custom.etcd.seed in serverless.yml.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdConfig, type ConfigContext } from '../middleware/index.js'
import { httpErrors, json } from './http.js'

/** What example/settings/ holds (JSON text per key: parse 'json'). */
export interface ServiceSettings {
  greeting: string
  reports: { concurrency: number }
  maintenance?: boolean
}

/** GET /settings → the settings and the etcd revision they are all from. */
export const handler = middy(async (_event: unknown, context: Context & ConfigContext<ServiceSettings>) => {
  const { config, configRevision } = context.etcd
  return json(200, { ...config, revision: String(configRevision) })
})
  .use(httpErrors())
  .use(etcdConfig<ServiceSettings>({ prefix: 'example/settings/', parse: 'json', maxStaleMs: 5_000, required: ['greeting', 'reports'] }))
