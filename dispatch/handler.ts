// The deployable dispatcher function: on a schedule, one elected invocation claims messages
// from every `etcdQueue` subscription and invokes the subscribed functions until the next run
// takes over (./handover.ts) or shortly before its own timeout. Built on lib/ only (Session +
// Election for "one at a time"), so the deployed bundle carries no Middy, plugin or build code.
import type { Namespace } from 'etcd3'
import { checkClient, checkSeconds } from '../lib/core/check.js'
import { sharedClient } from '../lib/core/client.js'
import { Election } from '../lib/locks/election.js'
import { InvalidArgumentError } from '../lib/errors.js'
import { Session } from '../lib/session/session.js'
import { startTimer } from '../lib/timers.js'
import { runDispatcher, type Invoke } from './dispatcher.js'
import { campaignFor, successorWaiting } from './handover.js'
import { lambdaInvoker } from './lambda-invoker.js'
import { checkSubscription, subscriptionsFromEnv, type QueueSubscription } from './subscriptions.js'

/** Options of {@link dispatcherHandler}; each falls back to the environment, then a default. */
export interface DispatcherHandlerOptions {
  /**
   * The election that lets one dispatcher run at a time. Default `middy-etcd/dispatcher:<function
   * name>` (the function's own name, which carries its service and stage), so two services or
   * stages on one etcd each run their own dispatcher; `middy-etcd/dispatcher` when the context
   * has no function name.
   */
  election?: string
  /**
   * Stop claiming this long before the invocation's timeout, ms, if no later run has taken over
   * by then: the time left to let the invocations in flight finish. Env `ETCD_DISPATCH_TAIL_MS`,
   * default 10000.
   */
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
  /**
   * False when this invocation never led: another run kept the leadership for as long as this
   * one could have claimed (it waited as a candidate, then withdrew and did nothing).
   */
  leader: boolean
  /** The leading dispatcher's proposal (`<function>:<request id>`) when this one gave up waiting. */
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

/**
 * The default election of a run: one per function. A single shared name made the dispatchers of
 * two services on one etcd take turns, each serving only its own subscriptions while it led
 * (the other's queues waited a minute at a time). ':' rather than '/' so that it is not a nested
 * name below the shared one (whose candidates are the keys directly below `<name>/`).
 */
function defaultElection(functionName: string | undefined): string {
  return functionName ? `${DEFAULT_ELECTION}:${functionName}` : DEFAULT_ELECTION
}
const DEFAULT_TAIL_MS = 10_000
const DEFAULT_TTL_S = 10
/** The shortest claiming window worth starting. */
const MIN_WINDOW_MS = 1_000

function checkOptions(options: DispatcherHandlerOptions): void {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError(`dispatcherHandler: options must be an object, got ${String(options)}`)
  const { election, tailMs, invocationType, ttl, subscriptions, invoke, client } = options
  if (election !== undefined && (typeof election !== 'string' || election === ''))
    throw new InvalidArgumentError('dispatcherHandler: election must be a non-empty name')
  if (tailMs !== undefined && (!Number.isFinite(tailMs) || tailMs < 0))
    throw new InvalidArgumentError(`dispatcherHandler: tailMs must be a number of ms >= 0, got ${String(tailMs)}`)
  if (invocationType !== undefined && invocationType !== 'Event' && invocationType !== 'RequestResponse') {
    throw new InvalidArgumentError(
      `dispatcherHandler: invocationType must be 'Event' or 'RequestResponse', got ${JSON.stringify(invocationType)}`,
    )
  }
  if (ttl !== undefined) checkSeconds(ttl, 'dispatcherHandler: ttl')
  if (subscriptions !== undefined) {
    if (!Array.isArray(subscriptions))
      throw new InvalidArgumentError('dispatcherHandler: subscriptions must be an array of { function, queue, … }')
    subscriptions.forEach(checkSubscription)
  }
  if (invoke !== undefined && typeof invoke !== 'function')
    throw new InvalidArgumentError('dispatcherHandler: invoke must be a function (functionName, event) => Promise<InvokeOutcome>')
  if (client !== undefined) checkClient(client, 'dispatcherHandler')
}

/**
 * The claiming of one leadership: its signal aborts after `ms`, when leadership is lost, on
 * `handOver()`, or on `dispose()`. A plain timer, not
 * `AbortSignal.any([AbortSignal.timeout(ms), …])`: Node may collect a timeout signal that only
 * a composite signal refers to, and then the composite never aborts.
 */
function claimingWindow(ms: number, leadership: AbortSignal) {
  const controller = new AbortController()
  const lost = () => controller.abort(leadership.reason)
  const timer = startTimer(ms, () => controller.abort(new Error('the claiming window ended')), { ref: true })
  leadership.addEventListener('abort', lost, { once: true })
  if (leadership.aborted) lost()
  const ended = new Promise<void>((resolve) => controller.signal.addEventListener('abort', () => resolve(), { once: true }))
  return {
    signal: controller.signal,
    /** Resolves when the signal aborts. */
    ended,
    handOver: () => controller.abort(new Error('a later dispatcher run took over')),
    dispose() {
      timer.cancel()
      leadership.removeEventListener('abort', lost)
      controller.abort(new Error('the dispatcher run ended'))
    },
  }
}

function tailFromEnv(env: Record<string, string | undefined>): number {
  const raw = env.ETCD_DISPATCH_TAIL_MS
  if (raw === undefined || raw === '') return DEFAULT_TAIL_MS
  const ms = Number(raw)
  if (!Number.isFinite(ms) || ms < 0)
    throw new InvalidArgumentError(`ETCD_DISPATCH_TAIL_MS must be a number of ms >= 0, got ${JSON.stringify(raw)}`)
  return ms
}

/**
 * A Lambda handler that dispatches queued messages to the `etcdQueue` functions. Schedule it
 * with a timeout longer than its rate plus `tailMs` (e.g. `rate(1 minute)`, timeout 120 s) and
 * allow it `lambda:InvokeFunction` on the consumers. Runs overlap by design: a run that finds a
 * leader waits in the election as its successor; the leader, on seeing it, stops claiming and
 * resigns at once, so the later run takes over within milliseconds and leads until the next
 * one arrives. A leader with no successor claims until `tailMs` before its timeout or until its
 * leadership lease is lost, then resigns. Either way it resigns before it waits for its
 * invocations in flight, which finish beside the successor's first batches.
 */
export function dispatcherHandler(
  options: DispatcherHandlerOptions = {},
): (event: unknown, context: DispatcherContext) => Promise<DispatcherResult> {
  checkOptions(options)
  let invoke = options.invoke
  return async (_event, context) => {
    const env = process.env
    const subscriptions = options.subscriptions ?? subscriptionsFromEnv(env)
    const tailMs = options.tailMs ?? tailFromEnv(env)
    const invocationType = options.invocationType ?? (env.ETCD_DISPATCH_INVOCATION_TYPE === 'Event' ? 'Event' : 'RequestResponse')
    invoke ??= lambdaInvoker({ invocationType })
    const client = options.client ?? sharedClient()
    const name = options.election ?? defaultElection(context.functionName)
    const session = await Session.create(client, { ttl: options.ttl ?? DEFAULT_TTL_S })
    try {
      const election = new Election(session, name)
      const proposal = `${context.functionName ?? 'dispatcher'}:${context.awsRequestId ?? process.pid}`
      /** How long this run may still claim. */
      const claimable = () => context.getRemainingTimeInMillis() - tailMs
      // Wait for the leader to hand over while this run could still claim for MIN_WINDOW_MS.
      if (!(await campaignFor(election, proposal, claimable() - MIN_WINDOW_MS))) {
        const leader = await election.leader().catch(() => undefined)
        return { leader: false, ...(leader ? { leaderValue: leader.value } : {}), dispatched: 0, failed: 0 }
      }
      const totals = { dispatched: 0, failed: 0 }
      const window = claimingWindow(Math.max(MIN_WINDOW_MS, claimable()), session.signal)
      successorWaiting(client, name, election.rev, window.signal).then(window.handOver, (err: unknown) => {
        // Without it this run leads until its window ends; a waiting successor still takes over then.
        if (!window.signal.aborted) console.error('middy-etcd dispatcher: watching for the next run failed:', err)
      })
      const running = runDispatcher({
        client,
        subscriptions,
        invoke,
        signal: window.signal,
        onResult: (r) => {
          totals.dispatched += r.messageIds.length
          if (!r.outcome.ok) totals.failed += r.messageIds.length
        },
        onError: (s, err) => console.error(`middy-etcd dispatcher: claiming from ${s.queue} failed:`, err),
      })
      try {
        // Claiming stops (or every subscription stopped by itself): step down now, before the
        // invocations in flight finish, so that a waiting successor claims meanwhile.
        await Promise.race([window.ended, running])
      } finally {
        window.dispose()
        await election.resign().catch(() => {})
        await running
      }
      return { leader: true, ...totals }
    } finally {
      await session.close()
    }
  }
}

/** The dispatcher function with every setting from the environment: `export { handler } from 'middy-etcd/dispatcher'`. */
export const handler = dispatcherHandler()
