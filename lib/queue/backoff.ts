import { checkSeconds } from '../core/check.js'
import { InvalidArgumentError } from '../errors.js'
import { DEFAULT_MAX_RETRY_DELAY_S, DEFAULT_RETRY_DELAY_S } from '../limits.js'

/**
 * How long a failed message waits before it is delivered again: exponential in its receive
 * count, with "equal jitter" (half fixed, half random) so that messages that failed together
 * do not all come back together, and never 0 unless `retryDelay` is 0.
 */

/** The retry back-off of a queue (seconds, whole: a retry delay is a lease TTL). */
export interface RetryOptions {
  /**
   * Seconds a message that failed on its first receive waits before it is visible again; each
   * further failure doubles it (jittered, up to `maxRetryDelay`). Default 1; 0 retries at once.
   */
  retryDelay?: number
  /** Longest retry delay in seconds (default 300). */
  maxRetryDelay?: number
}

/** {@link RetryOptions} with defaults applied. */
export type Backoff = Required<RetryOptions>

/** Checks retry options (`what` names them in errors) and applies the defaults. */
export function checkBackoff(options: RetryOptions | undefined, what: string): Backoff {
  const retryDelay = checkSeconds(options?.retryDelay, `${what}: retryDelay`, 0, { fallback: DEFAULT_RETRY_DELAY_S })
  const maxRetryDelay = checkSeconds(options?.maxRetryDelay, `${what}: maxRetryDelay`, 0, {
    fallback: Math.max(DEFAULT_MAX_RETRY_DELAY_S, retryDelay),
  })
  if (maxRetryDelay < retryDelay)
    throw new InvalidArgumentError(`${what}: maxRetryDelay (${maxRetryDelay}) must be at least retryDelay (${retryDelay})`)
  return { retryDelay, maxRetryDelay }
}

/**
 * Seconds before a message that failed on its `receiveCount`-th receive is visible again:
 * `d = min(maxRetryDelay, retryDelay * 2^(receiveCount-1))`, then a whole number of seconds
 * from `ceil(d/2)` to `d` (at least 1 when `d` > 0).
 */
export function retryDelaySeconds(receiveCount: number, backoff: Backoff, random: () => number = Math.random): number {
  if (backoff.retryDelay === 0) return 0
  const exponent = Math.min(Math.max(0, receiveCount - 1), 40)
  const d = Math.min(backoff.maxRetryDelay, backoff.retryDelay * 2 ** exponent)
  const low = Math.max(1, Math.ceil(d / 2))
  return Math.min(d, low + Math.floor(random() * (d - low + 1)))
}
