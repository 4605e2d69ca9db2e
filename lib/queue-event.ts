// The shapes a queue message takes between a dispatcher and a consumer function, and the one
// check of the queue settings that `queueConsumer`, the dispatcher and the plugin's `etcdQueue`
// events share. Everything here is JSON-safe: it travels through the Lambda Invoke API.
import { InvalidArgumentError } from './errors.js'
import { MAX_BATCH, MAX_TTL_S } from './limits.js'

/** Most batches of one subscription in flight at once. */
const MAX_CONCURRENCY = 100

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

/** The event a dispatcher (the offline plugin, or the deployed dispatcher) invokes a consumer with. */
export interface QueueDispatchEvent {
  etcdQueue: { queue: string; priority?: boolean; messages: QueueMessage[] }
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
  /** Deliveries before a message goes to `deadLetterQueue`. */
  maxReceives?: number
  /** Queue that takes messages received `maxReceives` times. */
  deadLetterQueue?: string
}

/** An `etcdQueue` event of serverless.yml: the queue settings plus how many batches run at once. */
export interface EtcdQueueEvent extends QueueSettings {
  /** Batches in flight at once for this subscription, 1..100 (default 1). */
  concurrency?: number
}

/** The fields of a received message that travel in the event. */
type Received = Pick<QueueMessage, 'id' | 'key' | 'value' | 'receiveCount' | 'receipt'> & { priority?: number }

/** The JSON-safe form of a received message: what the handler sees and a dispatcher's event carries. */
export function toQueueMessage(m: Received): QueueMessage {
  const { id, key, value, receiveCount, priority, receipt } = m
  return priority === undefined ? { id, key, value, receiveCount, receipt } : { id, key, value, receiveCount, priority, receipt }
}

function show(value: unknown): string {
  return value === undefined ? 'undefined' : typeof value === 'function' ? 'a function' : JSON.stringify(value)
}

function checkInteger(where: string, field: string, value: unknown, min: number, max: number): void {
  if (value === undefined) return
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${where}: ${field} must be a whole number from ${min} to ${max}, got ${show(value)}`)
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
  if (typeof s.queue !== 'string' || s.queue === '') throw new InvalidArgumentError(`${where}: queue must be the queue's name (a non-empty string), got ${show(s.queue)}`)
  if (s.priority !== undefined && typeof s.priority !== 'boolean') {
    throw new InvalidArgumentError(`${where}: priority must be true (a PriorityQueue) or false (a Queue), got ${show(s.priority)}`)
  }
  checkInteger(where, 'batchSize', s.batchSize, 1, MAX_BATCH)
  checkInteger(where, 'visibilityTimeout', s.visibilityTimeout, 1, MAX_TTL_S)
  checkInteger(where, 'maxReceives', s.maxReceives, 1, Number.MAX_SAFE_INTEGER)
  checkInteger(where, 'concurrency', s.concurrency, 1, MAX_CONCURRENCY)
  if (s.deadLetterQueue !== undefined && (typeof s.deadLetterQueue !== 'string' || s.deadLetterQueue === '')) {
    throw new InvalidArgumentError(`${where}: deadLetterQueue must be a queue name (a non-empty string), got ${show(s.deadLetterQueue)}`)
  }
  if ((s.maxReceives === undefined) !== (s.deadLetterQueue === undefined)) {
    throw new InvalidArgumentError(
      `${where}: maxReceives and deadLetterQueue go together (a message received maxReceives times moves to deadLetterQueue); set both or neither`,
    )
  }
}

function isQueueMessage(m: unknown): m is QueueMessage {
  const x = m as Partial<QueueMessage> | null
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof x.id === 'string' &&
    typeof x.key === 'string' &&
    typeof x.value === 'string' &&
    typeof x.receipt === 'string' &&
    typeof x.receiveCount === 'number' &&
    (x.priority === undefined || typeof x.priority === 'number')
  )
}

/**
 * The messages a dispatcher put in `event` for `queue`, or undefined when the event is not a
 * dispatch for that queue (a direct invocation: the consumer then receives by itself). A
 * dispatch whose messages are not {@link QueueMessage}s is an {@link InvalidArgumentError}:
 * settling them would ack nothing and redeliver everything.
 */
export function dispatchedMessages(event: unknown, queue: string): QueueMessage[] | undefined {
  const dispatched = (event as Partial<QueueDispatchEvent> | null | undefined)?.etcdQueue
  if (typeof dispatched !== 'object' || dispatched === null || dispatched.queue !== queue) return undefined
  const { messages } = dispatched as { messages: unknown }
  if (!Array.isArray(messages) || !messages.every(isQueueMessage)) {
    throw new InvalidArgumentError(
      `the event's etcdQueue.messages for queue ${JSON.stringify(queue)} are not queue messages { id, key, value, receiveCount, receipt }: ` +
        'invoke the consumer with the event a middy-etcd dispatcher builds, or without etcdQueue to let it receive by itself',
    )
  }
  return messages
}
