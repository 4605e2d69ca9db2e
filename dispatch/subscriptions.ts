// Who the dispatcher delivers to: the `etcdQueue` events of a service, each naming the function
// to invoke. The plugin writes them into the dispatcher function's ETCD_QUEUE_SUBSCRIPTIONS.
import { ConfigurationError, InvalidArgumentError } from '../lib/errors.js'
import { checkQueueSettings, type EtcdQueueEvent } from '../lib/queue/event.js'

/** A function subscribed to a queue: its `etcdQueue` event and the name to invoke. */
export interface QueueSubscription extends EtcdQueueEvent {
  /** The name to invoke: the deployed name `${service}-${stage}-${key}` (or an ARN). */
  function: string
  /** The function's key in serverless.yml, for log lines. */
  functionKey?: string
}

/** The environment variable that carries the subscriptions to the deployed dispatcher. */
export const SUBSCRIPTIONS_ENV = 'ETCD_QUEUE_SUBSCRIPTIONS'

/** Checks one subscription: a function name plus valid queue settings. */
export function checkSubscription(sub: unknown): asserts sub is QueueSubscription {
  const fn = (sub as { function?: unknown } | null)?.function
  if (typeof sub !== 'object' || sub === null || typeof fn !== 'string' || fn === '') {
    throw new InvalidArgumentError(
      `a queue subscription needs { function, queue }: the function to invoke and the queue it reads; got ${JSON.stringify(sub)}`,
    )
  }
  checkQueueSettings(sub, `queue subscription of ${fn}`)
}

/**
 * Reads the subscriptions from `ETCD_QUEUE_SUBSCRIPTIONS` (a JSON array of
 * {@link QueueSubscription}), which the middy-etcd plugin fills in for the dispatcher function.
 */
export function subscriptionsFromEnv(env: Record<string, string | undefined> = process.env): QueueSubscription[] {
  const raw = env[SUBSCRIPTIONS_ENV]
  if (raw === undefined || raw === '') {
    throw new ConfigurationError(
      SUBSCRIPTIONS_ENV,
      `${SUBSCRIPTIONS_ENV} is not set: name the dispatcher function in custom.etcd.dispatcher so the middy-etcd plugin fills it in from the etcdQueue events`,
    )
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch (err) {
    throw new ConfigurationError(SUBSCRIPTIONS_ENV, `${SUBSCRIPTIONS_ENV} is not valid JSON (${(err as Error).message})`, { cause: err })
  }
  if (!Array.isArray(parsed))
    throw new ConfigurationError(SUBSCRIPTIONS_ENV, `${SUBSCRIPTIONS_ENV} must be a JSON array of { function, queue, … }`)
  for (const sub of parsed) checkSubscription(sub)
  return parsed as QueueSubscription[]
}
