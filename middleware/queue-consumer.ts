import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { Namespace } from 'etcd3'
import { sharedClient } from '../lib/client.js'
import { ClaimLostError, InvalidArgumentError, QueueMismatchError } from '../lib/errors.js'
import type { Message } from '../lib/claims.js'
import { DEFAULT_BATCH_SIZE, DEFAULT_MAX_RECEIVES, DEFAULT_MAX_RETRY_DELAY_S, DEFAULT_RETRY_DELAY_S, DEFAULT_VISIBILITY_S, MAX_BATCH, MAX_TTL_S } from '../lib/limits.js'
import { consumerDeadLetter } from '../lib/queue-options.js'
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
  /** Its message group, if it was enqueued with one. */
  group?: string
  /** Settles this delivery (`ack`/`nack` accept it in any process). */
  receipt: string
}

/** The JSON-safe form of a received message: what the handler sees and a dispatcher's event carries. */
export function toQueueMessage(m: Pick<Message, 'id' | 'key' | 'value' | 'receiveCount' | 'priority' | 'group' | 'receipt'>): QueueMessage {
  const { id, key, value, receiveCount, priority, group, receipt } = m
  return { id, key, value, receiveCount, ...(priority === undefined ? {} : { priority }), ...(group === undefined ? {} : { group }), receipt }
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
  /** The queue name (required). */
  queue: string
  /** A PriorityQueue (true) or a Queue (false, default). */
  priority?: boolean
  /** Most messages per invocation, 1..1000 (default 10). */
  batchSize?: number
  /** Seconds a received message stays invisible to other consumers unless acked (default 30). */
  visibilityTimeout?: number
  /**
   * Deliveries before a message goes to `deadLetterQueue` (default 5). `Infinity` turns
   * dead-lettering off: a failing message is then retried forever (with back-off).
   */
  maxReceives?: number
  /** Queue that takes messages received `maxReceives` times (default `dlq/<queue>`). */
  deadLetterQueue?: string
  /** When the event carries no messages: how long to wait for one, ms (default 0: don't wait). */
  waitMs?: number
  /**
   * Seconds a message that failed (listed in `batchItemFailures`, or the handler threw) stays
   * invisible after its first delivery (default 1); doubled per further delivery, jittered, up
   * to `maxRetryDelay`. 0 redelivers at once.
   */
  retryDelay?: number
  /** Longest retry delay, seconds (default 300). */
  maxRetryDelay?: number
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = {
  priority: false,
  batchSize: DEFAULT_BATCH_SIZE,
  visibilityTimeout: DEFAULT_VISIBILITY_S,
  maxReceives: DEFAULT_MAX_RECEIVES,
  waitMs: 0,
  retryDelay: DEFAULT_RETRY_DELAY_S,
  maxRetryDelay: DEFAULT_MAX_RETRY_DELAY_S,
} as const

const schema: Schema = {
  queue: { type: 'string', required: true },
  priority: { type: 'boolean' },
  batchSize: { type: 'integer', min: 1, max: MAX_BATCH },
  visibilityTimeout: { type: 'integer', min: 1, max: MAX_TTL_S },
  maxReceives: { type: 'integer', min: 1 },
  deadLetterQueue: { type: 'string' },
  waitMs: { type: 'number', min: 0 },
  retryDelay: { type: 'integer', min: 0, max: MAX_TTL_S },
  maxRetryDelay: { type: 'integer', min: 0, max: MAX_TTL_S },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * The messages a dispatcher put in the event, or undefined when it is no dispatch. A dispatch
 * for another queue (or kind of queue) is a configuration mistake that would otherwise claim
 * messages and ignore them: it fails loudly, naming both queues.
 */
function messagesOf(event: unknown, queue: string, priority: boolean): QueueMessage[] | undefined {
  const dispatched = (event as Partial<QueueDispatchEvent> | null | undefined)?.etcdQueue
  if (typeof dispatched !== 'object' || dispatched === null) return undefined
  if (dispatched.queue !== queue || (dispatched.priority ?? false) !== priority) {
    const kind = (p: boolean | undefined) => (p ? 'PriorityQueue' : 'Queue')
    throw new QueueMismatchError(
      queue,
      String(dispatched.queue),
      `queueConsumer is configured for ${kind(priority)} ${JSON.stringify(queue)} but was invoked with a dispatch for ${kind(dispatched.priority)} ${JSON.stringify(dispatched.queue)}: ` +
        `make the function's etcdQueue event and its queueConsumer options name the same queue (and both say priority: ${String(dispatched.priority ?? false)} or not)`,
    )
  }
  return Array.isArray(dispatched.messages) ? dispatched.messages : undefined
}

/**
 * Gives the handler a batch of at-least-once messages as `context.etcd.messages`: the ones a
 * dispatcher claimed and put in the event, or else a fresh `receive`. Acks what succeeded and
 * nacks what failed (`{ batchItemFailures }` from the handler, or everything when it throws), so
 * a failing message is redelivered after a growing retry delay and, after `maxReceives`
 * deliveries, dead-lettered. A crashed invocation settles nothing: its messages come back when
 * the visibility timeout ends.
 */
export function queueConsumer(options: QueueConsumerOptions): MiddlewareObj<unknown, any, Error, Context & { etcd: { messages: QueueMessage[] } }> {
  const opts = validateOptions<QueueConsumerOptions & typeof defaults>('queueConsumer', schema, defaults, options)
  if (opts.maxRetryDelay < opts.retryDelay) {
    throw new InvalidArgumentError(`queueConsumer: option \`maxRetryDelay\` (${opts.maxRetryDelay}) must be at least \`retryDelay\` (${opts.retryDelay})`)
  }
  const self = {}
  const client = () => opts.client ?? sharedClient()
  let queue: Queue | PriorityQueue | undefined
  const open = () => {
    const settings = { ...consumerDeadLetter(opts.queue, opts), retryDelay: opts.retryDelay, maxRetryDelay: opts.maxRetryDelay }
    queue ??= opts.priority ? new PriorityQueue(client(), opts.queue, settings) : new Queue(client(), opts.queue, settings)
    return queue
  }

  /** Acks the successes in one Txn (ackMany) and nacks each failure (visible again after its retry delay, or dead-lettered). */
  const settle = async (q: Queue | PriorityQueue, messages: QueueMessage[], failed: Set<string>) => {
    const done = messages.filter((m) => !failed.has(m.id)).map((m) => m.receipt)
    const [acks, ...nacks] = await Promise.allSettled([
      done.length > 0 ? q.ackMany(done) : Promise.resolve([]),
      ...messages.filter((m) => failed.has(m.id)).map((m) => q.nack(m.receipt)),
    ])
    // A claim lost meanwhile (its visibility timeout passed) is on its way to redelivery already:
    // ackMany reports those in its result, nack by rejecting with ClaimLostError.
    const acked = acks.status === 'fulfilled' ? acks.value.filter((lost) => lost === undefined).length : 0
    emit(opts.onEvent, { type: 'released', primitive: 'queue', name: opts.queue, detail: { acked, nacked: failed.size } })
    const problem = [acks, ...nacks].find((o) => o.status === 'rejected' && !(o.reason instanceof ClaimLostError))
    if (problem) throw (problem as PromiseRejectedResult).reason
  }

  const before = async (request: Request<unknown, any, Error, Context & { etcd: { messages: QueueMessage[] } }>) => {
    let messages = messagesOf(request.event, opts.queue, opts.priority)
    const q = open()
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
