import type { Namespace } from 'etcd3'
import { checkClient, checkInteger, checkOptions } from '../core/check.js'
import { ConflictError, InvalidArgumentError } from '../errors.js'
import { keyspace, type Keyspace } from '../core/kv.js'
import { Attempt, checkKeys, Isolation, type Read, type STM } from './attempt.js'
import { startStm } from '../telemetry/coordination.js'

export { Isolation, type STM }

/**
 * Software transactional memory over etcd, after Go's `concurrency.NewSTM`: `apply` reads and
 * writes through an {@link STM}; its writes are buffered and committed in one Txn guarded by
 * compares on what it read; on a conflict the buffers are dropped and `apply` runs again.
 */

/** Options of {@link runSTM}. */
export interface STMOptions {
  /** Default {@link Isolation.SerializableSnapshot}. */
  isolation?: Isolation
  /** Keys read together at the start of every attempt, in one round trip (Go's `WithPrefetch`). */
  prefetch?: string[]
  /**
   * Aborting it stops the transaction before its next read or commit: `runSTM` rejects with the
   * signal's reason and writes nothing. A commit already sent is not interrupted.
   */
  signal?: AbortSignal
  /** Give up with {@link ConflictError} after this many conflicting attempts (default: no limit, as Go). */
  maxAttempts?: number
}

/** What {@link runSTM} resolves with. */
export interface STMResult<T> {
  /** What the successful run of `apply` returned. */
  result: T
  /** The commit's store revision (the current revision if nothing was written). */
  revision: bigint
  /** How many times `apply` ran (1 when there was no conflict). */
  attempts: number
}

/**
 * Runs `apply` as a transaction, re-running it on conflict until its commit succeeds, and
 * resolves with its return value. An error thrown by `apply` (or by a read inside it) aborts the
 * transaction: nothing is written and `runSTM` rejects with that error. `apply` may run several
 * times, so it must have no side effects outside the STM.
 *
 * Differences from Go, all on purpose: a multi-key `get` always returns `keys[0]`'s value (Go
 * returns the first cached or buffered key's); a snapshot read whose revision was compacted
 * restarts the attempt (Go fails); a snapshot read on a member that has not applied the snapshot
 * revision yet is retried as a linearizable read (Go fails); `maxAttempts` and `signal` bound the
 * retries (Go has neither); a failed read aborts even if `apply` catches it (as Go's panic does);
 * under the serializable levels a retry prefetches, besides the last attempt's read set (Go's
 * Else branch), the other keys earlier attempts read (up to 64), both in the failed commit's Else
 * branch and with its own first read, so keys it picks among the same few are read without a
 * round trip of their own (a prefetched key is compared at commit only if `apply` reads it).
 */
export async function runSTM<T>(client: Namespace, apply: (stm: STM) => T | Promise<T>, options?: STMOptions): Promise<STMResult<T>> {
  checkClient(client, 'runSTM')
  options = checkOptions(options, 'runSTM')
  if (typeof apply !== 'function') throw new InvalidArgumentError(`runSTM: apply must be a function, got ${typeof apply}`)
  const isolation = checkIsolation(options.isolation)
  const maxAttempts = checkMaxAttempts(options.maxAttempts)
  const prefetch = checkKeys(options.prefetch)
  const { signal } = options
  const ks = keyspace(client)
  const cache = new Map<string, Read>()
  /** Keys earlier attempts read: a retry prefetches them with its reads (see {@link Attempt}). */
  const known = new Set<string>()
  const probe = startStm()
  if (probe === undefined) return attemptAll(ks, apply, isolation, maxAttempts, prefetch, signal, cache, known)
  try {
    const done = await attemptAll(ks, apply, isolation, maxAttempts, prefetch, signal, cache, known, () => probe.conflicted())
    probe.end(done.attempts)
    return done
  } catch (err) {
    // A ConflictError is thrown after its last attempt conflicted; any other error ends one more attempt.
    probe.end(err instanceof ConflictError ? probe.conflicts : probe.conflicts + 1, err)
    throw err
  }
}

/** The attempts of one {@link runSTM}; `conflicted` hears of each attempt that must run again. */
async function attemptAll<T>(
  ks: Keyspace,
  apply: (stm: STM) => T | Promise<T>,
  isolation: Isolation,
  maxAttempts: number,
  prefetch: string[],
  signal: AbortSignal | undefined,
  cache: Map<string, Read>,
  known: Set<string>,
  conflicted?: () => void,
): Promise<STMResult<T>> {
  for (let attempts = 1; ; attempts++) {
    signal?.throwIfAborted()
    const attempt = new Attempt(ks, isolation, cache, known, signal)
    let result: T | undefined
    try {
      if (prefetch.length > 0) await attempt.get(...prefetch)
      result = await apply(attempt)
      await attempt.idle()
    } catch (err) {
      if (!attempt.restart) throw err
    } finally {
      attempt.close()
    }
    if (!attempt.restart) {
      // A failed read aborts even if apply caught it (Go panics out of apply).
      if (attempt.failure) throw attempt.failure
      signal?.throwIfAborted()
      const committed = await attempt.commit()
      if (committed !== undefined) return { result: result as T, revision: committed, attempts }
    }
    cache = attempt.nextCache
    attempt.remember(known)
    conflicted?.()
    if (attempts >= maxAttempts) {
      throw new ConflictError(
        `STM transaction conflicted ${attempts} times (maxAttempts ${maxAttempts}): the keys it reads are written too often; raise maxAttempts or write less contended keys`,
      )
    }
  }
}

function checkIsolation(isolation: unknown): Isolation {
  if (isolation === undefined) return Isolation.SerializableSnapshot
  if (typeof isolation === 'string' && Object.hasOwn(Isolation, isolation)) return isolation as Isolation
  throw new InvalidArgumentError(
    `isolation must be one of ${Object.values(Isolation).join(', ')} (Isolation.*), got ${JSON.stringify(isolation)}`,
  )
}

function checkMaxAttempts(n: unknown): number {
  return checkInteger(n, 'maxAttempts', 1, Number.MAX_SAFE_INTEGER, { fallback: Infinity, orInfinity: true })
}
