// The queue dispatcher: claims batches from etcd queues and invokes the functions subscribed to
// them (their `etcdQueue` events) through the Lambda Invoke API. The same code runs inside the
// offline plugin (pointed at serverless-offline's Invoke endpoint) and as a deployable function
// (pointed at AWS, guarded by `leaderGuard` so one instance runs). No Middy imports here.
import type { Namespace } from 'etcd3'
import { ConfigurationError, InvalidArgumentError } from '../lib/errors.js'
import { openQueue, toEventMessage, type ClaimedMessage, type ReceivingQueue } from './queues.js'
import type { QueueConsumerOptions } from '../middleware/queue-consumer.js'

/** What a function subscribes to: the `etcdQueue` event of serverless.yml (queueConsumer's queue options). */
export interface EtcdQueueEvent
  extends Pick<QueueConsumerOptions, 'queue' | 'priority' | 'batchSize' | 'visibilityTimeout' | 'maxReceives' | 'deadLetterQueue'> {
  /** Batches in flight at once for this subscription (default 1). */
  concurrency?: number
}

/** A function subscribed to a queue. */
export interface QueueSubscription extends EtcdQueueEvent {
  /** The name to invoke: the deployed name `${service}-${stage}-${key}` (or an ARN). */
  function: string
  /** The function's key in serverless.yml, for log lines. */
  functionKey?: string
}

/** The event a subscribed function receives; `queueConsumer` reads `event.etcdQueue.messages`. */
export interface DispatchEvent {
  etcdQueue: {
    queue: string
    priority: boolean
    messages: unknown[]
  }
}

/** What came back from one invocation. */
export interface InvokeOutcome {
  /** False when the invoke failed or the function threw. */
  ok: boolean
  /** The function's error message, or the invoke error. */
  error?: string
  /** Ids the function reported as failed (`{ batchItemFailures: [{ itemIdentifier }] }`). */
  failedIds?: string[]
}

/** Invokes `functionName` with `event`. */
export type Invoke = (functionName: string, event: DispatchEvent) => Promise<InvokeOutcome>

/** One dispatched batch, for logs and tests. */
export interface DispatchRecord {
  subscription: QueueSubscription
  messageIds: string[]
  outcome: InvokeOutcome
}

export interface DispatcherOptions {
  client: Namespace
  subscriptions: QueueSubscription[]
  invoke: Invoke
  /** The dispatcher runs until this aborts. */
  signal: AbortSignal
  /** Called before each invocation (e.g. to print what is dispatched). */
  onDispatch?: (subscription: QueueSubscription, messages: ClaimedMessage[]) => void
  /** Called after each invocation. */
  onResult?: (record: DispatchRecord) => void
  /** Called when claiming fails (etcd unreachable, …); the loop backs off and retries. */
  onError?: (subscription: QueueSubscription, err: unknown) => void
  /** Opens the queue of a subscription (tests may replace it). */
  open?: (client: Namespace, subscription: QueueSubscription) => ReceivingQueue
}

const DEFAULT_BATCH = 10
const DEFAULT_VISIBILITY_S = 30
const RETRY_DELAY_MS = 500
const MAX_BACKOFF_MS = 10_000

/**
 * Runs one claim loop per subscription until `signal` aborts, then waits for the invocations in
 * flight. A batch whose invocation fails (invoke error, or the function threw) is released at
 * once (`nack`) so it is redelivered, after a pause that doubles with each failure in a row
 * (0.5 s … 10 s); messages the function did not ack come back by themselves when their
 * visibility timeout ends.
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
  while (!signal.aborted) {
    if (inFlight.size >= slots) {
      await Promise.race(inFlight)
      continue
    }
    if (streak.failures > 0) await delay(Math.min(RETRY_DELAY_MS * 2 ** (streak.failures - 1), MAX_BACKOFF_MS), signal)
    if (signal.aborted) break
    let messages: ClaimedMessage[]
    try {
      messages = await queue.receive({
        max: sub.batchSize ?? DEFAULT_BATCH,
        visibilityTimeout: sub.visibilityTimeout ?? DEFAULT_VISIBILITY_S,
        signal,
      })
    } catch (err) {
      if (signal.aborted) break
      options.onError?.(sub, err)
      await delay(RETRY_DELAY_MS, signal)
      continue
    }
    if (messages.length === 0) continue
    const job = dispatchBatch(options, queue, sub, messages)
      .then((ok) => {
        streak.failures = ok ? 0 : streak.failures + 1
      })
      .finally(() => inFlight.delete(job))
    inFlight.add(job)
  }
  await Promise.allSettled(inFlight)
}

async function dispatchBatch(options: DispatcherOptions, queue: ReceivingQueue, sub: QueueSubscription, messages: ClaimedMessage[]) {
  options.onDispatch?.(sub, messages)
  const event: DispatchEvent = {
    etcdQueue: { queue: sub.queue, priority: sub.priority ?? false, messages: messages.map(toEventMessage) },
  }
  let outcome: InvokeOutcome
  try {
    outcome = await options.invoke(sub.function, event)
  } catch (err) {
    outcome = { ok: false, error: (err as Error)?.message ?? String(err) }
  }
  if (!outcome.ok) {
    // Give the batch back now rather than after the visibility timeout. A message the function
    // acked before it failed is gone already; nack of it is a no-op.
    await Promise.allSettled(messages.map((m) => queue.nack(m.receipt)))
  }
  options.onResult?.({ subscription: sub, messageIds: messages.map((m) => m.id), outcome })
  return outcome.ok
}

function checkSubscription(sub: QueueSubscription) {
  if (!sub || typeof sub !== 'object') throw new InvalidArgumentError('a queue subscription must be an object { function, queue }')
  if (typeof sub.function !== 'string' || sub.function === '') throw new InvalidArgumentError(`queue subscription ${JSON.stringify(sub)} needs a function name`)
  if (typeof sub.queue !== 'string' || sub.queue === '') throw new InvalidArgumentError(`queue subscription of ${sub.function} needs a queue name`)
  for (const field of ['batchSize', 'visibilityTimeout', 'maxReceives', 'concurrency'] as const) {
    const v = sub[field]
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
      throw new InvalidArgumentError(`queue subscription of ${sub.function}: ${field} must be a positive integer, got ${JSON.stringify(v)}`)
    }
  }
  if ((sub.maxReceives === undefined) !== (sub.deadLetterQueue === undefined)) {
    throw new InvalidArgumentError(`queue subscription of ${sub.function}: maxReceives and deadLetterQueue go together (messages received maxReceives times move to deadLetterQueue)`)
  }
}

/**
 * Reads the subscriptions from `ETCD_QUEUE_SUBSCRIPTIONS` (JSON array of
 * {@link QueueSubscription}), which the offline plugin fills in for the dispatcher function.
 */
export function subscriptionsFromEnv(env: Record<string, string | undefined> = process.env): QueueSubscription[] {
  const raw = env.ETCD_QUEUE_SUBSCRIPTIONS
  if (raw === undefined || raw === '') {
    throw new ConfigurationError(
      'ETCD_QUEUE_SUBSCRIPTIONS',
      'ETCD_QUEUE_SUBSCRIPTIONS is not set: name the dispatcher function in custom.etcd.dispatcher so the middy-etcd plugin fills it in from the etcdQueue events',
    )
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch (err) {
    throw new ConfigurationError('ETCD_QUEUE_SUBSCRIPTIONS', `ETCD_QUEUE_SUBSCRIPTIONS is not valid JSON (${(err as Error).message})`, { cause: err })
  }
  if (!Array.isArray(parsed)) throw new ConfigurationError('ETCD_QUEUE_SUBSCRIPTIONS', 'ETCD_QUEUE_SUBSCRIPTIONS must be a JSON array of { function, queue, … }')
  for (const sub of parsed) checkSubscription(sub as QueueSubscription)
  return parsed as QueueSubscription[]
}

/** Options of {@link lambdaInvoker}. */
export interface LambdaInvokerOptions {
  /**
   * Invoke API endpoint; default `MIDDY_ETCD_LAMBDA_ENDPOINT` (the offline plugin sets it to
   * serverless-offline's, e.g. http://localhost:3002), else AWS.
   */
  endpoint?: string
  /** Default `AWS_REGION`, else us-east-1. */
  region?: string
  /** `RequestResponse` (default): wait and learn the outcome; `Event`: fire and forget. */
  invocationType?: 'Event' | 'RequestResponse'
  env?: Record<string, string | undefined>
}

/**
 * An {@link Invoke} over `@aws-sdk/client-lambda` (loaded on first use). Against a local endpoint
 * it uses dummy credentials, which serverless-offline accepts, unless AWS credentials are set.
 */
export function lambdaInvoker(options: LambdaInvokerOptions = {}): Invoke {
  const env = options.env ?? process.env
  const endpoint = options.endpoint ?? (env.MIDDY_ETCD_LAMBDA_ENDPOINT || undefined)
  const region = options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1'
  const invocationType = options.invocationType ?? 'RequestResponse'
  if (invocationType !== 'Event' && invocationType !== 'RequestResponse') {
    throw new InvalidArgumentError(`invocationType must be 'Event' or 'RequestResponse', got ${JSON.stringify(invocationType)}`)
  }
  let client: Promise<{ send: (command: unknown) => Promise<any>; InvokeCommand: any }> | undefined
  const load = () =>
    (client ??= import('@aws-sdk/client-lambda').then(({ LambdaClient, InvokeCommand }) => {
      const local = endpoint !== undefined && !env.AWS_ACCESS_KEY_ID
      const lambda = new LambdaClient({
        region,
        ...(endpoint ? { endpoint } : {}),
        ...(local ? { credentials: { accessKeyId: 'offline', secretAccessKey: 'offline' } } : {}),
      })
      return { send: (c: unknown) => lambda.send(c as never), InvokeCommand }
    }))
  return async (functionName, event) => {
    const { send, InvokeCommand } = await load()
    const res = await send(
      new InvokeCommand({ FunctionName: functionName, InvocationType: invocationType, Payload: Buffer.from(JSON.stringify(event)) }),
    )
    if (invocationType === 'Event') return { ok: res.StatusCode === 202 || res.StatusCode === 200 }
    const text = res.Payload ? Buffer.from(res.Payload as Uint8Array).toString('utf8') : ''
    let body: any
    try {
      body = text ? JSON.parse(text) : undefined
    } catch {
      body = text
    }
    if (res.FunctionError) {
      return { ok: false, error: String(body?.errorMessage ?? body?.Message ?? res.FunctionError) }
    }
    const failures = Array.isArray(body?.batchItemFailures) ? body.batchItemFailures : []
    return { ok: true, failedIds: failures.map((f: { itemIdentifier?: unknown }) => String(f?.itemIdentifier)) }
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
    function done() {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
  })
}
