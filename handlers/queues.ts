// Push and pop on an etcd Queue (FIFO) and PriorityQueue (lowest priority number first) over
// HTTP. Keys follow Go's recipes, so a Go program or etcdctl sees the same items.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { MAX_PRIORITY, PriorityQueue, Queue, sharedClient } from '../lib/index.js'
import { body, httpErrors, intField, json, param, stringField, waitQuery, type HttpEvent } from './http.js'

const queue = (event: HttpEvent) => new Queue(sharedClient(), `example/queues/${param(event, 'name')}`)
const pqueue = (event: HttpEvent) => new PriorityQueue(sharedClient(), `example/pqueues/${param(event, 'name')}`)

/**
 * Takes one item, waiting up to `?waitMs=` (default 0; capped to the function's remaining time,
 * so it answers before its own timeout): 200 { value } or 404 when empty.
 */
async function pop(q: Queue | PriorityQueue, event: HttpEvent, context: Context) {
  const waitMs = waitQuery(event, context, 'waitMs', 0)
  try {
    const value = await q.dequeue({ signal: AbortSignal.timeout(Math.max(1, waitMs)) })
    return json(200, { value })
  } catch (err) {
    if ((err as Error)?.name === 'TimeoutError') return json(404, { empty: true })
    throw err
  }
}

/** POST /queues/{name} { value } → { id, key } */
export const push = middy(async (event: HttpEvent) => {
  const value = stringField(body(event), 'value', '{ value: string }', { allowEmpty: true })
  return json(201, await queue(event).enqueue(value))
}).use(httpErrors())

/** DELETE /queues/{name}?waitMs=1000 → the oldest item. */
export const popQueue = middy((event: HttpEvent, context: Context) => pop(queue(event), event, context)).use(httpErrors())

/** POST /pqueues/{name} { value, priority } → { id, key } */
export const pushPriority = middy(async (event: HttpEvent) => {
  const input = body(event)
  const value = stringField(input, 'value', '{ value: string, priority: number }', { allowEmpty: true })
  const priority = intField(input, 'priority', '{ value: string, priority: number }', { min: 0, max: MAX_PRIORITY }, 0)
  return json(201, await pqueue(event).enqueue(value, priority))
}).use(httpErrors())

/** DELETE /pqueues/{name}?waitMs=1000 → the most urgent item (lowest priority number). */
export const popPriority = middy((event: HttpEvent, context: Context) => pop(pqueue(event), event, context)).use(httpErrors())
