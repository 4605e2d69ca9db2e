// A counter incremented under a distributed lock (etcdLock): read, add one, write — exact even
// when many invocations run at once. The write is fenced: it only lands while the lock is held.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdLock } from '../middleware/index.js'
import { LockReleasedError, sharedClient } from '../lib/index.js'
import { httpErrors, json, param, type HttpEvent } from './http.js'

const counterKey = (name: string) => `example/counters/${name}`

/** POST /counters/{name}/increment → { name, value, fence } */
export const increment = middy(async (event: HttpEvent, context: Context & { etcd: { lock: { key: string; fence: bigint } } }) => {
  const name = param(event, 'name')
  const { key, fence } = context.etcd.lock
  const client = sharedClient()
  const current = Number((await client.get(counterKey(name)).string()) ?? '0')
  const value = current + 1
  // Lock key still ours (same create revision) → write; otherwise nothing is written.
  const res = await client
    .if(key, 'Create', '==', fence.toString())
    .then(client.put(counterKey(name)).value(String(value)))
    .commit()
  if (!res.succeeded) throw new LockReleasedError(`lost the lock on counter ${name} before writing; nothing was written`)
  return json(200, { name, value, fence })
})
  .use(httpErrors())
  .use(etcdLock({ name: (event: HttpEvent) => `example/locks/counter/${param(event, 'name')}`, waitMs: 25_000 }))

/** GET /counters/{name} → { name, value } */
export const get = middy(async (event: HttpEvent) => {
  const name = param(event, 'name')
  const value = Number((await sharedClient().get(counterKey(name)).string()) ?? '0')
  return json(200, { name, value })
}).use(httpErrors())
