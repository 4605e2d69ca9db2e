import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { Namespace } from 'etcd3'
import { sharedClient } from '../lib/client.js'
import { ClaimLostError, InvalidArgumentError } from '../lib/errors.js'
import type { Message } from '../lib/claims.js'
import { PriorityQueue } from '../lib/priority-queue.js'
import { Queue } from '../lib/queue.js'
import { emit, type OnEvent } from './events.js'
import { InvocationScope, waitBudget } from './scope.js'
import { validateOptions, type Schema } from './options.js'

/** A message as the handler sees it: JSON-safe, so a dispatcher can pass it in an event. */
export interface QueueMessage {
  /** Stable across redeliveries: use it as `itemIdentifier` in `batchItemFailures`. */
  id: string
  key: string
  value: string
  receiveCount: number
  priority?: number
  /** Settles this delivery (`ack`/`nack` accept it in any process). */
  receipt: string
}

/** The JSON-safe form of a received message: what the handler sees and a dispatcher's event carries. */
export function toQueueMessage(m: Pick<Message, 'id' | 'key' | 'value' | 'receiveCount' | 'priority' | 'receipt'>): QueueMessage {
  const { id, key, value, receiveCount, priority, receipt } = m
  return priority === undefined ? { id, key, value, receiveCount, receipt } : { id, key, value, receiveCount, priority, receipt }
}

/** The event a dispatcher (the offline plugin, or the deployed dispatcher) invokes a consumer with. */
export interface QueueDispatchEvent {
  etcdQueue: { queue: string; priority?: boolean; messages: QueueMessage[] }
}

/** The SQS partial-batch convention: these messages failed, the rest succeeded. */
export interface BatchResponse {
  batchItemFailures: { itemIdentifier: string }[]
}

export interface QueueConsumerOptions {
  /** The queue name. */
  queue: string
  /** A PriorityQueue (true) or a Queue (false, default). */
  priority?: boolean
  /** Most messages per invocation, 1..1000 (default 10). */
  batchSize?: number
  /** Seconds a received message stays invisible to other consumers unless acked (default 30). */
  visibilityTimeout?: number
  /** Deliveries before a message goes to `deadLetterQueue`. */
  maxReceives?: number
  /** Queue that takes messages received `maxReceives` times. */
  deadLetterQueue?: string
  /** When the event carries no messages: how long to wait for one, ms (default 0: don't wait). */
  waitMs?: number
  /** Seconds a failed message stays invisible before its redelivery (default 0). */
  retryDelay?: number
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = { priority: false, batchSize: 10, visibilityTimeout: 30, waitMs: 0, retryDelay: 0 } as const

const schema: Schema = {
  queue: { type: 'string', required: true },
  priority: { type: 'boolean' },
  batchSize: { type: 'integer', min: 1, max: 1000 },
  visibilityTimeout: { type: 'integer', min: 1, max: 9_000_000 },
  maxReceives: { type: 'integer', min: 1 },
  deadLetterQueue: { type: 'string' },
  waitMs: { type: 'number', min: 0 },
  retryDelay: { type: 'integer', min: 0, max: 9_000_000 },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

function messagesOf(event: unknown, queue: string): QueueMessage[] | undefined {
  const dispatched = (event as Partial<QueueDispatchEvent> | undefined)?.etcdQueue
  return dispatched && dispatched.queue === queue && Array.isArray(dispatched.messages) ? dispatched.messages : undefined
}

/**
 * Gives the handler a batch of at-least-once messages as `context.etcd.messages`: the ones a
 * dispatcher claimed and put in the event, or else a fresh `receive`. Acks what succeeded and
 * nacks what failed (`{ batchItemFailures }` from the handler, or everything when it throws), so
 * a failing message is redelivered and, after `maxReceives`, dead-lettered. A crashed invocation
 * settles nothing: its messages come back when the visibility timeout ends.
 */
export function queueConsumer(options: QueueConsumerOptions): MiddlewareObj<unknown, any, Error, Context & { etcd: { messages: QueueMessage[] } }> {
  const opts = validateOptions<QueueConsumerOptions & typeof defaults>('queueConsumer', schema, defaults, options)
  if (opts.maxReceives !== undefined && opts.deadLetterQueue === undefined) {
    throw new InvalidArgumentError('queueConsumer: option `maxReceives` needs `deadLetterQueue`, the queue that takes messages received that many times')
  }
  const self = {}
  const client = () => opts.client ?? sharedClient()
  let queue: Queue | PriorityQueue | undefined
  const open = () => {
    const dlq = { maxReceives: opts.maxReceives, deadLetterQueue: opts.deadLetterQueue }
    queue ??= opts.priority ? new PriorityQueue(client(), opts.queue, dlq) : new Queue(client(), opts.queue, dlq)
    return queue
  }

  /** Acks the successes in one Txn (ackMany) and nacks each failure. */
  const settle = async (q: Queue | PriorityQueue, messages: QueueMessage[], failed: Set<string>) => {
    const done = messages.filter((m) => !failed.has(m.id)).map((m) => m.receipt)
    const [acks, ...nacks] = await Promise.allSettled([
      done.length > 0 ? q.ackMany(done) : Promise.resolve([]),
      ...messages.filter((m) => failed.has(m.id)).map((m) => q.nack(m.receipt, { delay: opts.retryDelay })),
    ])
    // A claim lost meanwhile (its visibility timeout passed) is on its way to redelivery already:
    // ackMany reports those in its result, nack by rejecting with ClaimLostError.
    const acked = acks.status === 'fulfilled' ? acks.value.filter((lost) => lost === undefined).length : 0
    emit(opts.onEvent, { type: 'released', primitive: 'queue', name: opts.queue, detail: { acked, nacked: failed.size } })
    const problem = [acks, ...nacks].find((o) => o.status === 'rejected' && !(o.reason instanceof ClaimLostError))
    if (problem) throw (problem as PromiseRejectedResult).reason
  }

  const before = async (request: Request<unknown, any, Error, Context & { etcd: { messages: QueueMessage[] } }>) => {
    const q = open()
    let messages = messagesOf(request.event, opts.queue)
    if (!messages) {
      const budget = waitBudget(request.context, opts.waitMs)
      const received = await q.receive({ max: opts.batchSize, visibilityTimeout: opts.visibilityTimeout, wait: opts.waitMs > 0, signal: budget.signal }).catch((err) => {
        if (err === budget.signal.reason) return []
        throw err
      })
      messages = received.map(toQueueMessage)
    }
    if (messages.length === 0) {
      emit(opts.onEvent, { type: 'skipped', primitive: 'queue', name: opts.queue })
      await InvocationScope.endAll(request)
      request.earlyResponse = { batchItemFailures: [] }
      return request.earlyResponse
    }
    const batch = messages
    const scope = InvocationScope.of(request, client(), request.context, self)
    // If the handler throws, every message of the batch failed.
    scope.hold(self, () => settle(q, batch, new Set(batch.map((m) => m.id))))
    request.context.etcd = { ...request.context.etcd, messages: batch }
    emit(opts.onEvent, { type: 'acquired', primitive: 'queue', name: opts.queue, detail: { messages: batch.length } })
    return undefined
  }

  const after = async (request: Request) => {
    const scope = InvocationScope.find(request, client())
    const batch = (request.context as unknown as { etcd?: { messages?: QueueMessage[] } }).etcd?.messages
    if (scope && batch) {
      const failures = (request.response as Partial<BatchResponse> | undefined)?.batchItemFailures
      const failed = new Set(Array.isArray(failures) ? failures.map((f) => String(f.itemIdentifier)) : [])
      scope.hold(self, () => settle(open(), batch, failed))
    }
    await InvocationScope.settle(request, client(), self)
  }

  const onError = (request: Request) => InvocationScope.settle(request, client(), self)

  return { before, after, onError }
}
