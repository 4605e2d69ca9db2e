// The deployable dispatcher function: on a schedule, one elected invocation claims messages
// from every `etcdQueue` subscription and invokes the subscribed functions until shortly before
// its own timeout. Built on lib/ only (Session + Election for "one at a time"), so the deployed
// bundle carries no Middy, plugin or build code.
import type { Namespace } from 'etcd3'
import { checkClient } from '../lib/check.js'
import { sharedClient } from '../lib/client.js'
import { Election } from '../lib/election.js'
import { InvalidArgumentError } from '../lib/errors.js'
import { Session } from '../lib/session.js'
import { startTimer } from '../lib/timers.js'
import { runDispatcher, type Invoke } from './dispatcher.js'
import { lambdaInvoker } from './lambda-invoker.js'
import { checkSubscription, subscriptionsFromEnv, type QueueSubscription } from './subscriptions.js'

/** Options of {@link dispatcherHandler}; each falls back to the environment, then a default. */
export interface DispatcherHandlerOptions {
  /** The election that lets one dispatcher run at a time (default `middy-etcd/dispatcher`). */
  election?: string
  /** Stop claiming this long before the invocation's timeout, ms. Env `ETCD_DISPATCH_TAIL_MS`, default 10000. */
  tailMs?: number
  /** How consumers are invoked. Env `ETCD_DISPATCH_INVOCATION_TYPE`, default `RequestResponse`. */
  invocationType?: 'Event' | 'RequestResponse'
  /** Lease TTL of the leadership, seconds (default 10): a crashed dispatcher is replaced after it. */
  ttl?: number
  /** Default: `subscriptionsFromEnv()` (ETCD_QUEUE_SUBSCRIPTIONS, filled in by the plugin). */
  subscriptions?: QueueSubscription[]
  /** Default: `lambdaInvoker({ invocationType })`. */
  invoke?: Invoke
  /** Default: `sharedClient()`. */
  client?: Namespace
}

/** What one dispatcher invocation did. */
export interface DispatcherResult {
  /** False when another dispatcher was running: this invocation did nothing. */
  leader: boolean
  /** The running dispatcher's proposal (`<function>:<request id>`), for a follower. */
  leaderValue?: string
  /** Messages handed to consumers. */
  dispatched: number
  /** Of those, messages whose invocation failed (released for redelivery). */
  failed: number
}

/** The part of the Lambda context the dispatcher reads. */
export interface DispatcherContext {
  getRemainingTimeInMillis(): number
  functionName?: string
  awsRequestId?: string
}

const DEFAULT_ELECTION = 'middy-etcd/dispatcher'
const DEFAULT_TAIL_MS = 10_000
const DEFAULT_TTL_S = 10
/** The shortest claiming window worth starting. */
const MIN_WINDOW_MS = 1_000

function checkOptions(options: DispatcherHandlerOptions): void {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError(`dispatcherHandler: options must be an object, got ${String(options)}`)
  const { election, tailMs, invocationType, ttl, subscriptions, invoke, client } = options
  if (election !== undefined && (typeof election !== 'string' || election === '')) throw new InvalidArgumentError('dispatcherHandler: election must be a non-empty name')
  if (tailMs !== undefined && (!Number.isFinite(tailMs) || tailMs < 0)) throw new InvalidArgumentError(`dispatcherHandler: tailMs must be a number of ms >= 0, got ${String(tailMs)}`)
  if (invocationType !== undefined && invocationType !== 'Event' && invocationType !== 'RequestResponse') {
    throw new InvalidArgumentError(`dispatcherHandler: invocationType must be 'Event' or 'RequestResponse', got ${JSON.stringify(invocationType)}`)
  }
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 1)) throw new InvalidArgumentError(`dispatcherHandler: ttl must be a whole number of seconds >= 1, got ${String(ttl)}`)
  if (subscriptions !== undefined) {
    if (!Array.isArray(subscriptions)) throw new InvalidArgumentError('dispatcherHandler: subscriptions must be an array of { function, queue, … }')
    subscriptions.forEach(checkSubscription)
  }
  if (invoke !== undefined && typeof invoke !== 'function') throw new InvalidArgumentError('dispatcherHandler: invoke must be a function (functionName, event) => Promise<InvokeOutcome>')
  if (client !== undefined) checkClient(client, 'dispatcherHandler')
}

/**
 * A signal that aborts after `ms` or when leadership is lost. A plain timer, not
 * `AbortSignal.any([AbortSignal.timeout(ms), …])`: Node may collect a timeout signal that only
 * a composite signal refers to, and then the composite never aborts.
 */
function claimingWindow(ms: number, leadership: AbortSignal): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController()
  const end = () => controller.abort(leadership.aborted ? leadership.reason : new Error('the claiming window ended'))
  const timer = startTimer(ms, end, { ref: true })
  leadership.addEventListener('abort', end, { once: true })
  return {
    signal: controller.signal,
    dispose() {
      timer.cancel()
      leadership.removeEventListener('abort', end)
    },
  }
}

function tailFromEnv(env: Record<string, string | undefined>): number {
  const raw = env.ETCD_DISPATCH_TAIL_MS
  if (raw === undefined || raw === '') return DEFAULT_TAIL_MS
  const ms = Number(raw)
  if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError(`ETCD_DISPATCH_TAIL_MS must be a number of ms >= 0, got ${JSON.stringify(raw)}`)
  return ms
}

/**
 * A Lambda handler that dispatches queued messages to the `etcdQueue` functions. Schedule it
 * (e.g. `rate(1 minute)`, timeout 60 s) and allow it `lambda:InvokeFunction` on the consumers.
 * Overlapping runs are safe: one wins the election and dispatches, the others return
 * `{ leader: false }` at once. The winner claims until `tailMs` before its timeout or until its
 * leadership lease is lost, then waits for the invocations in flight and resigns.
 */
export function dispatcherHandler(options: DispatcherHandlerOptions = {}): (event: unknown, context: DispatcherContext) => Promise<DispatcherResult> {
  checkOptions(options)
  let invoke = options.invoke
  return async (_event, context) => {
    const env = process.env
    const subscriptions = options.subscriptions ?? subscriptionsFromEnv(env)
    const tailMs = options.tailMs ?? tailFromEnv(env)
    const invocationType = options.invocationType ?? (env.ETCD_DISPATCH_INVOCATION_TYPE === 'Event' ? 'Event' : 'RequestResponse')
    invoke ??= lambdaInvoker({ invocationType })
    const client = options.client ?? sharedClient()
    const session = await Session.create(client, { ttl: options.ttl ?? DEFAULT_TTL_S })
    try {
      const election = new Election(session, options.election ?? DEFAULT_ELECTION)
      const won = await election.tryCampaign(`${context.functionName ?? 'dispatcher'}:${context.awsRequestId ?? process.pid}`)
      if (!won.elected) return { leader: false, leaderValue: won.leader.value, dispatched: 0, failed: 0 }
      const window = Math.max(MIN_WINDOW_MS, context.getRemainingTimeInMillis() - tailMs)
      const totals = { dispatched: 0, failed: 0 }
      const stop = claimingWindow(window, session.signal)
      try {
        await runDispatcher({
          client,
          subscriptions,
          invoke,
          signal: stop.signal,
          onResult: (r) => {
            totals.dispatched += r.messageIds.length
            if (!r.outcome.ok) totals.failed += r.messageIds.length
          },
          onError: (s, err) => console.error(`middy-etcd dispatcher: claiming from ${s.queue} failed:`, err),
        })
      } finally {
        stop.dispose()
        await election.resign().catch(() => {})
      }
      return { leader: true, ...totals }
    } finally {
      await session.close()
    }
  }
}

/** The dispatcher function with every setting from the environment: `export { handler } from 'middy-etcd/dispatcher'`. */
export const handler = dispatcherHandler()
