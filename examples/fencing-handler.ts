// Fencing from a handler: the grant etcdLock puts on context.etcd carries the same fence and
// fenced() as a Mutex, so a handler's write lands only while its invocation holds the lock.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { requireFenced, sharedClient } from '../lib/index.js'
import { etcdLock, etcdPlugin, type LockGrant } from '../middleware/index.js'

export const handler = middy(async (_event: unknown, context: Context & { etcd: { lock: LockGrant } }) => {
  const { fence } = context.etcd.lock
  const put = sharedClient().put('reports/nightly/last-run').value(new Date().toISOString())
  const res = await context.etcd.lock.fenced().then(put).commit()
  requireFenced(res.succeeded, fence, 'reports/nightly/last-run') // FenceRejectedError once the lock is lost
  return { statusCode: 200, body: String(fence) }
}, etcdPlugin()).use(etcdLock({ name: 'locks/reports/nightly' }))
