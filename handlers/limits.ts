// Capacity limits shared by every instance of a function: a semaphore (at most 2 reports build
// at once, whatever the concurrency) and a rate limit (at most 2 calls a second, bursts of 3,
// to a partner API), each one middleware.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdPlugin, etcdRateLimit, etcdSemaphore, type LockGrant, type RateLimitGrant } from '../middleware/index.js'
import { httpErrors, json } from './http.js'

/** How long a report takes to "build". */
const REPORT_MS = 300

/** POST /reports → { fence, startedAt, finishedAt }: waits (up to 10 s) while 2 reports are building. */
export const report = middy(async (_event: unknown, context: Context & { etcd: { semaphore: LockGrant } }) => {
  const startedAt = Date.now()
  await new Promise((resolve) => setTimeout(resolve, REPORT_MS))
  return json(200, { fence: context.etcd.semaphore.fence, startedAt, finishedAt: Date.now() })
}, etcdPlugin())
  .use(httpErrors())
  .use(etcdSemaphore({ name: 'example/semaphores/reports', permits: 2, waitMs: 10_000 }))

/** POST /partner → { waitedMs }, or 429 with Retry-After once the partner's 2 calls a second are used. */
export const partner = middy(
  async (_event: unknown, context: Context & { etcd: { rateLimit: RateLimitGrant } }) =>
    json(200, { waitedMs: context.etcd.rateLimit.waitedMs }),
  etcdPlugin(),
)
  .use(httpErrors())
  .use(etcdRateLimit({ name: 'example/rate-limits/partner', rate: 2, per: 1000, burst: 2, acquire: 'try' }))
