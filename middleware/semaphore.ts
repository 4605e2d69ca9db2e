import type { MiddlewareObj } from '@middy/core'
import type { Context } from 'aws-lambda'
import { LockedError, SemaphoreFullError } from '../lib/errors.js'
import { checkPermits, Semaphore } from '../lib/permits/semaphore.js'
import { lockMiddleware, type LockGrant, type Lockable, type LockMiddlewareOptions } from './lock-middleware.js'
import { defaults, schema as lockSchema } from './lock.js'
import { validateOptions, type Schema } from './options.js'

/** Options of {@link etcdSemaphore}: those of `etcdLock`, and `permits`. */
export interface EtcdSemaphoreOptions<TEvent = any, TResult = any> extends LockMiddlewareOptions<TEvent, TResult> {
  /** Holders at once, across every function: the same number everywhere (it is stored with the semaphore). */
  permits: number
}

const { mode: _renamed, ...shared } = lockSchema

const schema: Schema = {
  ...shared,
  // Checked by the Semaphore constructor's own check (`checkPermits`), at creation.
  permits: { type: 'lib', required: true },
}

/** What a full semaphore's `Retry-After` suggests, ms: permits free when their holders' handlers end, which nobody can foresee. */
const RETRY_FULL_MS = 1000

/**
 * A Semaphore shaped like a Mutex, for the shared lock middleware body. A try on a full
 * semaphore is "too many at once" (429 with `Retry-After`, as a rate limit answers), not the
 * conflict (409) a held lock is.
 */
function asLockable(semaphore: Semaphore): Lockable {
  return {
    lock: (o) => semaphore.acquire(o),
    tryLock: async () => {
      try {
        await semaphore.tryAcquire()
      } catch (err) {
        if (!(err instanceof LockedError)) throw err
        throw new SemaphoreFullError(RETRY_FULL_MS, `${err.message}; retry later`)
      }
    },
    unlock: () => semaphore.release(),
    get key() {
      return semaphore.key
    },
    get fence() {
      return semaphore.fence
    },
    ownerCompare: () => semaphore.ownerCompare(),
    fenced: () => semaphore.fenced(),
  }
}

/**
 * Holds one of `permits` permits of a semaphore for the length of the handler, as
 * `context.etcd.semaphore`: at most `permits` invocations run the handler at once, across
 * every function. Queued invocations are served first come, first served. Released after the
 * handler, on error, on Middy's early timeout and when a guard short-circuits (with
 * `etcdPlugin()`, on every path); a crashed invocation's permit goes with its lease after `ttl`.
 * With `acquire: 'try'`, a full semaphore throws `SemaphoreFullError` (429 with `Retry-After`
 * behind `@middy/http-error-handler`) unless `onLocked` answers.
 */
export function etcdSemaphore<TEvent = any, TResult = any>(
  options: EtcdSemaphoreOptions<TEvent, TResult>,
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: { semaphore: LockGrant } }> {
  const { permits, ...rest } = validateOptions<EtcdSemaphoreOptions<TEvent, TResult> & typeof defaults>(
    'etcdSemaphore',
    schema,
    defaults,
    options,
    (o) => checkPermits(o.permits),
  )
  return lockMiddleware(
    'etcdSemaphore',
    'semaphore',
    rest,
    (session, name) => asLockable(new Semaphore(session, name, permits)),
    'semaphore',
  )
}
