import type { Namespace } from 'etcd3'
import { checkClient, checkOptions, checkSeconds } from '../core/check.js'
import { closedSignal } from '../core/client-closed.js'
import { InvalidArgumentError, LeaseLostError, type LeaseLossCause } from '../errors.js'
import { keepAliveStream, type Registration } from '../core/keepalive.js'
import { leaseHex } from '../core/keys.js'
import { revokeLease } from '../core/leases.js'
import { toTypedError } from '../core/kv.js'
import { startInterval, startTimer, type Timer } from '../timers.js'

/** Options of {@link Session.create}. */
export interface SessionOptions {
  /** Lease TTL in whole seconds (default 60, as Go). */
  ttl?: number
  /** Adopt this existing lease (decimal id) instead of granting one; Go's `WithLease`. */
  leaseId?: string
  /**
   * With `leaseId`: a `performance.now()` time until which the lease is already known to be
   * alive, e.g. the {@link Session.aliveUntil} of the session that kept it before. The new
   * session's `aliveUntil` starts from it instead of 0 (unknown) until the first keepalive answer.
   */
  aliveUntil?: number
}

const DEFAULT_TTL = 60
/** Time left for the network between the estimate and the server's clock. */
const SAFETY_MARGIN_MS = 500

/**
 * A lease kept alive while the session is open: every lock, candidacy and waiter key of the
 * session carries it, so they all vanish when the session ends (Go's `concurrency.Session`).
 */
export class Session {
  /** Lease id as a decimal string (etcd's int64). */
  readonly leaseId: string
  /** Lease id as Go's `%x` prints it (lowercase, unpadded): the form used in lock keys. */
  readonly leaseHex: string
  private readonly controller = new AbortController()
  /** Sends the keepalives (every TTL/3). */
  private keepAliveTimer?: Timer
  /** Fires at the certain-expiry bound, moved on every answer: ends the session before etcd can. */
  private expiryTimer?: Timer
  /** Certain expiry by the monotonic clock (`performance.now()`), 0 if unknown. */
  private expiresAt: number
  /** The same by the wall clock (`Date.now()`); see {@link certainUntil}. */
  private expiresAtWall: number
  /** While the expiry is unknown (an adopted lease before its first answer): when to give up. */
  private unknownUntil = 0
  private ended = false
  /** Whether the expiry is being watched (see {@link start}). */
  private started = false
  /** Whether any keepalive has been answered yet. */
  private heard = false
  private registration?: Registration
  private readonly strandedKeys: string[] = []
  private readonly onClientClosed = () =>
    this.end('closed', `session ${this.leaseHex} ended because its etcd client was closed; the lease is left to expire`)

  private constructor(
    readonly client: Namespace,
    leaseId: string,
    /** The lease TTL in seconds: as granted or asked for, then as the server reports it. */
    private ttlSeconds: number,
    expiresAt: number,
    expiresAtWall: number,
  ) {
    this.leaseId = leaseId
    this.leaseHex = leaseHex(leaseId)
    this.expiresAt = expiresAt
    this.expiresAtWall = expiresAtWall
  }

  /**
   * Grants a lease (or adopts `leaseId`) and keeps it alive. Adopting sends the first keepalive
   * without waiting for its answer, so work on the session can start in the same round trip; if
   * the lease turns out to be gone, {@link signal} aborts. With an `aliveUntil` showing that the
   * lease's last keepalive was answered less than TTL/3 ago, adopting sends none until the
   * regular TTL/3 tick is due (the lease is certainly alive until then). A granted lease's
   * first keepalive goes out TTL/3 after the grant, which is its first renewal.
   */
  static async create(client: Namespace, options?: SessionOptions): Promise<Session> {
    checkClient(client, 'Session.create')
    options = checkOptions(options, 'Session.create')
    const ttl = checkSeconds(options.ttl, 'Session ttl', 1, { fallback: DEFAULT_TTL })
    const knownUntil = checkAliveUntil(options.aliveUntil, options.leaseId)
    closedSignal(client).throwIfAborted()
    const sentAt = performance.now()
    const sentAtWall = Date.now()
    if (options.leaseId !== undefined) {
      const leaseId = checkLeaseId(options.leaseId)
      const known = knownUntil > sentAt
      // The given bound already has the safety margin taken off: store it so that this
      // session's aliveUntil equals it (not one margin less on every handoff).
      const expiresAt = knownUntil + SAFETY_MARGIN_MS
      const session = new Session(client, leaseId, ttl, known ? expiresAt : 0, known ? sentAtWall + (expiresAt - sentAt) : 0)
      // The bound is the send time of the last answered keepalive + TTL (- margin): if that
      // keepalive is younger than the TTL/3 keepalive interval, the lease is certainly alive and
      // the next keepalive is due only when that interval ends (a warm reuse sends nothing).
      const renewedAt = knownUntil + SAFETY_MARGIN_MS - ttl * 1000
      session.start(known ? Math.max(0, Math.min(keepAliveInterval(ttl), renewedAt + keepAliveInterval(ttl) - sentAt)) : 0)
      return session
    }
    let granted
    try {
      granted = await client.leaseClient.leaseGrant({ TTL: ttl })
    } catch (err) {
      throw toTypedError(err, 'etcd lease grant')
    }
    const grantedTtl = Number(granted.TTL)
    const session = new Session(client, granted.ID, grantedTtl, sentAt + grantedTtl * 1000, sentAtWall + grantedTtl * 1000)
    // The grant itself is the first renewal (its send time + TTL is the bound): the first
    // keepalive is due one interval later, as every later one (Go's lessor waits too).
    session.start(keepAliveInterval(grantedTtl))
    return session
  }

  /**
   * Aborted, with a {@link LeaseLostError} as reason, when the lease is lost or the session
   * ends. Reading it checks the bound itself: past {@link aliveUntil} it is aborted at once,
   * even when the expiry timer has not run yet — after a freeze Node runs the timers that were
   * due earlier first, and one of them may be the holder's next write. So read it where it
   * matters (`session.signal.aborted`, or a grant's `signal`), rather than keeping it.
   */
  get signal(): AbortSignal {
    if (this.started && !this.ended && performance.now() >= this.expiryBound()) this.checkExpiry()
    return this.controller.signal
  }

  /**
   * Until when (on the `performance.now()` clock) the lease is certainly alive, by the send time
   * of the last answered keepalive (or grant) plus the TTL, minus a safety margin. 0 if unknown,
   * and 0 once etcd said the lease expired or was revoked.
   */
  get aliveUntil(): number {
    const until = this.certainUntil()
    return until === 0 ? 0 : until - SAFETY_MARGIN_MS
  }

  /**
   * The certain expiry on the `performance.now()` clock, by whichever of the monotonic and the
   * wall clock says it comes sooner. The monotonic clock alone is not enough: it may not advance
   * while a frozen function's VM is paused, while the server's lease keeps running down. A wall
   * clock stepped forward only makes the bound earlier; one stepped back is outvoted.
   */
  private certainUntil(): number {
    if (this.expiresAt === 0) return 0
    return Math.min(this.expiresAt, performance.now() + (this.expiresAtWall - Date.now()))
  }

  /**
   * The lease TTL in seconds: as granted, or for an adopted lease as the server reports it
   * once the first keepalive is answered (the `ttl` option until then).
   */
  get ttl(): number {
    return this.ttlSeconds
  }

  /** True until the lease is lost or the session is closed or orphaned (checked as {@link signal} is). */
  get active(): boolean {
    return !this.signal.aborted
  }

  /**
   * Keys of this session that a primitive could not delete after a failed or abandoned wait
   * (etcd unreachable at that moment). They live as long as the lease: a session with stranded
   * keys must not be lent to other work (another lock could queue behind a ghost key), so close
   * or orphan it — revoking or letting the lease expire removes them.
   */
  get stranded(): readonly string[] {
    return this.strandedKeys
  }

  /** Records a key of this session whose clean-up failed (see {@link stranded}). */
  strand(key: string): void {
    if (!this.strandedKeys.includes(key)) this.strandedKeys.push(key)
  }

  /** Stops keeping the lease alive and leaves it to expire on its own (Go's `Orphan`). */
  orphan(): void {
    this.end('closed', `session ${this.leaseHex} was orphaned: its lease is left to expire`)
  }

  /** Ends the session and revokes its lease, deleting every key attached to it (Go's `Close`). */
  async close(): Promise<void> {
    this.end('closed', `session ${this.leaseHex} was closed`)
    const reason = (this.signal.reason as LeaseLostError).reason
    if (reason === 'expired' || reason === 'revoked') return // already gone on the server
    await revokeLease(this.client, this.leaseId)
  }

  /**
   * Registers for keepalive replies; the first keepalive goes out after `firstDelay` ms (the
   * shared stream opens with it, if it is not open: nothing of it on a cold start's path).
   */
  private start(firstDelay = 0) {
    const stream = keepAliveStream(this.client)
    this.registration = stream.register(
      this.leaseId,
      ({ sentAt, sentAtWall, ttl }) => {
        if (ttl > 0) {
          this.expiresAt = Math.max(this.expiresAt, sentAt + ttl * 1000)
          this.expiresAtWall = Math.max(this.expiresAtWall, sentAtWall + ttl * 1000)
          // An adopted lease's TTL is only known from the server: pace the keepalives by it.
          if (ttl !== this.ttlSeconds && this.heard === false) this.schedule(ttl)
          this.heard = true
          this.armExpiry()
          return
        }
        const revoked = this.expiresAt !== 0 && performance.now() < this.certainUntil()
        this.end(
          revoked ? 'revoked' : 'expired',
          `lease ${this.leaseHex} ${revoked ? 'was revoked' : 'expired'}: locks and keys held with it are gone`,
        )
      },
      this.onClientClosed,
    )
    closedSignal(this.client).addEventListener('abort', this.onClientClosed, { once: true })
    if (this.expiresAt === 0) this.unknownUntil = performance.now() + this.ttlSeconds * 1000
    this.started = true
    this.armExpiry()
    this.schedule(this.ttlSeconds, firstDelay)
  }

  /**
   * Go sends a keepalive at once, then every TTL/3. `firstDelay` postpones the first one (an
   * adopted lease renewed less than TTL/3 ago).
   */
  private schedule(ttl: number, firstDelay = 0) {
    this.ttlSeconds = ttl
    this.keepAliveTimer?.cancel()
    const stream = keepAliveStream(this.client)
    const interval = keepAliveInterval(ttl)
    // A request unanswered for a whole interval means the stream is dead: replace it.
    const silentAfterMs = Math.max(1000, interval)
    const tick = () => stream.send(this.leaseId, silentAfterMs)
    const every = () => {
      tick()
      if (this.ended) return
      this.keepAliveTimer = startInterval(interval, tick)
    }
    if (firstDelay <= 0) return every()
    this.keepAliveTimer = startTimer(firstDelay, every)
  }

  /**
   * Arms the expiry timer at the conservative bound ({@link aliveUntil}), or, while the expiry
   * is unknown, one TTL after adopting. Checking only on the keepalive tick would fire up to
   * TTL/3 late — after etcd may already have expired the lease and granted its locks to others.
   */
  private armExpiry() {
    if (this.ended) return
    this.expiryTimer?.cancel()
    this.expiryTimer = startTimer(this.expiryBound() - performance.now(), () => this.checkExpiry())
  }

  /** When the session must end unless a keepalive answer moves it: {@link aliveUntil}, or while the expiry is unknown, one TTL after adopting. */
  private expiryBound(): number {
    return this.expiresAt === 0 ? this.unknownUntil : this.aliveUntil
  }

  private checkExpiry() {
    // An answer may have moved the bound since the timer was armed (the wall clock too).
    if (performance.now() < this.expiryBound()) return this.armExpiry()
    const ttl = this.ttlSeconds
    this.end(
      'unreachable',
      `lease ${this.leaseHex} could not be kept alive: etcd did not answer within the ${ttl}s TTL (less a safety margin), so it may expire at any moment`,
    )
  }

  private end(reason: LeaseLossCause, message: string) {
    if (this.ended) return
    this.ended = true
    // etcd said the lease is gone: the bound of an earlier renewal no longer means anything
    // (a renewal answered while a revoke was being applied can reach past it, etcd #21638).
    if (reason === 'revoked' || reason === 'expired') this.expiresAt = this.expiresAtWall = 0
    this.keepAliveTimer?.cancel()
    this.expiryTimer?.cancel()
    closedSignal(this.client).removeEventListener('abort', this.onClientClosed)
    if (this.registration) keepAliveStream(this.client).release(this.leaseId, this.registration)
    this.controller.abort(leaseLost(this.leaseId, reason, message))
  }
}

/**
 * The reason a session's signal aborts with, without a captured stack: it would only show the
 * session's own clean-up, and capturing one cost more CPU than the rest of a warm invocation's
 * session hand-over (profiled: ~30 µs per invocation).
 */
function leaseLost(leaseId: string, reason: LeaseLossCause, message: string): LeaseLostError {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new LeaseLostError(leaseId, reason, message)
  } finally {
    Error.stackTraceLimit = limit
  }
}

/** Keepalive period for a TTL in seconds: TTL/3 (as Go), at least 200 ms. */
function keepAliveInterval(ttl: number): number {
  return Math.max(200, Math.floor((ttl * 1000) / 3))
}

function checkAliveUntil(aliveUntil: unknown, leaseId: unknown): number {
  if (aliveUntil === undefined) return 0
  if (typeof aliveUntil !== 'number' || Number.isNaN(aliveUntil)) {
    throw new InvalidArgumentError(
      `aliveUntil must be a performance.now() timestamp in ms (a previous session's aliveUntil), got ${String(aliveUntil)}`,
    )
  }
  if (leaseId === undefined) throw new InvalidArgumentError('aliveUntil only applies to an adopted lease: pass leaseId with it')
  return aliveUntil
}

function checkLeaseId(leaseId: unknown): string {
  if (typeof leaseId !== 'string' || !/^[1-9][0-9]{0,18}$/.test(leaseId) || BigInt(leaseId) > 0x7fffffffffffffffn) {
    throw new InvalidArgumentError(
      `leaseId must be a positive int64 as a decimal string (e.g. "7587862145453925126"), got ${JSON.stringify(leaseId)}`,
    )
  }
  return leaseId
}
