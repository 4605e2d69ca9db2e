// Push and pop on an etcd Queue (FIFO) and PriorityQueue (lowest priority number first) over
// HTTP. Keys follow Go's recipes, so a Go program or etcdctl sees the same items.
import middy from '@middy/core'
import { InvalidArgumentError, PriorityQueue, Queue, sharedClient } from '../lib/index.js'
import { body, httpErrors, json, param, queryNumber, type HttpEvent } from './http.js'

const queue = (event: HttpEvent) => new Queue(sharedClient(), `example/queues/${param(event, 'name')}`)
const pqueue = (event: HttpEvent) => new PriorityQueue(sharedClient(), `example/pqueues/${param(event, 'name')}`)

/** Takes one item, waiting up to `?waitMs=` (default 0): 200 { value } or 404 when empty. */
async function pop(q: Queue | PriorityQueue, event: HttpEvent) {
  const waitMs = queryNumber(event, 'waitMs', 0)
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
  const { value } = body<{ value?: string }>(event)
  if (typeof value !== 'string') throw new InvalidArgumentError('body must be { value: string }')
  return json(201, await queue(event).enqueue(value))
}).use(httpErrors())

/** DELETE /queues/{name}?waitMs=1000 → the oldest item. */
export const popQueue = middy((event: HttpEvent) => pop(queue(event), event)).use(httpErrors())

/** POST /pqueues/{name} { value, priority } → { id, key } */
export const pushPriority = middy(async (event: HttpEvent) => {
  const { value, priority } = body<{ value?: string; priority?: number }>(event)
  if (typeof value !== 'string') throw new InvalidArgumentError('body must be { value: string, priority: number }')
  return json(201, await pqueue(event).enqueue(value, priority ?? 0))
}).use(httpErrors())

/** DELETE /pqueues/{name}?waitMs=1000 → the most urgent item (lowest priority number). */
export const popPriority = middy((event: HttpEvent) => pop(pqueue(event), event)).use(httpErrors())
