/**
 * Limits and defaults that more than one module needs: each has its home here, so a limit is
 * changed in one place.
 */

/** Longest lease TTL etcd grants, in seconds (it caps TTLs at 9e9 ms). */
export const MAX_TTL_S = 9_000_000

/** Longest name (a key or key prefix a user gives), in UTF-8 bytes. */
export const MAX_NAME_BYTES = 4096

/** Largest value etcd accepts in one request by default (1.5 MiB, `--max-request-bytes`) minus room for the key. */
export const MAX_VALUE_BYTES = 1_500_000

/** Most operations etcd takes in one branch of a Txn by default (`--max-txn-ops`). */
export const MAX_TXN_OPS = 128

/** Most messages one queue receive claims. */
export const MAX_BATCH = 1000

/** Messages per queue invocation unless configured (queueConsumer, the dispatcher). */
export const DEFAULT_BATCH_SIZE = 10

/** Seconds a received message stays invisible to other receivers unless configured. */
export const DEFAULT_VISIBILITY_S = 30

/** Receives of a message before it goes to the dead-letter queue, unless configured (queueConsumer, etcdQueue events). */
export const DEFAULT_MAX_RECEIVES = 5

/** First retry delay of a failed message, seconds (doubles per receive, jittered; see lib/backoff.ts). */
export const DEFAULT_RETRY_DELAY_S = 1

/** Longest retry delay of a failed message, seconds. */
export const DEFAULT_MAX_RETRY_DELAY_S = 300

/** Longest delay of a delayed message, ms: a lease TTL (etcd caps those at {@link MAX_TTL_S}). */
export const MAX_DELAY_MS = MAX_TTL_S * 1000

/** Longest message group name, in UTF-8 bytes (it is part of keys and receipts). */
export const MAX_GROUP_BYTES = 128

/**
 * Most permits of a Semaphore, and most tokens (burst + 1) of a RateLimiter: every permit is
 * a key the queue's head reads when it looks for a free one.
 */
export const MAX_PERMITS = 1000

/**
 * Longest refill interval of a RateLimiter (`per / rate`), ms: a year. A token lives up to
 * `burst + 1` intervals; every timer on the way is capped and re-armed (lib/timers.ts), so this
 * only refuses settings that would admit next to nothing.
 */
export const MAX_REFILL_INTERVAL_MS = 365 * 86_400_000

/** Seconds an in-progress idempotency or single-flight record outlives a crashed owner unless configured. */
export const DEFAULT_IN_PROGRESS_TTL_S = 10
