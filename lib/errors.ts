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
  override readonly code: string = 'INVALID_ARGUMENT'
}

/**
 * A call the object's state does not allow, whatever its arguments: a second call while one
 * runs on the same object, `enter()` twice, `leave()` before `enter()`, a call on a closed
 * limiter or an ended STM attempt. A subclass of {@link InvalidArgumentError} only so that
 * catches written before it existed still match.
 */
export class InvalidStateError extends InvalidArgumentError {
  override readonly code: string = 'INVALID_STATE'
}

/**
 * Keys that are not ours where one of our layouts expects only its own (a key without a lease
 * under a lock's prefix, a non-numeric key in a sequential range): etcd holds someone else's
 * data there. The message names the key and says to move that data elsewhere. A subclass of
 * {@link InvalidArgumentError} only so that catches written before it existed still match.
 */
export class ForeignKeyError extends InvalidArgumentError {
  override readonly code: string = 'FOREIGN_KEY'
}

/**
 * The invocation's event cannot be used: a function of the event that a middleware calls (a
 * `key`, `payload` or `name` function) threw, or returned no usable value — malformed JSON in a
 * body, a missing or oversized header. The caller's data is at fault, not the service: HTTP 400
 * with `expose`, so `@middy/http-error-handler` answers it with the message. Nothing was written.
 */
export class InvalidRequestError extends InvalidArgumentError {
  override readonly code: string = 'INVALID_REQUEST'
  /** For `@middy/http-error-handler`: 400 Bad Request. */
  readonly statusCode = 400
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true
}

/**
 * `etcdIdempotency` with `requireKey`: the event carries no idempotency key (the `key` function
 * returned undefined). HTTP 400, exposed: the caller must send one. The handler did not run.
 */
export class IdempotencyKeyMissingError extends InvalidRequestError {
  override readonly code = 'IDEMPOTENCY_KEY_MISSING'
}

/**
 * A value larger than etcd takes in one request (a message to enqueue, an STM or campaign
 * value). Such a value nearly always comes from a request body, so it carries HTTP 413 with
 * `expose`: behind `@middy/http-error-handler` the caller learns the limit. Nothing was written.
 */
export class ValueTooLargeError extends InvalidArgumentError {
  override readonly code = 'VALUE_TOO_LARGE'
  /** For `@middy/http-error-handler`: 413 Content Too Large. */
  readonly statusCode = 413
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true

  constructor(
    /** The value's size in bytes. */
    readonly bytes: number,
    /** The most that is accepted, in bytes. */
    readonly limit: number,
    message: string,
  ) {
    super(message)
  }
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

/**
 * etcd's answer was larger than the client accepts (its gRPC receive limit, `maxResponseBytes`):
 * the request reached etcd and was carried out — a write in it may have been applied — but its
 * answer was dropped. Never resent (the same request gets the same answer); `size` and `limit`
 * say by how much. Raise `maxResponseBytes` (`ETCD_MAX_RESPONSE_BYTES`) or read less at a time.
 */
export class ResponseTooLargeError extends MiddyEtcdError {
  override readonly code = 'RESPONSE_TOO_LARGE'

  constructor(
    /** Bytes of the answer etcd sent. */
    readonly size: number,
    /** The client's receive limit in bytes. */
    readonly limit: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/** etcd refused the request for lack of permission (auth enabled, role does not cover the key). */
export class PermissionDeniedError extends MiddyEtcdError {
  override readonly code = 'PERMISSION_DENIED'
}

/**
 * `tryLock` found the lock held by another session (Go: `ErrLocked`). Carries HTTP's 409
 * Conflict with `expose`, so `@middy/http-error-handler` answers it (the message, which names
 * the lock, becomes the body).
 */
export class LockedError extends MiddyEtcdError {
  override readonly code: string = 'LOCKED'
  /** For `@middy/http-error-handler`: 409 Conflict (503 for {@link LockTimeoutError}). */
  readonly statusCode: number = 409
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true
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

/**
 * A write kept conflicting with other writers until its attempts ran out: an STM transaction
 * after `maxAttempts` (this class), a queue move ({@link QueueConflictError}). Nothing was
 * written; retrying later may succeed.
 */
export class ConflictError extends MiddyEtcdError {
  override readonly code: string = 'STM_CONFLICT'
}

/** A move of a queue message (a message group's hand-on, a dead-letter move) kept conflicting with other writers of its keys. */
export class QueueConflictError extends ConflictError {
  override readonly code = 'QUEUE_CONFLICT'
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

/**
 * `etcdSemaphore` with `acquire: 'try'` found every permit held (or calls queued for one): the
 * capacity is full for now, which is not a conflict with the request (a held lock's 409) but
 * "too many at once": HTTP 429 with a `Retry-After` header, as a rate limit answers, exposed.
 * A `LockedError`, so code that catches try-lock misses catches it too.
 */
export class SemaphoreFullError extends LockedError {
  override readonly code = 'SEMAPHORE_FULL'
  /** For `@middy/http-error-handler`: 429 Too Many Requests. */
  override readonly statusCode = 429
  /** For `@middy/http-error-handler`: sent with the answer. */
  readonly headers: Record<string, string>

  constructor(
    /** When a try could succeed, ms: a guess (permits free when their holders' handlers end). */
    readonly retryAfterMs: number,
    message: string,
  ) {
    super(message)
    this.headers = { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) }
  }
}

/** A blocking acquire gave up: its wait budget (option or remaining invocation time) ran out. HTTP 503, exposed. */
export class LockTimeoutError extends LockedError {
  override readonly code = 'LOCK_TIMEOUT'
  override readonly statusCode = 503
}

/** A middleware's wait (barrier, double barrier, leadership) ran out of its budget. HTTP 504, exposed. */
export class WaitTimeoutError extends MiddyEtcdError {
  override readonly code = 'WAIT_TIMEOUT'
  /** For `@middy/http-error-handler`: 504 Gateway Timeout. */
  readonly statusCode = 504
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true
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
 * A queue consumer was invoked with a dispatch for another queue (or another kind of queue):
 * its `etcdQueue` event and its `queueConsumer` options name different queues. Nothing was
 * claimed or settled; the dispatched messages come back when their visibility timeout ends.
 */
export class QueueMismatchError extends MiddyEtcdError {
  override readonly code = 'QUEUE_MISMATCH'

  constructor(
    /** The queue the consumer is configured for (`queueConsumer({ queue })`). */
    readonly configured: string,
    /** The queue the dispatch was for (`etcdQueue.queue` of the event). */
    readonly dispatched: string,
    message: string,
  ) {
    super(message)
  }
}

/**
 * A duplicate found its idempotency key still being processed by another caller and was not to
 * wait (`onInProgress: 'reject'`), or its wait ran out first. Shaped as HTTP 409 Conflict: the
 * client should retry later, when the first call has finished.
 */
export class IdempotencyInProgressError extends MiddyEtcdError {
  override readonly code = 'IDEMPOTENCY_IN_PROGRESS'
  /** HTTP status for error handlers such as `@middy/http-error-handler`. */
  readonly statusCode = 409
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true
}

/**
 * The idempotency key was used before with a different payload (its stored payload hash
 * differs). Nothing was run. Shaped as HTTP 422: the client reused a key for another request.
 */
export class IdempotencyKeyMismatchError extends MiddyEtcdError {
  override readonly code = 'IDEMPOTENCY_KEY_MISMATCH'
  /** HTTP status for error handlers such as `@middy/http-error-handler`. */
  readonly statusCode = 422
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true
}

/** Why a result could not be stored: see {@link IdempotencyResultNotStorableError}. */
export type NotStorableReason = 'not-json' | 'too-large'

/**
 * A result that an idempotency record cannot keep: not plain JSON (it would come back different
 * to a duplicate), or larger than etcd accepts in one value. Nothing was stored.
 */
export class IdempotencyResultNotStorableError extends MiddyEtcdError {
  override readonly code = 'IDEMPOTENCY_RESULT_NOT_STORABLE'

  constructor(
    /** not-json: a value JSON cannot carry unchanged; too-large: over etcd's value limit. */
    readonly reason: NotStorableReason,
    message: string,
  ) {
    super(message)
  }
}

/**
 * `complete`/`fail` of an idempotency claim whose in-progress record is no longer this claim's:
 * its lease ended while the work ran (crash-like pause, etcd unreachable past the TTL), so a
 * duplicate may have taken the key. Nothing was written.
 */
export class IdempotencyClaimLostError extends MiddyEtcdError {
  override readonly code = 'IDEMPOTENCY_CLAIM_LOST'
}

/**
 * A `singleFlight` follower's leader failed in another process: its error's name, message and
 * code, carried through etcd (followers in the leader's own process get the error object itself).
 */
export class SingleFlightError extends MiddyEtcdError {
  override readonly code = 'SINGLE_FLIGHT_FAILED'

  constructor(
    message: string,
    /** The leader's error as it crossed etcd. */
    readonly leaderError: { name: string; message: string; code?: string },
  ) {
    super(message)
  }
}

/**
 * A downstream store (SQL, DynamoDB, …) refused a write fenced with `fence` because a write with
 * an equal or higher fence is already there: a later holder has written, so this holder lost its
 * lock (or leadership) meanwhile. Stop the work; retrying with the same fence cannot succeed.
 */
export class FenceRejectedError extends MiddyEtcdError {
  override readonly code = 'FENCE_REJECTED'

  constructor(
    /** The fencing token of the refused write. */
    readonly fence: bigint,
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
 * A rate limiter did not admit the call: a waiting `etcdRateLimit` ran out of its budget.
 * `retryAfterMs` estimates when a try could succeed. Carries HTTP's 429 Too Many Requests with
 * `expose`, so `@middy/http-error-handler` answers it.
 */
export class RateLimitedError extends MiddyEtcdError {
  override readonly code = 'RATE_LIMITED'
  /** For `@middy/http-error-handler`: 429 Too Many Requests. */
  readonly statusCode = 429
  /** For `@middy/http-error-handler`: send the message to the caller. */
  readonly expose = true

  constructor(
    /** Estimated wait, in ms, before a call could be admitted. */
    readonly retryAfterMs: number,
    message: string,
  ) {
    super(message)
  }
}

/**
 * A configuration prefix holds more than its cache may keep (`maxBytes`: keys plus values):
 * nothing is served from it. `bytes` is what was counted when the limit was crossed. Raise
 * `maxBytes`, or keep less under the prefix (large blobs belong elsewhere; store a reference).
 */
export class ConfigTooLargeError extends MiddyEtcdError {
  override readonly code = 'CONFIG_TOO_LARGE'

  constructor(
    /** Bytes counted (keys plus values) when the limit was crossed. */
    readonly bytes: number,
    /** The cache's `maxBytes`. */
    readonly limit: number,
    message: string,
  ) {
    super(message)
  }
}

/**
 * A configuration value that the cache's `parse` refused (not JSON under `parse: 'json'`, or a
 * parse function threw). Thrown by every read that would include the value, until it is fixed
 * in etcd; the message names the key and its revision.
 */
export class ConfigParseError extends MiddyEtcdError {
  override readonly code = 'CONFIG_PARSE'

  constructor(
    /** The key (relative to the cache's prefix) whose value did not parse. */
    readonly key: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/**
 * A configuration cache could not prove itself current within `maxStaleMs` (etcd unreachable,
 * its watch lost and the reload failing): rather than serve values that may be older than the
 * bound, the read fails. `cause` is what the proof ran into.
 */
export class ConfigStaleError extends MiddyEtcdError {
  override readonly code = 'CONFIG_STALE'

  constructor(
    /** The bound that could not be kept, ms. */
    readonly maxStaleMs: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/**
 * `etcdConfig` with `required` keys found some of them missing under its prefix: a deployment
 * fault, not the caller's. HTTP 500, not exposed (the key names stay in the logs). The handler
 * did not run.
 */
export class ConfigMissingError extends MiddyEtcdError {
  override readonly code = 'CONFIG_MISSING'
  /** For `@middy/http-error-handler`: 500, the service's fault. */
  readonly statusCode = 500
  /** For `@middy/http-error-handler`: do not send the message to the caller. */
  readonly expose = false

  constructor(
    /** The required keys (relative to the prefix) that are not in etcd. */
    readonly missing: readonly string[],
    message: string,
  ) {
    super(message)
  }
}
