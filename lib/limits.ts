/**
 * Limits and defaults that more than one module needs: each has its home here, so a limit is
 * changed in one place.
 */

/** Longest lease TTL etcd grants, in seconds (it caps TTLs at 9e9 ms). */
export const MAX_TTL_S = 9_000_000

/** Longest name (a key or key prefix a user gives), in UTF-8 bytes; a key is a name plus a short suffix. */
export const MAX_NAME_BYTES = 4096

/** Largest value etcd accepts in one request by default (1.5 MiB, `--max-request-bytes`) minus room for the key. */
export const MAX_VALUE_BYTES = 1_500_000

/**
 * Largest request etcd accepts by default (`--max-request-bytes`, 1.5 MiB): no key plus value it
 * stores is larger, unless its operator raised the flag. Every read of values is planned with it.
 */
export const MAX_REQUEST_BYTES = 1.5 * 1024 * 1024

/**
 * The client's gRPC receive limit, unless configured (`createClient({ maxResponseBytes })`,
 * `ETCD_MAX_RESPONSE_BYTES`): grpc-js would stop at 4 MiB, less than a Range answer can be.
 * A larger answer is a `ResponseTooLargeError`. Twice {@link RESPONSE_BUDGET_BYTES}, so the
 * primitives' reads still fit when etcd stores values of up to twice its default request limit.
 */
export const DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
/** The largest receive limit a client may set: gRPC reads a message's length as a 32-bit signed integer. */
export const MAX_RESPONSE_BYTES = 2 ** 31 - 1

/**
 * What one answer to one of the primitives' requests is planned to be at most, counting every
 * value at {@link MAX_REQUEST_BYTES}: values are read at most {@link VALUES_PER_RESPONSE} at a
 * time, keys-only reads at most {@link MAX_KEYS_PER_READ} keys of at most {@link MAX_KEY_BYTES}.
 */
export const RESPONSE_BUDGET_BYTES = 16 * 1024 * 1024

/** Bytes a read key-value may add to an answer beside its value: key, revisions, framing. */
const KV_OVERHEAD_BYTES = 8 * 1024

/** Values one request reads at most: their worst case fits {@link RESPONSE_BUDGET_BYTES} (10). */
export const VALUES_PER_RESPONSE = Math.floor(RESPONSE_BUDGET_BYTES / (MAX_REQUEST_BYTES + KV_OVERHEAD_BYTES))

/** Longest key the primitives read in bulk: a name, a queue's bookkeeping prefix and suffixes. */
export const MAX_KEY_BYTES = MAX_NAME_BYTES + 256

/** Keys one keys-only read returns at most; a scan Txn makes at most three such reads. */
export const MAX_KEYS_PER_READ = Math.floor(RESPONSE_BUDGET_BYTES / 3 / (MAX_KEY_BYTES + 64))

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

/** First retry delay of a failed message, seconds (doubles per receive, jittered; see lib/queue/backoff.ts). */
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

/** Longest period (`per`) of a RateLimiter's rate, ms: a day (RateLimiter, etcdRateLimit). */
export const MAX_RATE_PER_MS = 86_400_000

/**
 * Longest refill interval of a RateLimiter (`per / rate`), ms: a year. A token lives up to
 * `burst + 1` intervals; every timer on the way is capped and re-armed (lib/timers.ts), so this
 * only refuses settings that would admit next to nothing.
 */
export const MAX_REFILL_INTERVAL_MS = 365 * 86_400_000

/** Seconds an in-progress idempotency or single-flight record outlives a crashed owner unless configured. */
export const DEFAULT_IN_PROGRESS_TTL_S = 10

/** Bytes (keys plus values) a configuration cache keeps at most unless configured (`PrefixCache`, `etcdConfig`). */
export const DEFAULT_CONFIG_MAX_BYTES = 8 * 1024 * 1024

/** The largest `maxBytes` of a configuration cache: a Lambda's memory is better spent elsewhere. */
export const MAX_CONFIG_BYTES = 1024 * 1024 * 1024

/**
 * What one page of a configuration load is planned to carry: a page holds as many values as
 * this fits at the largest key-value seen so far (the first page {@link VALUES_PER_RESPONSE},
 * planned as if every value were etcd's largest), at most {@link MAX_CONFIG_PAGE_VALUES}.
 */
export const CONFIG_PAGE_BYTES = 2 * 1024 * 1024

/** Most values one page of a configuration load reads. */
export const MAX_CONFIG_PAGE_VALUES = 1000

/** How old a served configuration snapshot may be unless configured (`etcdConfig`'s `maxStaleMs`), ms. */
export const DEFAULT_CONFIG_MAX_STALE_MS = 30_000
