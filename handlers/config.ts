// A configuration document read under a shared (read) lock and written under an exclusive
// (write) lock (etcdRwLock): readers run together, a writer runs alone, and a waiting writer
// holds back new readers so it is not starved.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdRwLock } from '../middleware/index.js'
import { InvalidArgumentError, LockReleasedError, sharedClient } from '../lib/index.js'
import { body, httpErrors, json, param, stringField, type HttpEvent } from './http.js'

const LOCK = 'example/locks/config'
const configKey = (key: string) => `example/config/${key}`
/** Largest config value: etcd takes at most ~1.5 MiB per request (--max-request-bytes). */
const MAX_VALUE_BYTES = 1_000_000

/** GET /config/{key} → { key, value } */
export const read = middy(async (event: HttpEvent) => {
  const key = param(event, 'key')
  const value = await sharedClient().get(configKey(key)).string()
  return json(value === null ? 404 : 200, { key, value })
})
  .use(httpErrors())
  .use(etcdRwLock({ name: LOCK, mode: 'read', waitMs: 10_000 }))

/** PUT /config/{key} { value } → { key, value, fence } */
export const write = middy(async (event: HttpEvent, context: Context & { etcd: { rwLock: { key: string; fence: bigint } } }) => {
  const key = param(event, 'key')
  const value = stringField(body(event), 'value', '{ value: string }', { allowEmpty: true })
  if (Buffer.byteLength(value) > MAX_VALUE_BYTES)
    throw new InvalidArgumentError(
      `value is ${Buffer.byteLength(value)} bytes; config values are at most ${MAX_VALUE_BYTES} bytes (etcd takes ~1.5 MiB per request)`,
    )
  const { rwLock } = context.etcd
  const client = sharedClient()
  const res = await client
    .if(rwLock.key, 'Create', '==', rwLock.fence.toString())
    .then(client.put(configKey(key)).value(value))
    .commit()
  if (!res.succeeded) throw new LockReleasedError('lost the write lock before writing; nothing was written')
  return json(200, { key, value, fence: rwLock.fence })
})
  .use(httpErrors())
  .use(etcdRwLock({ name: LOCK, mode: 'write', waitMs: 10_000 }))
