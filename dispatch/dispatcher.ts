// The queue dispatcher: claims batches from etcd queues and invokes the functions subscribed to
// them (their `etcdQueue` events) through an invoke function (the Lambda Invoke API in
// practice). The same loop runs inside the offline plugin (pointed at serverless-offline's
// Invoke endpoint) and in the deployable dispatcher function (./handler.ts). It imports only
// lib/: no Middy, no plugin, no build tools.
import type { Namespace } from 'etcd3'
import { QueueMismatchError } from '../lib/errors.js'
import { DEFAULT_BATCH_SIZE, DEFAULT_VISIBILITY_S } from '../lib/limits.js'
import { toQueueMessage, type JsonMessage, type QueueDispatchEvent } from '../lib/queue/event.js'
import { startTimer } from '../lib/timers.js'
import { startProcess, withProcess } from '../lib/telemetry/messaging.js'
import { openQueue, type ReceivingQueue } from './queues.js'
import { checkSubscription, type QueueSubscription } from './subscriptions.js'

/** What came back from one invocation. */
export interface InvokeOutcome {
  /** False when the invoke failed or the function threw. */
  ok: boolean
  /** The function's error message, or the invoke error. */
  error?: string
  /** The function's error class (the Invoke API's `errorType`), e.g. `QueueMismatchError`. */
  errorType?: string
  /** Ids the function reported as failed (`{ batchItemFailures: [{ itemIdentifier }] }`). */
  failedIds?: string[]
}

/** Invokes `functionName` with `event`. */
export type Invoke = (functionName: string, event: QueueDispatchEvent) => Promise<InvokeOutcome>

/** One dispatched batch, for logs and tests. */
export interface DispatchRecord {
  subscription: QueueSubscription
  messageIds: string[]
  outcome: InvokeOutcome
}

/** What {@link runDispatcher} needs: a client, the subscriptions, a way to invoke, a stop signal. */
export interface DispatcherOptions {
  client: Namespace
  subscriptions: QueueSubscription[]
  invoke: Invoke
  /** The dispatcher runs until this aborts. */
  signal: AbortSignal
  /** Called before each invocation (e.g. to print what is dispatched). */
  onDispatch?: (subscription: QueueSubscription, messages: JsonMessage[]) => void
  /** Called after each invocation. */
  onResult?: (record: DispatchRecord) => void
  /**
   * Called when claiming fails (etcd unreachable, …; the loop backs off and retries), and with a
   * {@link QueueMismatchError} when a consumer refused a batch as meant for another queue (the
   * subscription then stops: every further batch would be refused too).
   */
  onError?: (subscription: QueueSubscription, err: unknown) => void
  /** Opens the queue of a subscription (tests may replace it). */
  open?: (client: Namespace, subscription: QueueSubscription) => ReceivingQueue
}

const RETRY_DELAY_MS = 500
const MAX_BACKOFF_MS = 10_000

/**
 * Runs one claim loop per subscription until `signal` aborts, then waits for the invocations in
 * flight. A batch whose invocation fails (invoke error, or the function threw) is nacked, each
 * message with its retry back-off (a message that failed `maxReceives` times is dead-lettered),
 * and the next claim waits a pause that doubles with each failure in a row (0.5 s … 10 s);
 * messages the function did not ack come back by themselves when their visibility timeout ends.
 * A consumer that refuses the batch as meant for another queue (`QueueMismatchError`) stops its
 * subscription; that batch comes back when its visibility timeout ends.
 */
export async function runDispatcher(options: DispatcherOptions): Promise<void> {
  for (const sub of options.subscriptions) checkSubscription(sub)
  await Promise.all(options.subscriptions.map((sub) => runSubscription(options, sub)))
}

async function runSubscription(options: DispatcherOptions, sub: QueueSubscription): Promise<void> {
  const { signal } = options
  const queue = (options.open ?? openQueue)(options.client, sub)
  const slots = sub.concurrency ?? 1
  const inFlight = new Set<Promise<void>>()
  // Failed invocations in a row: each one doubles the pause before the next claim (up to
  // MAX_BACKOFF_MS), so a function that keeps failing is not re-invoked in a tight loop.
  const streak = { failures: 0 }
  // Set when the consumer refused a batch as meant for another queue: no point claiming more.
  const refused = new AbortController()
  const stop = AbortSignal.any([signal, refused.signal])
  while (!stop.aborted) {
    if (inFlight.size >= slots) {
      await Promise.race(inFlight)
      continue
    }
    if (streak.failures > 0) await delay(Math.min(RETRY_DELAY_MS * 2 ** (streak.failures - 1), MAX_BACKOFF_MS), stop)
    if (stop.aborted) break
    let messages: JsonMessage[]
    try {
      messages = await queue.receive({
        max: sub.batchSize ?? DEFAULT_BATCH_SIZE,
        visibilityTimeout: sub.visibilityTimeout ?? DEFAULT_VISIBILITY_S,
        signal: stop,
      })
    } catch (err) {
      if (stop.aborted) break
      options.onError?.(sub, err)
      await delay(RETRY_DELAY_MS, signal)
      continue
    }
    if (messages.length === 0) continue
    const job = dispatchBatch(options, queue, sub, messages)
      .then((outcome) => {
        streak.failures = outcome.ok ? 0 : streak.failures + 1
        if (outcome.errorType === 'QueueMismatchError' && !refused.signal.aborted) {
          refused.abort()
          options.onError?.(
            sub,
            new QueueMismatchError(
              sub.queue,
              sub.queue,
              `function ${sub.functionKey ?? sub.function} refused its etcdQueue batch for queue ${JSON.stringify(sub.queue)}: ${outcome.error}; this subscription stops dispatching until the function's queueConsumer options and its etcdQueue event name the same queue`,
            ),
          )
        }
      })
      .finally(() => inFlight.delete(job))
    inFlight.add(job)
  }
  await Promise.allSettled(inFlight)
}

async function dispatchBatch(options: DispatcherOptions, queue: ReceivingQueue, sub: QueueSubscription, messages: JsonMessage[]) {
  options.onDispatch?.(sub, messages)
  const event: QueueDispatchEvent = {
    etcdQueue: { queue: sub.queue, priority: sub.priority ?? false, messages: messages.map(toQueueMessage) },
  }
  // `process {queue}` around the invocation, linked to each message's producer span; the Invoke
  // call runs inside it. The messages carry their trace context on to the function, whose
  // queueConsumer links its own process span to the producers too.
  const processing = startProcess(sub.queue, messages)
  let outcome: InvokeOutcome
  try {
    outcome = await withProcess(processing, () => options.invoke(sub.function, event))
  } catch (err) {
    outcome = { ok: false, error: (err as Error)?.message ?? String(err) }
  }
  // Give a failed batch back now, each message after its retry delay (or to the dead-letter
  // queue), rather than after the visibility timeout. A message the function acked before it
  // failed is gone already: its nack is a no-op. A batch refused as meant for another queue was
  // not tried: it is left to come back after its visibility timeout, its messages not failed.
  if (!outcome.ok && outcome.errorType !== 'QueueMismatchError') await Promise.allSettled(messages.map((m) => queue.nack(m.receipt)))
  if (outcome.ok) processing?.end()
  else processing?.fail(Object.assign(new Error(outcome.error ?? 'the invocation failed'), { name: outcome.errorType ?? 'InvokeError' }))
  options.onResult?.({ subscription: sub, messageIds: messages.map((m) => m.id), outcome })
  return outcome
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = startTimer(ms, done, { ref: true })
    signal.addEventListener('abort', done, { once: true })
    function done() {
      timer.cancel()
      signal.removeEventListener('abort', done)
      resolve()
    }
  })
}
