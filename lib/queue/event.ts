// The shapes a queue message takes between a dispatcher and a consumer function, and the one
// check of the queue settings that `queueConsumer`, the dispatcher and the plugin's `etcdQueue`
// events share. Everything here is JSON-safe: it travels through the Lambda Invoke API.
import { checkBackoff } from './backoff.js'
import { checkInteger, checkSeconds, show } from '../core/check.js'
import { InvalidArgumentError, QueueMismatchError } from '../errors.js'
import { MAX_BATCH } from '../limits.js'
import type { Message } from './options.js'

/** Most batches of one subscription in flight at once. */
const MAX_CONCURRENCY = 100

/**
 * A {@link Message} without its payload bytes (`raw`): JSON-safe, so a dispatcher can pass it in
 * a Lambda event. What a `queueConsumer` handler sees; `value` holds the payload as text.
 */
export type JsonMessage = Omit<Message, 'raw'>

/** @deprecated use {@link JsonMessage}, the {@link Message} a handler sees (the same fields but `raw`). */
export type QueueMessage = JsonMessage

/** The event a dispatcher (the offline plugin, or the deployed dispatcher) invokes a consumer with. */
export interface QueueDispatchEvent {
  etcdQueue: { queue: string; priority?: boolean; messages: JsonMessage[] }
}

/** What a consumer reads from a queue: an `etcdQueue` event in serverless.yml, or `queueConsumer`'s queue options. */
export interface QueueSettings {
  /** The queue name. */
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
  /**
   * Seconds a message that failed (listed in `batchItemFailures`, the handler threw, or the
   * invocation failed) stays invisible after its first delivery (default 1); doubled per further
   * delivery, jittered, up to `maxRetryDelay`. 0 redelivers at once.
   */
  retryDelay?: number
  /** Longest retry delay, seconds (default 300). */
  maxRetryDelay?: number
}

/** An `etcdQueue` event of serverless.yml: the queue settings plus how many batches run at once. */
export interface EtcdQueueEvent extends QueueSettings {
  /** Batches in flight at once for this subscription, 1..100 (default 1). */
  concurrency?: number
}

/** The JSON-safe form of a received message (its fields but `raw`): what the handler sees and a dispatcher's event carries. */
export function toQueueMessage(m: JsonMessage): JsonMessage {
  const { id, key, value, receiveCount, priority, group, traceparent, tracestate, receipt } = m
  return {
    id,
    key,
    value,
    receiveCount,
    ...(priority === undefined ? {} : { priority }),
    ...(group === undefined ? {} : { group }),
    ...(traceparent === undefined ? {} : { traceparent }),
    ...(tracestate === undefined ? {} : { tracestate }),
    receipt,
  }
}

/**
 * Checks queue settings wherever they come from (`where` names the source in the message,
 * e.g. `queueConsumer` or `function worker, etcdQueue event`). `concurrency` is checked too
 * when present. Throws {@link InvalidArgumentError} naming the field and what it accepts.
 */
export function checkQueueSettings(settings: unknown, where: string): asserts settings is EtcdQueueEvent {
  if (typeof settings !== 'object' || settings === null || Array.isArray(settings)) {
    throw new InvalidArgumentError(`${where}: expected queue settings { queue, batchSize?, … }, got ${show(settings)}`)
  }
  const s = settings as Record<string, unknown>
  if (typeof s.queue !== 'string' || s.queue === '')
    throw new InvalidArgumentError(`${where}: queue must be the queue's name (a non-empty string), got ${show(s.queue)}`)
  if (s.priority !== undefined && typeof s.priority !== 'boolean') {
    throw new InvalidArgumentError(`${where}: priority must be true (a PriorityQueue) or false (a Queue), got ${show(s.priority)}`)
  }
  // Each setting is optional here: its default is applied where it is used.
  if (s.batchSize !== undefined) checkInteger(s.batchSize, `${where}: batchSize`, 1, MAX_BATCH)
  if (s.visibilityTimeout !== undefined) checkSeconds(s.visibilityTimeout, `${where}: visibilityTimeout`, 1)
  if (s.maxReceives !== undefined && s.maxReceives !== Number.POSITIVE_INFINITY)
    checkInteger(s.maxReceives, `${where}: maxReceives`, 1, Number.POSITIVE_INFINITY)
  if (s.concurrency !== undefined) checkInteger(s.concurrency, `${where}: concurrency`, 1, MAX_CONCURRENCY)
  checkBackoff(s, where)
  if (s.deadLetterQueue !== undefined && (typeof s.deadLetterQueue !== 'string' || s.deadLetterQueue === '')) {
    throw new InvalidArgumentError(`${where}: deadLetterQueue must be a queue name (a non-empty string), got ${show(s.deadLetterQueue)}`)
  }
}

function isJsonMessage(m: unknown): m is JsonMessage {
  const x = m as Partial<JsonMessage> | null
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof x.id === 'string' &&
    typeof x.key === 'string' &&
    typeof x.value === 'string' &&
    typeof x.receipt === 'string' &&
    typeof x.receiveCount === 'number' &&
    (x.priority === undefined || typeof x.priority === 'number') &&
    (x.group === undefined || typeof x.group === 'string')
  )
}

/**
 * The messages a dispatcher put in `event` for `queue`, or undefined when the event is no
 * dispatch (a direct invocation: the consumer then receives by itself). A dispatch for another
 * queue, or a PriorityQueue dispatch to a Queue consumer (or the reverse), is a
 * {@link QueueMismatchError} naming both: the mistake would otherwise claim messages and ignore
 * them. A dispatch whose messages are not {@link JsonMessage}s is an
 * {@link InvalidArgumentError}: settling them would ack nothing and redeliver everything.
 */
export function dispatchedMessages(event: unknown, queue: string, priority = false): JsonMessage[] | undefined {
  const dispatched = (event as Partial<QueueDispatchEvent> | null | undefined)?.etcdQueue
  if (typeof dispatched !== 'object' || dispatched === null) return undefined
  if (dispatched.queue !== queue || (dispatched.priority ?? false) !== priority) {
    const kind = (p: boolean | undefined) => (p ? 'PriorityQueue' : 'Queue')
    throw new QueueMismatchError(
      queue,
      String(dispatched.queue),
      `queueConsumer is configured for ${kind(priority)} ${JSON.stringify(queue)} but was invoked with a dispatch for ${kind(dispatched.priority)} ${JSON.stringify(dispatched.queue)}: ` +
        `make the function's etcdQueue event and its queueConsumer options name the same queue (and both say priority: ${String(dispatched.priority ?? false)}, or neither)`,
    )
  }
  const { messages } = dispatched as { messages: unknown }
  if (!Array.isArray(messages) || !messages.every(isJsonMessage)) {
    throw new InvalidArgumentError(
      `the event's etcdQueue.messages for queue ${JSON.stringify(queue)} are not queue messages { id, key, value, receiveCount, receipt }: ` +
        'invoke the consumer with the event a middy-etcd dispatcher builds, or without etcdQueue to let it receive by itself',
    )
  }
  return messages
}
