import type { Namespace } from 'etcd3'
import { SessionExpiredError, type LeaseLostError } from '../lib/errors.js'
import type { Session } from '../lib/session/session.js'
import { startTimer, timeoutSignal, type Timer } from '../lib/timers.js'
import { leasePool } from './lease-pool.js'
import { requestSlot, type RequestLike } from './state.js'

/**
 * Everything one invocation holds in etcd, so that it can all be let go in every path Middy
 * can take: `after`, `onError`, a short-circuit by one of our guards (Middy then skips every
 * `after`), Middy's `requestEnd` plugin hook with {@link etcdPlugin} (which runs on every path,
 * also when another middleware answers early or throws in `onError`), and, as the last resort
 * without the plugin, a timer at the invocation's deadline that stops the keepalive so the
 * lease (and every key on it) expires one TTL later.
 *
 * State lives on the request (`request.internal`, see state.ts): never in a middleware's
 * closure, which concurrent invocations share.
 *
 * The verbs, one meaning each. (They were hold/release/settle/end/endAll/abandon, where
 * `settle` meant "release, and end too if you opened the scope" and every guard had to
 * remember `endAll`; a holder was a `{}` token per middleware instance, so an instance used
 * twice in one chain replaced its own first hold and left that lock on a pooled lease.)
 *
 * - `enter` — one use of one middleware joins the invocation's scope for a client (the first
 *   use opens it). A use is per request and per place in the chain: a middleware instance
 *   used twice in one chain has two uses, so each `after` gives back its own.
 * - `onRelease` — records what a use gives back (replacing what it recorded before).
 * - `leave` — a use gives back what it recorded, told the handler's response when it leaves
 *   from `after`; the last use to leave ends the scope (our outermost middleware's `after`
 *   runs last, so that is when the invocation is over for us).
 * - `end` — the scope gives back everything still recorded, newest first, and returns its
 *   sessions to the lease pool (or orphans them when a release failed).
 * - `endInvocation` — ends every scope of a request: `etcdPlugin`'s `requestEnd`.
 * - `shortCircuit` — ends every scope of a request, then answers early (or refuses by
 *   throwing): Middy skips every `after` once a `before` answers, so each of our guards goes
 *   through it and none can forget to let go of what outer middlewares acquired.
 * - `abandon` — the deadline passed and nobody ended the scope: keepalives stop, so the leases
 *   (and every key on them) expire one TTL later; a late `leave` or `end` still gives back.
 */

/** The least lifetime of an invocation without `getRemainingTimeInMillis` (tests, containers): Lambda's maximum. */
const DEFAULT_DEADLINE_MS = 15 * 60 * 1000
/** Time kept back from the deadline to release in. */
export const RELEASE_MARGIN_MS = 300

export interface LambdaLikeContext {
  getRemainingTimeInMillis?: () => number
}

/**
 * An AbortSignal that fires when a wait must give up: after `waitMs`, or when only the release
 * margin of the invocation's remaining time is left, whichever comes first. Middy's own
 * early-timeout signal covers only the handler, so waits in `before` need this.
 */
export function waitBudget(context: LambdaLikeContext, waitMs = Infinity): WaitBudget {
  return budgetUntil(deadlineOf(context), waitMs)
}

/** A wait's signal, aborted when `ms` has passed; `stop()` clears its timer once the wait is over. */
export interface WaitBudget {
  signal: AbortSignal
  ms: number
  stop(): void
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

function budgetUntil(deadline: number, waitMs: number): WaitBudget {
  const ms = Math.floor(Math.max(0, Math.min(waitMs, deadline - RELEASE_MARGIN_MS - performance.now())))
  const timeout = timeoutSignal(ms)
  return { signal: timeout.signal, ms, stop: timeout.cancel }
}

/** How the handler ended, as a use learns it when it leaves from `after`. */
export interface Handled {
  response: unknown
}

/**
 * What a use gives back: `handled` is the handler's response when the use leaves from `after`,
 * and absent on every other path (`onError`, a short-circuit, `etcdPlugin`'s `requestEnd`).
 */
export type Release = (handled?: Handled) => Promise<void>

/** One middleware's use of an invocation's scope (see {@link ScopeUses.enter}). */
export interface ScopeUse {
  readonly scope: InvocationScope
  /** Records what this use gives back when it leaves or the scope ends; replaces what it recorded before. */
  onRelease(release: Release): void
}

/** What the scope knows of a use. */
interface Use {
  release: Release | undefined
  released: boolean
  /** Takes the use off the stack of the middleware instance that made it. */
  drop: () => void
}

/** Whether leaving `use` would give something back. */
const holding = (use: Use) => use.release !== undefined && !use.released

/**
 * The etcd state of one invocation (one Middy request) on one client: its sessions, lent from
 * the lease pool, and the uses our middlewares made of them.
 */
export class InvocationScope {
  private readonly sessions = new Map<number, Promise<Session>>()
  private readonly uses: Use[] = []
  private readonly deadlineTimer: Timer
  /** Set once `end` began: nothing more is recorded, and a later use opens a new scope. */
  private ending = false
  /** Set when the deadline passed first: the sessions were orphaned, so none is given back to the pool. */
  private abandoned = false
  private failure: unknown
  /** `performance.now()` by which everything must be released. */
  readonly deadline: number

  /** Opened by the first use of a request on a client ({@link ScopeUses.enter}). */
  constructor(
    private readonly request: RequestLike,
    readonly client: Namespace,
    context: LambdaLikeContext,
  ) {
    this.deadline = deadlineOf(context)
    this.deadlineTimer = startTimer(this.deadline - performance.now(), () => this.abandon())
  }

  /** Like {@link waitBudget}, from this invocation's deadline. */
  waitBudget(waitMs = Infinity): WaitBudget {
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
      !this.uses.some(holding)
    )
  }

  /**
   * A new use of this scope: a handle to record its release on, and `leave`, which gives it
   * back and, for the last use to leave, ends the scope. `drop` runs when the scope is over.
   */
  enter(drop: () => void): ScopeUse & { leave(handled?: Handled): Promise<void> } {
    const use: Use = { release: undefined, released: false, drop }
    this.uses.push(use)
    return {
      scope: this,
      onRelease: (release) => {
        use.release = release
      },
      leave: (handled) => this.leave(use, handled),
    }
  }

  /**
   * Gives back what `use` recorded (nothing if it recorded nothing, or gave it back already). A
   * failed release is remembered, not thrown: the session is then not reused, and the lease's
   * expiry frees whatever the release could not.
   */
  private async release(use: Use, handled?: Handled): Promise<void> {
    if (!holding(use)) return
    use.released = true
    await use.release!(handled).catch((err) => (this.failure ??= err))
  }

  /** `use` gives back what it recorded; the last use to leave ends the scope. */
  private async leave(use: Use, handled?: Handled): Promise<void> {
    await this.release(use, handled)
    const i = this.uses.indexOf(use)
    if (i < 0) return // the scope ended meanwhile
    this.uses.splice(i, 1)
    use.drop()
    if (this.uses.length === 0) await this.end()
  }

  /**
   * Gives back everything still recorded, newest first, then returns the sessions to the pool.
   * A session whose release failed is orphaned instead: its keys go when its lease expires.
   */
  async end(): Promise<void> {
    if (this.ending) return
    this.ending = true
    this.deadlineTimer.cancel()
    for (const use of [...this.uses].reverse()) await this.release(use)
    if (!this.abandoned)
      for (const pending of this.sessions.values()) {
        const session = await pending.catch(() => undefined)
        if (!session) continue
        if (this.failure === undefined) leasePool(this.client).give(session)
        else session.orphan()
      }
    this.forget()
  }

  /**
   * Deadline passed and nobody ended the scope: stop keepalives so the leases run out. What is
   * recorded stays: a late `after` (or `end`) may still give it back sooner.
   */
  private abandon() {
    if (this.ending) return
    this.abandoned = true
    for (const pending of this.sessions.values())
      pending.then(
        (s) => s.orphan(),
        () => {},
      )
  }

  /** Whether the scope is over for new uses (`end` began). */
  get ended(): boolean {
    return this.ending
  }

  /** Takes this scope, and its uses, off its request (a later use opens a new scope). */
  private forget() {
    for (const use of this.uses.splice(0)) use.drop()
    const byClient = scopes.get(this.request)
    if (byClient?.get(this.client) !== this) return
    byClient.delete(this.client)
    if (byClient.size === 0) scopes.set(this.request, undefined)
  }
}

/** The open scopes of each request, by client. */
const scopes = requestSlot<Map<Namespace, InvocationScope>>('invocation scopes')

/** The open scope of `request` for `client`, opened if there is none yet. */
function scopeOf(request: RequestLike, client: Namespace, context: LambdaLikeContext): InvocationScope {
  let byClient = scopes.get(request)
  if (!byClient) {
    byClient = new Map()
    scopes.set(request, byClient)
  }
  const open = byClient.get(client)
  if (open && !open.ended) return open
  const scope = new InvocationScope(request, client, context)
  byClient.set(client, scope)
  return scope
}

/**
 * The uses one middleware instance makes of invocation scopes, per request: a stack, since an
 * instance may appear more than once in a chain (each `before` enters, and the `after`s, which
 * Middy runs in reverse, leave the newest first).
 */
export class ScopeUses {
  private readonly slot

  constructor(name: string) {
    this.slot = requestSlot<(ScopeUse & { leave(handled?: Handled): Promise<void> })[]>(name)
  }

  /** This instance's new use of the scope of `request` for `client` (opened if there is none yet). */
  enter(request: RequestLike, client: Namespace, context: LambdaLikeContext): ScopeUse {
    const stack = this.slot.get(request) ?? []
    const use = scopeOf(request, client, context).enter(() => {
      const i = stack.indexOf(use)
      if (i >= 0) stack.splice(i, 1)
      if (stack.length === 0 && this.slot.get(request) === stack) this.slot.set(request, undefined)
    })
    stack.push(use)
    this.slot.set(request, stack)
    return use
  }

  /**
   * What a middleware's `after` and `onError` do: its newest use in `request` gives back what
   * it recorded (`handled` from `after`), and the scope ends if that was its last use. Nothing
   * if this instance has no use in `request` left (its `before` never entered, or a
   * short-circuit or the deadline ended the scope already).
   */
  async leave(request: RequestLike, handled?: Handled): Promise<void> {
    await this.slot.get(request)?.at(-1)?.leave(handled)
  }
}

/** Ends every scope of `request`, on every client: what `etcdPlugin`'s `requestEnd` does. */
export async function endInvocation(request: RequestLike): Promise<void> {
  const byClient = scopes.get(request)
  if (byClient) await Promise.all([...byClient.values()].map((scope) => scope.end()))
}

/**
 * How each of our guards answers early: ends every scope of `request` (Middy runs no `after`
 * once a `before` answers, so what outer middlewares acquired is let go here), then answers
 * with what `answer` returns — set as Middy's early response — or refuses with what it throws.
 */
export async function shortCircuit<T>(request: RequestLike & { earlyResponse?: unknown }, answer: () => T | Promise<T>): Promise<T> {
  await endInvocation(request)
  const response = await answer()
  request.earlyResponse = response
  return response
}
