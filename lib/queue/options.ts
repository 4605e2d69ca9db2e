import type { RetryOptions } from './backoff.js'
import { checkInteger, checkOptions, checkSeconds } from '../core/check.js'
import { InvalidArgumentError } from '../errors.js'
import { defaultDeadLetterQueue, queueKeys } from '../core/keys.js'
import { checkName } from '../core/kv.js'
import { DEFAULT_MAX_RECEIVES, DEFAULT_VISIBILITY_S, MAX_BATCH, MAX_DELAY_MS } from '../limits.js'
import { checkGroup } from './meta.js'
import type { Session } from '../session/session.js'

/**
 * The options and message types of {@link Queue} and {@link PriorityQueue}, and their checks
 * (each a typed error naming the option and what it accepts; nothing is written before them).
 */

/** Options shared by the queue constructors and {@link ReceiveOptions}. */
export interface DeadLetterOptions {
  /**
   * How many times a message may be received. The claim that would deliver it once more
   * moves it to {@link deadLetterQueue} instead (in one Txn). Needs `deadLetterQueue`.
   */
  maxReceives?: number
  /**
   * Name of the (Go-layout) Queue that takes messages received `maxReceives` times. If Go
   * consumers read the queue, pick a name that does not start with the queue's name (e.g.
   * `dlq/<name>`, not `<name>-dlq`): Go's Dequeue ranges `<name>` without "/" and would take
   * the dead letters too.
   */
  deadLetterQueue?: string
}

/** Options of the {@link Queue} and {@link PriorityQueue} constructors: receive and retry defaults. */
export interface QueueOptions extends DeadLetterOptions, RetryOptions {}

/** Options of `Queue.enqueue`. */
export interface EnqueueOptions {
  /**
   * Milliseconds before the message may be delivered (default 0). It waits outside the queue
   * (Go's `Dequeue` cannot see it either) until a timer lease of this many seconds, rounded up
   * to whole seconds, has expired on the etcd server; then the next receive moves it in.
   * Never delivered early; see README "Delayed messages" for how late it can be.
   */
  delayMs?: number
  /**
   * Message group (SQS FIFO's `MessageGroupId`): messages of one group are delivered one at a
   * time, in enqueue order; a message that fails blocks its group until it succeeds or is
   * dead-lettered. Different groups are delivered in parallel. At most 128 bytes.
   */
  group?: string
}

/** Options of `PriorityQueue.enqueue` (after the priority). */
export type PriorityEnqueueOptions = Pick<EnqueueOptions, 'delayMs'>

/** Options of `redrive`. */
export interface RedriveOptions {
  /** The dead-letter queue to move messages from. */
  from: string
  /** Most messages to move (default: every message in `from` when the redrive starts). */
  max?: number
  /** Aborting it stops the redrive between two messages (each one moves whole or not at all). */
  signal?: AbortSignal
}

/** What `redrive` did. */
export interface Redriven {
  /** Messages moved back, receive counts reset. */
  moved: number
  /** Dead letters left where they were because a consumer of the dead-letter queue has them claimed. */
  skipped: number
}

/** Options of `receive`. */
export interface ReceiveOptions extends DeadLetterOptions {
  /** Most messages to claim, 1..1000 (default 1). Fewer may come back. */
  max?: number
  /**
   * Whole seconds the messages stay invisible to other receivers unless acked (default 30),
   * counted from the claim. The receive grants one lease for the whole batch (this TTL plus
   * 1 s, for the time between grant and claim; renewed once if the claim came later) and never
   * keeps it alive: a receiver that crashes releases its messages when the lease expires. Once
   * this process has acked or nacked every message of the batch, the lease is revoked; receipts
   * settled in another process leave it to expire. etcd may round a small TTL up to its minimum
   * (about 1.5 x the election timeout). Not allowed together with `session`.
   */
  visibilityTimeout?: number
  /** Claim with this session's lease instead: messages stay invisible while the session lives. */
  session?: Session
  /**
   * With `true` (the default), block until at least one message is claimed; with `false`,
   * return `[]` at once when none is visible.
   */
  wait?: boolean
  /** Aborting it stops a wait and rejects with its reason; nothing is left behind. */
  signal?: AbortSignal
}

/** Options of `nack`. */
export interface NackOptions {
  /**
   * Whole seconds before the message becomes visible again. Default: the queue's retry
   * back-off for its receive count (`retryDelay` doubled per receive, jittered, up to
   * `maxRetryDelay`); 0 makes it visible at once.
   */
  delay?: number
}

/** Options of `dequeue`. */
export interface DequeueOptions {
  /** Aborting it stops the wait and rejects with its reason. */
  signal?: AbortSignal
}

/** What `enqueue` wrote. */
export interface Enqueued {
  /**
   * Where the message was written: the item key in Go's layout, or, for a delayed message or
   * one waiting behind its group, the key it waits under until it moves into the queue.
   */
  key: string
  /** The revision of the enqueue (decimal): the message `id` receivers will see. */
  id: string
}

/**
 * A queue message, as `receive` claims it; settle it with `ack` or `nack`. The one message type:
 * a dispatcher's event and a `queueConsumer` handler carry it without `raw` (`JsonMessage`,
 * queue-event.ts), as it travels as JSON.
 */
export interface Message {
  /**
   * The revision of its enqueue (decimal): unique in the cluster, the same on every redelivery
   * (the item's create revision, unless it moved in later: delayed, grouped or redriven).
   */
  readonly id: string
  /** The item key (`<name>/<unixNano>` or `<name>/<prio>/<seq>`). */
  readonly key: string
  /** The payload as UTF-8 text. */
  readonly value: string
  /** The payload bytes. */
  readonly raw: Buffer
  /** How many times it has been received, this time included (1 on first delivery). */
  readonly receiveCount: number
  /** PriorityQueue only: the item's priority (0 is served first). */
  readonly priority?: number
  /** Its message group, if it was enqueued with one. */
  readonly group?: string
  /**
   * The W3C trace context of the enqueue's `send` span, when the producer had a tracer
   * registered (README, "Telemetry"): a consumer links its `process` span to it.
   */
  readonly traceparent?: string
  readonly tracestate?: string
  /**
   * Identifies this claim; `ack`/`nack` accept it in place of the message, in any process
   * (`<itemCreateRev>.<claimRev>.<leaseId>.<receiveCount>.<group>.<key>`).
   */
  readonly receipt: string
}

/** Receive options after checking, defaults applied. */
export interface CheckedReceive extends DeadLetterOptions {
  max: number
  visibilityTimeout: number
  wait: boolean
  session?: Session
}

/** Checks receive options against the queue's defaults (items under `itemsPrefix`). */
export function checkReceive(options: ReceiveOptions, defaults: DeadLetterOptions, queueName: string): CheckedReceive {
  if (options === null || typeof options !== 'object')
    throw new InvalidArgumentError(`receive options must be an object, got ${String(options)}`)
  const max = checkInteger(options.max, 'receive max', 1, MAX_BATCH, { fallback: 1 })
  if (options.session !== undefined && options.visibilityTimeout !== undefined) {
    throw new InvalidArgumentError(
      'receive: give either visibilityTimeout (a lease per receive) or session (claims last while it lives), not both',
    )
  }
  const visibilityTimeout = checkSeconds(options.visibilityTimeout, 'receive visibilityTimeout', 1, { fallback: DEFAULT_VISIBILITY_S })
  const wait = options.wait ?? true
  if (typeof wait !== 'boolean') throw new InvalidArgumentError(`receive wait must be true or false, got ${String(wait)}`)
  const dl = checkDeadLetter({ ...defaults, ...definedOnly(options) }, queueName, 'receive options')
  return { max, visibilityTimeout, wait, session: options.session, ...dl }
}

/** Checks a dead-letter setting of queue `queueName`: both or neither, and a queue apart from it. */
export function checkDeadLetter(o: DeadLetterOptions, queueName: string, what: string): DeadLetterOptions {
  const { maxReceives, deadLetterQueue } = o ?? {}
  if (maxReceives === undefined && deadLetterQueue === undefined) return {}
  checkInteger(maxReceives, `${what}: maxReceives`, 1, Number.POSITIVE_INFINITY, { hint: 'when deadLetterQueue is set' })
  if (deadLetterQueue === undefined)
    throw new InvalidArgumentError(
      `${what}: maxReceives needs deadLetterQueue, the name of the queue that takes messages received ${maxReceives} times`,
    )
  checkName(deadLetterQueue, `${what}: deadLetterQueue`)
  const [dlq, own] = [queueKeys.items(deadLetterQueue), queueKeys.items(queueName)]
  if (dlq.startsWith(own) || own.startsWith(dlq)) {
    throw new InvalidArgumentError(
      `${what}: deadLetterQueue ${JSON.stringify(deadLetterQueue)} overlaps queue ${JSON.stringify(queueName)}; use a name that is neither the queue's nor nested in it`,
    )
  }
  return { maxReceives, deadLetterQueue }
}

function definedOnly(o: ReceiveOptions): DeadLetterOptions {
  const out: DeadLetterOptions = {}
  if (o.maxReceives !== undefined) out.maxReceives = o.maxReceives
  if (o.deadLetterQueue !== undefined) out.deadLetterQueue = o.deadLetterQueue
  return out
}

/** Checks enqueue options (`allowGroup`: false for a PriorityQueue); returns the delay and group. */
export function checkEnqueue(options: EnqueueOptions | undefined, what: string, allowGroup: boolean): { delayMs: number; group?: string } {
  const o = checkOptions(options, what)
  for (const key of Object.keys(o)) {
    if (key !== 'delayMs' && !(allowGroup && key === 'group')) {
      const known = allowGroup ? 'delayMs, group' : 'delayMs (message groups are a Queue feature)'
      throw new InvalidArgumentError(`${what}: unknown option ${JSON.stringify(key)}; the options are ${known}`)
    }
  }
  const delayMs = checkInteger(o.delayMs, `${what}: delayMs`, 0, MAX_DELAY_MS, { unit: 'milliseconds', fallback: 0 })
  return o.group === undefined ? { delayMs } : { delayMs, group: checkGroup(o.group, what) }
}

/** Checks redrive options; `max` defaults to unlimited. */
export function checkRedrive(
  options: RedriveOptions,
  queueName: string,
): Required<Pick<RedriveOptions, 'from' | 'max'>> & { signal?: AbortSignal } {
  const o = checkOptions(options, 'redrive')
  if (options === undefined) throw new InvalidArgumentError('redrive needs options { from: <dead-letter queue>, max? }')
  checkName(o.from, 'redrive: from (the dead-letter queue)')
  const [from, own] = [queueKeys.items(o.from), queueKeys.items(queueName)]
  if (from.startsWith(own) || own.startsWith(from)) {
    throw new InvalidArgumentError(
      `redrive: from ${JSON.stringify(o.from)} overlaps queue ${JSON.stringify(queueName)}; redrive from its dead-letter queue`,
    )
  }
  // No max (or Infinity): every dead letter there is when the redrive starts.
  const max =
    o.max === undefined || o.max === Number.POSITIVE_INFINITY
      ? Number.POSITIVE_INFINITY
      : checkInteger(o.max, 'redrive: max', 1, Number.POSITIVE_INFINITY)
  return { from: o.from, max, signal: o.signal }
}

/**
 * The dead-letter settings of a consumer of `queue` with the defaults of `queueConsumer` and
 * `etcdQueue` events: `maxReceives` 5 and dead-letter queue `dlq/<queue>`. `maxReceives:
 * Infinity` turns dead-lettering off (a poison message is then retried forever, with back-off).
 */
export function consumerDeadLetter(queue: string, o: { maxReceives?: number; deadLetterQueue?: string }): DeadLetterOptions {
  const maxReceives = o.maxReceives ?? DEFAULT_MAX_RECEIVES
  if (maxReceives === Number.POSITIVE_INFINITY) return {}
  return { maxReceives, deadLetterQueue: o.deadLetterQueue ?? defaultDeadLetterQueue(queue) }
}
