import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import { ClaimLostError } from '../lib/errors.js'
import {
  DEFAULT_BATCH_SIZE,
  DEFAULT_MAX_RECEIVES,
  DEFAULT_MAX_RETRY_DELAY_S,
  DEFAULT_RETRY_DELAY_S,
  DEFAULT_VISIBILITY_S,
} from '../lib/limits.js'
import { consumerDeadLetter } from '../lib/queue/options.js'
import { PriorityQueue } from '../lib/queue/priority-queue.js'
import { checkQueueSettings, dispatchedMessages, toQueueMessage, type JsonMessage, type QueueSettings } from '../lib/queue/event.js'
import { Queue } from '../lib/queue/queue.js'
import { startProcess } from '../lib/telemetry/messaging.js'
import { emit, type OnEvent } from './events.js'
import { ScopeUses, shortCircuit, waitBudget } from './scope.js'
import { validateOptions, type Schema } from './options.js'

export { toQueueMessage, type JsonMessage, type QueueMessage, type QueueDispatchEvent } from '../lib/queue/event.js'

/** The SQS partial-batch convention: these messages failed, the rest succeeded. */
export interface BatchResponse {
  batchItemFailures: { itemIdentifier: string }[]
}

/** Options of {@link queueConsumer}: the queue settings an `etcdQueue` event carries, plus the consumer's own. */
export interface QueueConsumerOptions extends QueueSettings {
  /** When the event carries no messages: how long to wait for one, ms (default 0: don't wait). */
  waitMs?: number
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

// The queue settings are checked by lib's one check of them (`checkQueueSettings`, which the
// dispatcher and the plugin's etcdQueue events run too); the schema knows the consumer's own.
const schema: Schema = {
  queue: { type: 'lib', required: true },
  priority: { type: 'lib' },
  batchSize: { type: 'lib' },
  visibilityTimeout: { type: 'lib' },
  maxReceives: { type: 'lib' },
  deadLetterQueue: { type: 'lib' },
  waitMs: { type: 'number', min: 0 },
  retryDelay: { type: 'lib' },
  maxRetryDelay: { type: 'lib' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * Gives the handler a batch of at-least-once messages as `context.etcd.messages`: the ones a
 * dispatcher claimed and put in the event, or else a fresh `receive`. Acks what succeeded and
 * nacks what failed (`{ batchItemFailures }` from the handler, or everything when it throws), so
 * a failing message is redelivered after a growing retry delay and, after `maxReceives`
 * deliveries, dead-lettered. A crashed invocation settles nothing: its messages come back when
 * the visibility timeout ends.
 */
export function queueConsumer(
  options: QueueConsumerOptions,
): MiddlewareObj<unknown, any, Error, Context & { etcd: { messages: JsonMessage[] } }> {
  const opts = validateOptions<QueueConsumerOptions & typeof defaults>('queueConsumer', schema, defaults, options, (o) =>
    checkQueueSettings(o, 'queueConsumer'),
  )
  const uses = new ScopeUses('queueConsumer')
  const client = () => opts.client ?? sharedClient()
  let queue: Queue | PriorityQueue | undefined
  const open = () => {
    const settings = { ...consumerDeadLetter(opts.queue, opts), retryDelay: opts.retryDelay, maxRetryDelay: opts.maxRetryDelay }
    queue ??= opts.priority ? new PriorityQueue(client(), opts.queue, settings) : new Queue(client(), opts.queue, settings)
    return queue
  }

  /** Acks the successes in one Txn (ackMany) and nacks each failure (visible again after its retry delay, or dead-lettered). */
  const ackAndNack = async (q: Queue | PriorityQueue, messages: JsonMessage[], failed: Set<string>) => {
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

  const before = async (request: Request<unknown, any, Error, Context & { etcd: { messages: JsonMessage[] } }>) => {
    let messages = dispatchedMessages(request.event, opts.queue, opts.priority)
    const q = open()
    if (!messages) {
      const budget = waitBudget(request.context, opts.waitMs)
      const received = await q
        .receive({ max: opts.batchSize, visibilityTimeout: opts.visibilityTimeout, wait: opts.waitMs > 0, signal: budget.signal })
        .catch((err) => {
          if (err === budget.signal.reason) return []
          throw err
        })
        .finally(() => budget.stop())
      messages = received.map(toQueueMessage)
    }
    if (messages.length === 0) {
      emit(opts.onEvent, { type: 'skipped', primitive: 'queue', name: opts.queue })
      return shortCircuit(request, (): BatchResponse => ({ batchItemFailures: [] }))
    }
    const batch = messages
    // From `after`, the handler's batchItemFailures failed; on every other path (it threw, a
    // guard inside short-circuited), every message of the batch did.
    // `process {queue}`, linked to each message's producer span, runs from here to the batch's
    // settlement (a middleware has no hook around the handler, so the handler's own spans are
    // not its children; the dispatcher's process span is the parent of its Invoke call).
    const processing = startProcess(opts.queue, batch)
    uses.enter(request, client(), request.context).onRelease(async (handled) => {
      try {
        await ackAndNack(q, batch, handled ? failuresOf(handled.response) : new Set(batch.map((m) => m.id)))
      } catch (err) {
        processing?.fail(err)
        throw err
      }
      if (handled) processing?.end()
      else processing?.fail(request.error ?? new Error('the handler failed'))
    })
    request.context.etcd = { ...request.context.etcd, messages: batch }
    emit(opts.onEvent, { type: 'acquired', primitive: 'queue', name: opts.queue, detail: { messages: batch.length } })
    return undefined
  }

  const after = (request: Request) => uses.leave(request, { response: request.response })
  const onError = (request: Request) => uses.leave(request)

  return { before, after, onError }
}

/** The ids a handler's `{ batchItemFailures }` names (none when it returned anything else). */
function failuresOf(response: unknown): Set<string> {
  const failures = (response as Partial<BatchResponse> | undefined)?.batchItemFailures
  return new Set(Array.isArray(failures) ? failures.map((f) => String(f.itemIdentifier)) : [])
}
