import type { Namespace } from 'etcd3'
import { SessionExpiredError, type LeaseLostError } from '../lib/errors.js'
import type { Session } from '../lib/session.js'
import { startTimer, timeoutSignal, type Timer } from '../lib/timers.js'
import { leasePool } from './lease-pool.js'

/**
 * Everything one invocation holds in etcd, so that it can all be let go in every path Middy
 * can take: `after`, `onError`, a short-circuit by one of our guards (Middy then skips every
 * `after`), Middy's `requestEnd` plugin hook with {@link etcdPlugin} (which runs on every path,
 * also when another middleware answers early or throws in `onError`), and, as the last resort
 * without the plugin, a timer at the invocation's deadline that stops the keepalive so the
 * lease (and every key on it) expires one TTL later.
 *
 * State lives in a WeakMap keyed by Middy's request object: never in a middleware's closure,
 * which concurrent invocations share.
 */

/** The least lifetime of an invocation without `getRemainingTimeInMillis` (tests, containers): Lambda's maximum. */
const DEFAULT_DEADLINE_MS = 15 * 60 * 1000
/** Time kept back from the deadline to release in. */
export const RELEASE_MARGIN_MS = 300

export interface LambdaLikeContext {
  getRemainingTimeInMillis?: () => number
}

type Release = () => Promise<void>

/**
 * An AbortSignal that fires when a wait must give up: after `waitMs`, or when only the release
 * margin of the invocation's remaining time is left, whichever comes first. Middy's own
 * early-timeout signal covers only the handler, so waits in `before` need this.
 */
export function waitBudget(context: LambdaLikeContext, waitMs = Infinity): { signal: AbortSignal; ms: number } {
  return budgetUntil(deadlineOf(context), waitMs)
}

/** `performance.now()` at which the invocation of `context` times out. */
function deadlineOf(context: LambdaLikeContext): number {
  return performance.now() + (context?.getRemainingTimeInMillis?.() ?? DEFAULT_DEADLINE_MS)
}

/** A wait budget whose clock starts late: see {@link InvocationScope.deferredWaitBudget}. */
export interface DeferredBudget {
  signal: AbortSignal
  /** The budget in ms, counted from when it was made. */
  ms: number
  /** Arms the timer for what is left of `ms` (call it when the wait begins). */
  start(): void
  /** Clears the timer (call it when the wait is over). */
  stop(): void
}

function deferredBudgetUntil(deadline: number, waitMs: number): DeferredBudget {
  const madeAt = performance.now()
  const ms = Math.floor(Math.max(0, Math.min(waitMs, deadline - RELEASE_MARGIN_MS - madeAt)))
  const controller = new AbortController()
  let timer: Timer | undefined
  return {
    signal: controller.signal,
    ms,
    start() {
      if (timer || controller.signal.aborted) return
      const left = Math.max(0, ms - (performance.now() - madeAt))
      // The same reason AbortSignal.timeout() gives.
      timer = startTimer(left, () => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')))
    },
    stop: () => timer?.cancel(),
  }
}

function budgetUntil(deadline: number, waitMs: number): { signal: AbortSignal; ms: number } {
  const ms = Math.floor(Math.max(0, Math.min(waitMs, deadline - RELEASE_MARGIN_MS - performance.now())))
  return { signal: timeoutSignal(ms).signal, ms }
}

/**
 * The etcd state of one invocation (one Middy request) on one client: its sessions, lent from
 * the lease pool, and what each of our middlewares acquired with them.
 */
export class InvocationScope {
  private readonly sessions = new Map<number, Promise<Session>>()
  private readonly holds = new Map<object, Release>()
  private readonly deadlineTimer: Timer
  private ended = false
  private failure: unknown
  /** `performance.now()` by which everything must be released. */
  readonly deadline: number

  private constructor(
    private readonly request: object,
    readonly client: Namespace,
    context: LambdaLikeContext,
    /** The middleware that opened the scope: it closes it. */
    readonly owner: object,
  ) {
    this.deadline = deadlineOf(context)
    this.deadlineTimer = startTimer(this.deadline - performance.now(), () => this.abandon())
  }

  /** Like {@link waitBudget}, from this invocation's deadline. */
  waitBudget(waitMs = Infinity): { signal: AbortSignal; ms: number } {
    return budgetUntil(this.deadline, waitMs)
  }

  /**
   * Like {@link waitBudget}, but no timer runs until `start()`: for a lock call that reports
   * when it has to wait (`onWaiting`), so an acquire that succeeds at once, the warm path,
   * arms and leaves no timer.
   */
  deferredWaitBudget(waitMs = Infinity): DeferredBudget {
    return deferredBudgetUntil(this.deadline, waitMs)
  }

  /** The invocation's session for `ttl`: shared by all its middlewares, lent from the lease pool. */
  session(ttl: number): Promise<Session> {
    let session = this.sessions.get(ttl)
    if (!session) {
      session = leasePool(this.client).take(ttl)
      this.sessions.set(ttl, session)
      session.catch(() => this.sessions.delete(ttl))
    }
    return session
  }

  /**
   * Runs `acquire` on the invocation's session for `ttl`. If it fails because the lent lease
   * turns out to be gone (revoked by an operator, say) before this invocation held anything on
   * it, nothing was acquired — etcd refuses the whole Txn — so it runs once more on a freshly
   * granted lease instead of failing the invocation.
   */
  async withSession<T>(ttl: number, acquire: (session: Session) => Promise<T>): Promise<T> {
    const session = await this.session(ttl)
    try {
      return await acquire(session)
    } catch (err) {
      if (!this.leaseWasGone(session, err)) throw err
      this.sessions.delete(ttl)
      return acquire(await this.session(ttl))
    }
  }

  /** Whether `err` comes from `session`'s lease being gone while this scope held nothing. */
  private leaseWasGone(session: Session, err: unknown): boolean {
    const reason = session.signal.reason as LeaseLostError | undefined
    return (
      err instanceof SessionExpiredError &&
      session.signal.aborted &&
      (reason?.reason === 'revoked' || reason?.reason === 'expired') &&
      this.holds.size === 0
    )
  }

  /** Records what `holder` must release; replaces an earlier record of the same holder. */
  hold(holder: object, release: Release): void {
    this.holds.set(holder, release)
  }

  /**
   * Releases what `holder` acquired in this invocation (nothing if it acquired nothing). A
   * failed release is remembered, not thrown: the session is then not reused, and the lease's
   * expiry frees whatever the release could not.
   */
  async release(holder: object): Promise<void> {
    const release = this.holds.get(holder)
    if (!release) return
    this.holds.delete(holder)
    await release().catch((err) => (this.failure ??= err))
  }

  /**
   * Releases everything still held, newest first, then returns the sessions to the pool. A
   * session whose release failed is orphaned instead: its keys go when its lease expires.
   */
  async end(): Promise<void> {
    if (this.ended) return
    this.ended = true
    this.deadlineTimer.cancel()
    for (const holder of [...this.holds.keys()].reverse()) await this.release(holder)
    for (const pending of this.sessions.values()) {
      const session = await pending.catch(() => undefined)
      if (!session) continue
      if (this.failure === undefined) leasePool(this.client).give(session)
      else session.orphan()
    }
    scopes.get(this.request)?.delete(this.client)
  }

  /** Deadline passed and nobody ended the scope: stop keepalives so the leases run out. */
  private abandon() {
    if (this.ended) return
    this.ended = true
    for (const pending of this.sessions.values()) pending.then((s) => s.orphan(), () => {})
  }

  /** The scope of `request` for `client`, opened by `owner` if there is none yet. */
  static of(request: object, client: Namespace, context: LambdaLikeContext, owner: object): InvocationScope {
    let byClient = scopes.get(request)
    if (!byClient) {
      byClient = new Map()
      scopes.set(request, byClient)
    }
    let scope = byClient.get(client)
    if (!scope || scope.ended) {
      scope = new InvocationScope(request, client, context, owner)
      byClient.set(client, scope)
    }
    return scope
  }

  /** The scope of `request` for `client`, if one is open. */
  static find(request: object, client: Namespace): InvocationScope | undefined {
    return scopes.get(request)?.get(client)
  }

  /**
   * What a middleware's `after` and `onError` do: release what `holder` acquired for `request`,
   * and close the scope if `holder` opened it (the outermost of our middlewares runs last).
   */
  static async settle(request: object, client: Namespace, holder: object): Promise<void> {
    const scope = InvocationScope.find(request, client)
    if (!scope) return
    await scope.release(holder)
    if (scope.owner === holder) await scope.end()
  }

  /**
   * Ends every open scope of `request` (all clients): used by our guards before they
   * short-circuit, and by {@link etcdPlugin}'s `requestEnd` on every path.
   */
  static async endAll(request: object): Promise<void> {
    const byClient = scopes.get(request)
    if (!byClient) return
    await Promise.all([...byClient.values()].map((scope) => scope.end()))
  }
}

const scopes = new WeakMap<object, Map<Namespace, InvocationScope>>()
