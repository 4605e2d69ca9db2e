import { setMaxListeners } from 'node:events'
import type { Namespace } from 'etcd3'
import { checkClient, checkOptions } from './check.js'
import { InvalidArgumentError, SessionExpiredError, type LeaseLostError } from './errors.js'
import { permitKeys, unixNano } from './keys.js'
import { checkName, IDEMPOTENT, keyspace, type Keyspace } from './kv.js'
import { MAX_PERMITS, MAX_TTL_S } from './limits.js'
import { PermitQueue, type Grant, type Taker } from './permit-queue.js'
import { CLOCK_RATE_MARGIN, ExpiredTokens } from './token-policy.js'
import { Session } from './session.js'
import type { WaitOptions } from './wait.js'

/** Settings of a {@link RateLimiter}: a token bucket. */
export interface RateLimitOptions {
  /** Admissions per `per` in the long run (> 0; need not be whole). */
  rate: number
  /** The period of `rate`, in ms (default 1000). */
  per?: number
  /** Admissions allowed at once beyond the steady rate (default 0): at most `rate + burst` in any `per` window. */
  burst?: number
}

/** Options of {@link RateLimiter.acquire}. */
export interface RateAcquireOptions extends WaitOptions {
  /** Admissions this call counts as (default 1, at most `burst + 1`). */
  cost?: number
  /** Called once if the call cannot be admitted at once, before it queues. */
  onWaiting?: () => void
}

/** The answer of {@link RateLimiter.tryAcquire}. */
export interface RateLimitDecision {
  admitted: boolean
  /** 0 when admitted; else an estimate of how long until a try could be admitted, in ms. */
  retryAfterMs: number
}

/** Time left, on top of a token's life, for the grant Txn itself, before a token may ride on the lease. */
const LEASE_GUARD_MS = 5000
/** Fewest seconds of the limiter's own lease. */
const MIN_TTL_S = 5
/** Longest {@link RateLimiter.close} waits for this process's young tokens. */
const CLOSE_WAIT_MS = 2000

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
  private readonly ks: Keyspace
  private readonly queue: PermitQueue
  private readonly policy: ExpiredTokens
  /** How long this process keeps its own token before deleting it, ms. */
  private readonly tokenLife: number
  private readonly ttl: number
  private session?: Promise<Session>
  private readonly expiries = new Set<NodeJS.Timeout>()
  private readonly closing = new AbortController()
  /** acquire/tryAcquire calls running now. */
  private calls = 0

  constructor(
    readonly client: Namespace,
    /** The limiter's name; its keys live under `<name>/`. */
    readonly name: string,
    options: RateLimitOptions,
  ) {
    checkClient(client, 'RateLimiter')
    checkName(name, 'RateLimiter name')
    const { rate, per, burst } = checkRateOptions(options)
    this.rate = rate
    this.per = per
    this.burst = burst
    this.capacity = burst + 1
    this.interval = per / rate
    const pacing = this.interval * (1 + CLOCK_RATE_MARGIN)
    this.tokenLife = this.capacity * pacing
    // Keepalives every TTL/3 leave at least 2/3 of the TTL (less a 0.5 s margin) ahead.
    this.ttl = Math.min(MAX_TTL_S, Math.max(MIN_TTL_S, Math.ceil((1.5 * (this.tokenLife + LEASE_GUARD_MS + 1000)) / 1000)))
    this.ks = keyspace(client)
    this.policy = new ExpiredTokens(permitKeys.tokens(name), this.capacity, pacing)
    this.queue = new PermitQueue(client, name, 'rate limiter', `rate=${rate} per=${per} burst=${burst}`, this.policy)
    // Every waiting call listens to it: many at once are expected, not a leak.
    setMaxListeners(0, this.closing.signal)
  }

  /**
   * Grants the limiter's lease and checks (or stores) its settings in etcd now, so that the
   * first call does not pay for them — e.g. in a function's init phase. Optional. Throws
   * `ConfigMismatchError` when the stored settings differ.
   */
  async ready(): Promise<void> {
    await this.ownSession()
    await this.queue.ready()
  }

  /** Waits until the call fits the rate (FIFO with every other waiting call); aborting leaves no key. */
  async acquire(options?: RateAcquireOptions): Promise<void> {
    const { signal, onWaiting, cost } = checkOptions(options, 'RateLimiter.acquire')
    const need = this.checkCost(cost)
    signal?.throwIfAborted()
    const all = signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal
    await this.onLiveLease(async (session) => {
      const taker = this.taker(session)
      const grant = await this.queue.acquire(need, session, taker.next, { signal: all, onWaiting })
      await this.admitted(grant, session, taker.leased())
    })
  }

  /** Takes `cost` admissions if they fit now and nobody queues; else says how long to wait. Leaves no key behind when not admitted. */
  async tryAcquire(options?: { cost?: number }): Promise<RateLimitDecision> {
    const { cost } = checkOptions(options, 'RateLimiter.tryAcquire')
    const need = this.checkCost(cost)
    return this.onLiveLease(async (session) => {
      const taker = this.taker(session)
      const tried = await this.queue.tryTake(need, taker.next)
      if ('granted' in tried) {
        await this.admitted(tried.granted, session, taker.leased())
        return { admitted: true, retryAfterMs: 0 }
      }
      const { slots, receivedAt, waiters } = tried.blocked
      return { admitted: false, retryAfterMs: Math.ceil(this.policy.estimate(slots, need, receivedAt, waiters)) }
    })
  }

  /**
   * Runs `call` on the limiter's lease. If etcd says that lease is gone (it expired while the
   * process was frozen, or was revoked) the call took nothing — etcd refused its whole Txn — so
   * it runs once more on a new lease.
   */
  private async onLiveLease<T>(call: (session: Session) => Promise<T>): Promise<T> {
    this.calls++
    try {
      const session = await this.ownSession()
      try {
        return await call(session)
      } catch (err) {
        const reason = (session.signal.reason as LeaseLostError | undefined)?.reason
        if (!(err instanceof SessionExpiredError) || (reason !== 'expired' && reason !== 'revoked')) throw err
        return await call(await this.ownSession())
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
    this.closing.abort(new InvalidArgumentError(`RateLimiter ${JSON.stringify(this.name)} was closed; create a new one`))
    // A call in flight may still be granted a token: wait for it as for the tokens themselves.
    const busy = () => this.calls > 0 || this.expiries.size > 0
    const deadline = performance.now() + CLOSE_WAIT_MS
    while (busy() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    const session = await this.session?.catch(() => undefined)
    if (!session) return
    if (busy()) return session.orphan()
    await session.close().catch(() => session.orphan())
  }

  /** The limiter's own lease (granted on first use, again once it ends): waiters and tokens ride on it. */
  private ownSession(): Promise<Session> {
    this.closing.signal.throwIfAborted()
    const pending = this.session
    const grant = async () => {
      const session = await Session.create(this.client, { ttl: this.ttl })
      setMaxListeners(0, session.signal) // every waiting call of this process listens to it
      return session
    }
    const fresh = () => (this.session === pending ? (this.session = grant()) : this.ownSession())
    if (!pending) return fresh()
    // Past its conservative bound (e.g. after the process was frozen) a lease is not used: its
    // expiry timer may not have run yet.
    return pending.then((s) => (s.active && s.aliveUntil > performance.now() ? s : (s.orphan(), fresh())), fresh)
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
  private async admitted(grant: Grant, session: Session, leased: boolean) {
    const receivedAt = performance.now()
    for (const key of grant.keys) {
      let mod = grant.revision
      if (leased && session.aliveUntil < receivedAt + this.tokenLife) {
        // The Txn took so long that the lease may now end first: keep the token without it.
        const res = await this.ks.txn([this.ks.compare(key, 'Mod', '==', mod)], [this.ks.put(key, `${session.leaseHex}/${unixNano()}`)]).catch(() => undefined)
        if (res?.succeeded) mod = res.revision
      }
      this.expireAt(key, mod, receivedAt + this.tokenLife)
    }
  }

  /** A grant Txn got no answer: tokens it put (they carry `value`) are ours; let them live their time. */
  private async adoptUnanswered(keys: string[], value: string) {
    const res = await this.ks.txn([], keys.map((k) => this.ks.get(k)))
    const now = performance.now()
    for (const kv of res.results.map((r) => r.range!.kvs[0])) {
      if (kv !== undefined && kv.value.toString() === value) this.expireAt(kv.key, kv.modRevision, now + this.tokenLife)
    }
  }

  /** Deletes token `key` at `when` (`performance.now()`) if it is still the one put at revision `mod`. */
  private expireAt(key: string, mod: bigint, when: number) {
    const timer = setTimeout(() => {
      this.ks
        .txn([this.ks.compare(key, 'Mod', '==', mod)], [this.ks.delete(key)], [], IDEMPOTENT)
        .catch(() => {}) // the lease, or a head of the queue, frees it later
        .finally(() => this.expiries.delete(timer))
    }, Math.max(0, when - performance.now()))
    timer.unref()
    this.expiries.add(timer)
  }

  private checkCost(cost: unknown): number {
    if (cost === undefined) return 1
    if (typeof cost !== 'number' || !Number.isInteger(cost) || cost < 1 || cost > this.capacity) {
      throw new InvalidArgumentError(`RateLimiter ${JSON.stringify(this.name)}: cost must be a whole number from 1 to burst + 1 = ${this.capacity}, got ${String(cost)}; raise burst to admit larger calls`)
    }
    return cost
  }
}

/** Checks `{ rate, per, burst }`; returns them with defaults. */
export function checkRateOptions(options: unknown): Required<RateLimitOptions> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError(`RateLimiter options must be an object like { rate: 20, per: 1000, burst: 5 }, got ${options === null ? 'null' : typeof options}`)
  }
  const { rate, per = 1000, burst = 0 } = options as Partial<RateLimitOptions>
  if (typeof per !== 'number' || !Number.isInteger(per) || per < 1 || per > 86_400_000) {
    throw new InvalidArgumentError(`RateLimiter per must be a whole number of ms from 1 to 86400000 (a day), got ${String(per)}`)
  }
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0 || !(per / rate >= 1)) {
    throw new InvalidArgumentError(`RateLimiter rate must be a number > 0 and at most one admission per ms (rate <= per), got ${String(rate)} per ${per} ms`)
  }
  if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 0 || burst >= MAX_PERMITS) {
    throw new InvalidArgumentError(`RateLimiter burst must be a whole number from 0 to ${MAX_PERMITS - 1}, got ${String(burst)}`)
  }
  return { rate, per, burst }
}
