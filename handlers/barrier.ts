// A barrier over HTTP: hold it up, release it, and wait for it (etcdBarrier holds a waiting
// invocation back until the barrier is released).
import middy from '@middy/core'
import { etcdBarrier } from '../middleware/index.js'
import { Barrier, sharedClient } from '../lib/index.js'
import { httpErrors, json, param, type HttpEvent } from './http.js'

const barrierName = (event: HttpEvent) => `example/barriers/${param(event, 'name')}`

/** POST /barriers/{name}/hold → 201, or 409 if it is already up. */
export const hold = middy(async (event: HttpEvent) => {
  const revision = await new Barrier(sharedClient(), barrierName(event)).hold()
  return json(201, { held: true, revision })
}).use(httpErrors())

/** POST /barriers/{name}/release → { released } (false if it was not up). */
export const release = middy(async (event: HttpEvent) => {
  return json(200, { released: await new Barrier(sharedClient(), barrierName(event)).release() })
}).use(httpErrors())

/** GET /barriers/{name}/wait → 200 once the barrier is down (504 after 20 s). */
export const wait = middy(async (event: HttpEvent) => json(200, { passed: true, name: barrierName(event) }))
  .use(httpErrors())
  .use(etcdBarrier({ name: barrierName, waitMs: 20_000 }))
