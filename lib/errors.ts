/**
 * Every error this toolkit throws on purpose. Each has a stable `code` for programs and a
 * message that says what went wrong and what to do about it.
 */

/** Base class: `instanceof MiddyEtcdError` catches everything the toolkit throws on purpose. */
export class MiddyEtcdError extends Error {
  readonly code: string = 'MIDDY_ETCD_ERROR'

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/** A bad argument or option: names the setting and the accepted values. Nothing was written. */
export class InvalidArgumentError extends MiddyEtcdError {
  override readonly code = 'INVALID_ARGUMENT'
}

/** The client configuration (options or environment) is unusable; names the setting. */
export class ConfigurationError extends MiddyEtcdError {
  override readonly code = 'INVALID_CONFIGURATION'

  constructor(
    /** The option or environment variable at fault, e.g. `ETCD_ENDPOINTS`. */
    readonly setting: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/** etcd could not be reached, or did not answer within the call deadline. */
export class EtcdUnavailableError extends MiddyEtcdError {
  override readonly code = 'ETCD_UNAVAILABLE'
}

/** etcd refused the request for lack of permission (auth enabled, role does not cover the key). */
export class PermissionDeniedError extends MiddyEtcdError {
  override readonly code = 'PERMISSION_DENIED'
}

/** `tryLock` found the lock held by another session (Go: `ErrLocked`). */
export class LockedError extends MiddyEtcdError {
  override readonly code: string = 'LOCKED'
}

/** The session's lease ended while the operation needed it (Go: `ErrSessionExpired`). */
export class SessionExpiredError extends MiddyEtcdError {
  override readonly code = 'SESSION_EXPIRED'
}

/** `unlock` of a lock this object does not hold (Go: `ErrLockReleased`). */
export class LockReleasedError extends MiddyEtcdError {
  override readonly code = 'LOCK_RELEASED'
}

/** `proclaim` by a candidate that is not (or no longer) the leader (Go: `ErrElectionNotLeader`). */
export class NotLeaderError extends MiddyEtcdError {
  override readonly code = 'NOT_LEADER'
}

/** `leader()` on an election nobody has campaigned in (Go: `ErrElectionNoLeader`). */
export class NoLeaderError extends MiddyEtcdError {
  override readonly code = 'NO_LEADER'
}

/** A create-only write found the key already there, e.g. a second `Barrier.hold()` (Go: `ErrKeyExists`). */
export class KeyExistsError extends MiddyEtcdError {
  override readonly code = 'KEY_EXISTS'
}

/** A DoubleBarrier already has `count` participants (Go: `ErrTooManyClients`). */
export class TooManyClientsError extends MiddyEtcdError {
  override readonly code = 'TOO_MANY_CLIENTS'
}

/** An STM transaction kept conflicting until `maxAttempts` ran out. */
export class ConflictError extends MiddyEtcdError {
  override readonly code = 'STM_CONFLICT'
}

/** Why a wait's watch ended early: see {@link WatchLostError}. */
export type WatchLossCause = 'client-closed' | 'ended'

/** A watch ended before the awaited event: etcd ended it (compaction, cancel), or the client was closed. */
export class WatchLostError extends MiddyEtcdError {
  override readonly code = 'WATCH_LOST'
  /** client-closed: `close()` was called on the client while waiting; ended: etcd ended the watch. */
  readonly reason: WatchLossCause

  constructor(message: string, options?: { cause?: unknown; reason?: WatchLossCause }) {
    super(message, options)
    this.reason = options?.reason ?? 'ended'
  }
}

/** Why a session's lease is gone: the `reason` of `Session.signal`. */
export type LeaseLossCause = 'expired' | 'revoked' | 'unreachable' | 'closed'

/** The reason a Session's `signal` aborts with: its lease is gone, and why. */
export class LeaseLostError extends SessionExpiredError {
  constructor(
    readonly leaseId: string,
    /** expired (TTL ran out), revoked (by anyone), unreachable (no keepalive answer in time), closed (by us). */
    readonly reason: LeaseLossCause,
    message: string,
  ) {
    super(message)
  }
}

/** A blocking acquire gave up: its wait budget (option or remaining invocation time) ran out. */
export class LockTimeoutError extends LockedError {
  override readonly code = 'LOCK_TIMEOUT'
}

/** A middleware's wait (barrier, double barrier, leadership) ran out of its budget. */
export class WaitTimeoutError extends MiddyEtcdError {
  override readonly code = 'WAIT_TIMEOUT'
}

/** Why an ack/nack found its claim gone: see {@link ClaimLostError}. */
export type ClaimLossCause = 'expired' | 'reclaimed' | 'gone'

/**
 * `ack`/`nack` of a queue message whose claim is no longer this receiver's: it expired (the
 * message is visible again), another receiver claimed it since, or the item left the queue
 * (already acked, dequeued by someone else, or dead-lettered). Nothing was changed.
 */
export class ClaimLostError extends MiddyEtcdError {
  override readonly code = 'CLAIM_LOST'

  constructor(
    /** expired (visible again), reclaimed (another receiver or a delayed nack holds it), gone (no longer queued). */
    readonly reason: ClaimLossCause,
    message: string,
  ) {
    super(message)
  }
}

/**
 * A Semaphore or RateLimiter contender whose settings (permits; rate, per, burst) differ from
 * the ones stored with it in etcd by the first contender. Nothing was written: a contender
 * that disagrees would over- or under-admit, so it fails instead.
 */
export class ConfigMismatchError extends MiddyEtcdError {
  override readonly code = 'CONFIG_MISMATCH'

  constructor(
    /** The settings stored in etcd, as written in the config key (e.g. `permits=5`). */
    readonly stored: string,
    /** This contender's settings, in the same form. */
    readonly given: string,
    message: string,
  ) {
    super(message)
  }
}

/**
 * A rate limiter did not admit the call: `tryAcquire` found no token, or a waiting
 * `etcdRateLimit` ran out of its budget. `retryAfterMs` estimates when a try could succeed.
 */
export class RateLimitedError extends MiddyEtcdError {
  override readonly code = 'RATE_LIMITED'

  constructor(
    /** Estimated wait, in ms, before a call could be admitted. */
    readonly retryAfterMs: number,
    message: string,
  ) {
    super(message)
  }
}
