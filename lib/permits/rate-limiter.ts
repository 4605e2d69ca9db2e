import { setMaxListeners } from 'node:events'
import type { ComparatorBuilder, Namespace } from 'etcd3'
import { checkClient, checkInteger, checkOptions, checkSeconds } from '../core/check.js'
import { InvalidArgumentError, InvalidStateError, SessionExpiredError } from '../errors.js'
import { permitKeys, unixNano } from '../core/keys.js'
import { checkName, IDEMPOTENT, keyspace, type Keyspace } from '../core/kv.js'
import { MAX_PERMITS, MAX_RATE_PER_MS, MAX_REFILL_INTERVAL_MS, MAX_TTL_S } from '../limits.js'
import { PermitQueue, type TakenSlots, type Taker } from './permit-queue.js'
import { MAX_SLOTS_PER_TAKE } from './permit-txn.js'
import { CLOCK_RATE_MARGIN, ExpiredTokens } from './token-policy.js'
import { Session } from '../session/session.js'
import { sleep, startTimer, type Timer } from '../timers.js'
import type { WaitOptions } from '../wait/wait.js'
import { countRateDecision, startWait } from '../telemetry/coordination.js'

/** Settings of a {@link RateLimiter}: a token bucket. */
export interface RateLimitOptions {
  /** Admissions per `per` in the long run (> 0; need not be whole). */
  rate: number
  /** The period of `rate`, in ms (default 1000). */
  per?: number
  /** Admissions allowed at once beyond the steady rate (default 0): at most `rate + burst` in any `per` window. */
  burst?: number
  /**
   * Seconds (whole, default 2) a crashed or frozen process's queued calls can hold up everyone
   * else's: the TTL of the lease this process's queue keys ride on. The others' calls go on at
   * most about a second after it (etcd's expiry check and one handoff). Not one of the stored
   * settings: each process may choose its own.
   */
  waiterTtl?: number
}

/** Options of {@link RateLimiter.acquire}. */
export interface RateAcquireOptions extends WaitOptions {
  /** Admissions this call counts as (default 1, at most `burst + 1`). */
  cost?: number
  /** Called once if the call cannot be admitted at once, before it queues. */
  onWaiting?: () => void
}

/** The answer of {@link RateLimiter.decide}: admitted or not, never thrown. */
export interface RateLimitDecision {
  admitted: boolean
  /** 0 when admitted; else an estimate of how long until a try could be admitted, in ms. */
  retryAfterMs: number
  /** The admission, when admitted. */
  admission?: RateAdmission
}

/**
 * One admission: the token keys it took, counted against the rate until the bucket has
 * refilled them. Its `fence` (the admission's revision) is strictly increasing across
 * admissions of the limiter, and `fenced()` guards an etcd write by "this admission still
 * counts": its tokens are still the ones it put — neither deleted once their time passed (at
 * most `(burst + 1) × per / rate` ms after it) nor replaced by a later admission (no sooner
 * than `per / rate` ms after it).
 */
export class RateAdmission {
  /** @internal Made by {@link RateLimiter} only. */
  constructor(
    private readonly client: Namespace,
    /** The token keys, `<name>/tokens/<slot>` (one per unit of cost). */
    readonly keys: readonly string[],
    /** Each token's mod revision as it was left. */
    private readonly mods: readonly bigint[],
    /** The admission's revision: strictly increasing across admissions of this limiter. */
    readonly fence: bigint,
  ) {}

  /**
   * An etcd3 transaction builder guarded by this admission:
   * `await admission.fenced().then(client.put('k').value('v')).commit()` writes only while it counts.
   */
  fenced(): ComparatorBuilder {
    const [first, ...rest] = this.keys.map((key, i) => [key, this.mods[i].toString()] as const)
    let builder = this.client.if(first[0], 'Mod', '==', first[1])
    for (const [key, mod] of rest) builder = builder.and(key, 'Mod', '==', mod)
    return builder
  }
}

/** Time left, on top of a token's life, for the grant Txn itself, before a token may ride on the lease. */
const LEASE_GUARD_MS = 5000
/** Fewest seconds of the lease tokens ride on. */
const MIN_TOKEN_TTL_S = 5
/** Seconds of the queue keys' lease unless `waiterTtl` says otherwise: etcd's shortest with its default election timeout. */
const DEFAULT_WAITER_TTL_S = 2
/** Longest {@link RateLimiter.close} waits for this process's young tokens. */
const CLOSE_WAIT_MS = 2000
/** Times a call starts over after a lease it used was lost under it (a freeze, a revoke). */
const MAX_LEASE_RETRIES = 3

/**
 * A rate limiter shared by every process: a token bucket of `burst + 1` tokens refilled at
 * `rate` per `per` ms. Long-run rate `rate`/`per`, and at most `rate + burst` admissions in any
 * window of `per` ms. Go has no counterpart; the layout is ours: `<name>/config`,
 * `<name>/waiters/<unixNano>`, `<name>/tokens/<slot>`.
 *
 * An admission takes a token slot (see {@link PermitQueue}: FIFO, and only the queue's head
 * watches the tokens). A token must not go before the bucket would have refilled it — and no
 * two functions' clocks are ever compared. Time comes from local monotonic DURATIONS measured
 * from what a process saw in etcd: a token that this process first saw as the oldest at its
 * time `t` (when that read's answer arrived, so after the token was created and every older
 * token was gone) may be replaced at `t + per/rate`. Whoever deletes a token has thus measured
 * at least the bucket's refill time on its own clock, whatever the other clocks say; a clock
 * that stops (a frozen VM) only makes the wait longer. The admitting process also deletes its
 * own token `(burst + 1) × per/rate` after it was admitted (a token is certainly refilled by
 * then), and a token rides on the limiter's lease only while that lease is sure to outlive
 * that time, so a crash frees it without ever freeing it early. See docs/RELIABILITY.md.
 *
 * Queued calls ride on another lease, a short one (`waiterTtl`): the queue is FIFO, so a
 * process that crashed or froze with calls queued holds up every later call until their keys
 * go with that lease. It is granted when a call of this object has to queue and left to expire
 * once none waits (a function frozen between invocations keeps nothing alive).
 */
export class RateLimiter {
  /** Admissions per `per`. */
  readonly rate: number
  /** The rate's period, ms. */
  readonly per: number
  /** Admissions allowed at once beyond the steady rate. */
  readonly burst: number
  /** Tokens in the bucket: `burst + 1`. */
  readonly capacity: number
  /** ms between refills: `per / rate`. */
  readonly interval: number
  /** Seconds this process's queued calls can hold up the others' (see {@link RateLimitOptions.waiterTtl}). */
  readonly waiterTtl: number
  private readonly ks: Keyspace
  private readonly queue: PermitQueue
  private readonly policy: ExpiredTokens
  /** How long this process keeps its own token before deleting it, ms. */
  private readonly tokenLife: number
  /** The lease tokens ride on (while it is sure to outlive them). */
  private readonly tokenLease: OwnLease
  /** The lease of this process's queue keys. */
  private readonly waiterLease: OwnLease
  /** Calls of this object queued (or about to) on {@link waiterLease}. */
  private waiting = 0
  private readonly expiries = new Set<Timer>()
  private readonly closing = new AbortController()
  /** acquire/decide calls running now. */
  private calls = 0

  constructor(
    readonly client: Namespace,
    /** The limiter's name; its keys live under `<name>/`. */
    readonly name: string,
    options: RateLimitOptions,
  ) {
    checkClient(client, 'RateLimiter')
    checkName(name, 'RateLimiter name')
    const { rate, per, burst, waiterTtl } = checkRateOptions(options)
    this.rate = rate
    this.per = per
    this.burst = burst
    this.waiterTtl = waiterTtl
    this.capacity = burst + 1
    this.interval = per / rate
    const pacing = this.interval * (1 + CLOCK_RATE_MARGIN)
    this.tokenLife = this.capacity * pacing
    // Keepalives every TTL/3 leave at least 2/3 of the TTL (less a 0.5 s margin) ahead.
    const tokenTtl = Math.min(MAX_TTL_S, Math.max(MIN_TOKEN_TTL_S, Math.ceil((1.5 * (this.tokenLife + LEASE_GUARD_MS + 1000)) / 1000)))
    // Never revoked while it may carry young tokens: they must not go before their time.
    this.tokenLease = new OwnLease(client, tokenTtl, this.closing.signal, (s) => s.orphan())
    // Revoked once unusable: a frozen process's queue keys may still stand in line at etcd.
    this.waiterLease = new OwnLease(client, waiterTtl, this.closing.signal, (s) => void s.close().catch(() => {}))
    this.ks = keyspace(client)
    this.policy = new ExpiredTokens(permitKeys.tokens(name), this.capacity, pacing)
    this.queue = new PermitQueue(client, name, 'rate limiter', permitKeys.rateLimiterSettings({ rate, per, burst }), this.policy)
    // Every waiting call listens to it: many at once are expected, not a leak.
    setMaxListeners(0, this.closing.signal)
  }

  /**
   * Grants the limiter's lease and checks (or stores) its settings in etcd now, so that the
   * first call does not pay for them — e.g. in a function's init phase. Optional. Throws
   * `ConfigMismatchError` when the stored settings differ.
   */
  async ready(): Promise<void> {
    await this.tokenLease.get()
    await this.queue.ready()
  }

  /** Waits until the call fits the rate (FIFO with every other waiting call); aborting leaves no key. */
  async acquire(options?: RateAcquireOptions): Promise<RateAdmission> {
    const { signal, onWaiting, cost } = checkOptions(options, 'RateLimiter.acquire')
    const need = this.checkCost(cost)
    signal?.throwIfAborted()
    const probe = startWait('rate_limit', this.name)
    let admission: RateAdmission
    try {
      admission = await this.acquireOnce(need, signal, onWaiting)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', admission.fence)
    countRateDecision(true, need)
    return admission
  }

  private acquireOnce(need: number, signal: AbortSignal | undefined, onWaiting: (() => void) | undefined): Promise<RateAdmission> {
    const all = signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal
    let waited = false
    const waiting = () => {
      if (!waited) onWaiting?.()
      waited = true
    }
    return this.onLiveLeases(async (session) => {
      const taker = this.taker(session)
      let queued = false
      const waiterSession = () => {
        queued = true
        this.waiting++
        return this.waiterLease.get()
      }
      try {
        const grant = await this.queue.acquire(need, waiterSession, taker.next, { signal: all, onWaiting: waiting })
        return await this.admitted(grant, session, taker.leased())
      } finally {
        if (queued && --this.waiting === 0) this.waiterLease.release()
      }
    })
  }

  /**
   * Decides on one call now, without waiting: takes `cost` admissions if they fit and nobody
   * queues, else resolves `admitted: false` with how long to wait. A refusal is an answer, not
   * an error (a `try` method throws one: see docs/ARCHITECTURE.md, "Names"). Leaves no key
   * behind when not admitted.
   */
  async decide(options?: { cost?: number }): Promise<RateLimitDecision> {
    return this.decideAs('RateLimiter.decide', options)
  }

  /** @deprecated Use {@link decide}: the same decision; a `try` method throws when refused (Mutex.tryLock, Semaphore.tryAcquire), this one never did. */
  tryAcquire(options?: { cost?: number }): Promise<RateLimitDecision> {
    return this.decideAs('RateLimiter.tryAcquire', options)
  }

  private async decideAs(what: string, options?: { cost?: number }): Promise<RateLimitDecision> {
    const { cost } = checkOptions(options, what)
    const need = this.checkCost(cost)
    const probe = startWait('rate_limit', this.name)
    let decision: RateLimitDecision
    try {
      decision = await this.decideOnce(need)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end(decision.admitted ? 'acquired' : 'rejected', decision.admission?.fence)
    countRateDecision(decision.admitted, need)
    return decision
  }

  private decideOnce(need: number): Promise<RateLimitDecision> {
    return this.onLiveLeases(async (session) => {
      const taker = this.taker(session)
      const tried = await this.queue.decide(need, taker.next)
      if ('granted' in tried)
        return { admitted: true, retryAfterMs: 0, admission: await this.admitted(tried.granted, session, taker.leased()) }
      const { slots, receivedAt, waiters } = tried.blocked
      return { admitted: false, retryAfterMs: Math.ceil(this.policy.estimate(slots, need, receivedAt, waiters)) }
    })
  }

  /**
   * Runs `call` on the token lease. If a lease it used ended under it (etcd expired it while the
   * process was frozen, or it was revoked), the call took nothing — etcd refused the Txn that
   * would have, or the queue key it waited with is gone — so it starts over on live leases.
   */
  private async onLiveLeases<T>(call: (session: Session) => Promise<T>): Promise<T> {
    this.calls++
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          return await call(await this.tokenLease.get())
        } catch (err) {
          if (!(err instanceof SessionExpiredError) || this.closing.signal.aborted || attempt === MAX_LEASE_RETRIES) throw err
        }
      }
    } finally {
      this.calls--
    }
  }

  /**
   * Stops waiting calls and ends the limiter's lease. Tokens this process admitted must live
   * their time first: close waits for them (up to {@link CLOSE_WAIT_MS}); any still young then
   * stay on the lease, which is left to expire on its own rather than revoked.
   */
  async close(): Promise<void> {
    this.closing.abort(new InvalidStateError(`RateLimiter ${JSON.stringify(this.name)} was closed; create a new one`))
    // A call in flight may still be granted a token: wait for it as for the tokens themselves.
    const busy = () => this.calls > 0 || this.expiries.size > 0
    const deadline = performance.now() + CLOSE_WAIT_MS
    while (busy() && performance.now() < deadline) await sleep(10, { ref: true })
    // The waits have ended and taken their queue keys with them.
    const waiters = await this.waiterLease.current()
    await waiters?.close().catch(() => waiters.orphan())
    const session = await this.tokenLease.current()
    if (!session) return
    if (busy()) return session.orphan()
    await session.close().catch(() => session.orphan())
  }

  /**
   * What each grant Txn puts: the lease only while it will certainly outlive the token (the
   * Txn's own time included), else no lease — a token must never vanish before its time.
   */
  private taker(session: Session) {
    let leased = false
    const value = `${session.leaseHex}/${unixNano()}`
    const next = (): Taker => {
      leased = session.aliveUntil - performance.now() >= this.tokenLife + LEASE_GUARD_MS
      return { lease: leased ? session.leaseId : undefined, value, ambiguous: (keys) => this.adoptUnanswered(keys, value) }
    }
    return { next, leased: () => leased }
  }

  /** After a grant: make sure the tokens outlive their time, and delete them once it has passed. */
  private async admitted(grant: TakenSlots, session: Session, leased: boolean): Promise<RateAdmission> {
    const receivedAt = performance.now()
    const mods: bigint[] = []
    for (const key of grant.keys) {
      let mod = grant.revision
      if (leased && session.aliveUntil < receivedAt + this.tokenLife) {
        // The Txn took so long that the lease may now end first: keep the token without it.
        const res = await this.ks
          .txn([this.ks.compare(key, 'Mod', '==', mod)], [this.ks.put(key, `${session.leaseHex}/${unixNano()}`)])
          .catch(() => undefined)
        if (res?.succeeded) mod = res.revision
      }
      this.expireAt(key, mod, receivedAt + this.tokenLife)
      mods.push(mod)
    }
    return new RateAdmission(this.client, grant.keys, mods, grant.revision)
  }

  /** A grant Txn got no answer: tokens it put (they carry `value`) are ours; let them live their time. */
  private async adoptUnanswered(keys: string[], value: string) {
    const found = await this.ks.getKeys(keys)
    const now = performance.now()
    for (const kv of found) if (kv.value.toString() === value) this.expireAt(kv.key, kv.modRevision, now + this.tokenLife)
  }

  /** Deletes token `key` at `when` (`performance.now()`) if it is still the one put at revision `mod`. */
  private expireAt(key: string, mod: bigint, when: number) {
    // Months ahead for a long `per`: a capped, re-armed timer (lib/timers.ts), never an early one.
    const timer = startTimer(when - performance.now(), () => {
      this.ks
        .txn([this.ks.compare(key, 'Mod', '==', mod)], [this.ks.deleteOp(key)], [], IDEMPOTENT)
        .catch(() => {}) // the lease, or a head of the queue, frees it later
        .finally(() => this.expiries.delete(timer))
    })
    this.expiries.add(timer)
  }

  private checkCost(cost: unknown): number {
    return checkRateCost(cost, this.burst, `RateLimiter ${JSON.stringify(this.name)}: cost`)
  }
}

/**
 * A call's `cost` (default 1): at most `burst + 1`, what a full bucket holds, and at most
 * {@link MAX_SLOTS_PER_TAKE}, since a call's tokens are taken by one Txn and etcd limits a Txn
 * to 128 ops (a larger cost failed on every call with "too many operations").
 */
export function checkRateCost(cost: unknown, burst: number, what: string): number {
  const max = Math.min(burst + 1, MAX_SLOTS_PER_TAKE)
  return checkInteger(cost, what, 1, max, {
    fallback: 1,
    hint:
      max === burst + 1
        ? 'burst + 1; raise burst to admit larger calls'
        : `a call's tokens are taken in one etcd Txn, at most ${MAX_SLOTS_PER_TAKE}; count in larger units (rate and cost in KB, not bytes)`,
  })
}

/** Checks `{ rate, per, burst, waiterTtl }`; returns them with defaults. */
export function checkRateOptions(options: unknown): Required<RateLimitOptions> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError(
      `RateLimiter options must be an object like { rate: 20, per: 1000, burst: 5 }, got ${options === null ? 'null' : typeof options}`,
    )
  }
  const { rate } = options as Partial<RateLimitOptions>
  const per = checkInteger((options as RateLimitOptions).per, 'RateLimiter per', 1, MAX_RATE_PER_MS, {
    unit: 'ms',
    fallback: 1000,
    hint: 'a day',
  })
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0 || !(per / rate >= 1)) {
    throw new InvalidArgumentError(
      `RateLimiter rate must be a number > 0 and at most one admission per ms (rate <= per), got ${String(rate)} per ${per} ms`,
    )
  }
  if (!(per / rate <= MAX_REFILL_INTERVAL_MS)) {
    const least = per / MAX_REFILL_INTERVAL_MS
    throw new InvalidArgumentError(
      `RateLimiter rate must refill a token at least once a year (per / rate <= ${MAX_REFILL_INTERVAL_MS} ms), got ${String(rate)} per ${per} ms; use rate >= ${least} for per ${per}`,
    )
  }
  const burst = checkInteger((options as RateLimitOptions).burst, 'RateLimiter burst', 0, MAX_PERMITS - 1, { fallback: 0 })
  const waiterTtl = checkSeconds((options as RateLimitOptions).waiterTtl, 'RateLimiter waiterTtl', 1, { fallback: DEFAULT_WAITER_TTL_S })
  return { rate, per, burst, waiterTtl }
}

/**
 * One lease of a limiter: granted on first use and again once it has ended, or is past its
 * conservative bound (after a freeze its expiry timer may not have run yet).
 */
class OwnLease {
  private session?: Promise<Session>

  constructor(
    private readonly client: Namespace,
    private readonly ttl: number,
    private readonly closing: AbortSignal,
    /** What to do with a session that is no longer used. */
    private readonly discard: (session: Session) => void,
  ) {}

  get(): Promise<Session> {
    this.closing.throwIfAborted()
    const pending = this.session
    const grant = async () => {
      const session = await Session.create(this.client, { ttl: this.ttl })
      setMaxListeners(0, session.signal) // every waiting call of this process listens to it
      return session
    }
    const fresh = () => {
      if (this.session !== pending) return this.get()
      const next = grant()
      this.session = next
      return next
    }
    if (!pending) return fresh()
    return pending.then((s) => {
      if (s.active && s.aliveUntil > performance.now()) return s
      this.discard(s)
      return fresh()
    }, fresh)
  }

  /** The session granted last, if any. */
  async current(): Promise<Session | undefined> {
    return this.session?.catch(() => undefined)
  }

  /** No call uses the lease any more: it is left to expire (with any key a failed clean-up left on it), and the next call grants a new one. */
  release(): void {
    const pending = this.session
    this.session = undefined
    pending?.then(
      (s) => s.orphan(),
      () => {},
    )
  }
}
