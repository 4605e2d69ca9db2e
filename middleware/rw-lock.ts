import type { MiddlewareObj } from '@middy/core'
import type { Context } from 'aws-lambda'
import { RWMutex } from '../lib/locks/rwmutex.js'
import { lockMiddleware, type LockGrant, type Lockable, type LockMiddlewareOptions } from './lock-middleware.js'
import { defaults, schema as lockSchema } from './lock.js'
import { validateOptions, type Schema } from './options.js'

export interface EtcdRwLockOptions<TEvent = any, TResult = any> extends LockMiddlewareOptions<TEvent, TResult> {
  /** 'read' shares the lock with other readers; 'write' holds it alone. */
  mode: 'read' | 'write'
}

const schema: Schema = {
  ...lockSchema,
  mode: { type: 'enum', values: ['read', 'write'], required: true },
  acquire: { type: 'enum', values: ['wait', 'try'] },
}

/** The read side of an RWMutex, shaped like a Mutex. */
function readSide(rw: RWMutex): Lockable {
  return {
    lock: (o) => rw.rLock(o),
    tryLock: () => rw.tryRLock(),
    unlock: () => rw.rUnlock(),
    get key() {
      return rw.key
    },
    get fence() {
      return rw.fence
    },
    ownerCompare: () => rw.ownerCompare(),
    fenced: () => rw.fenced(),
  }
}

/**
 * Holds a readers-writer lock (Go `recipe.RWMutex` compatible) for the length of the handler,
 * as `context.etcd.rwLock`: `mode: 'read'` handlers run together, a `'write'` handler runs
 * alone, and a waiting writer holds back later readers.
 */
export function etcdRwLock<TEvent = any, TResult = any>(
  options: EtcdRwLockOptions<TEvent, TResult>,
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: { rwLock: LockGrant } }> {
  const { mode, ...rest } = validateOptions<EtcdRwLockOptions<TEvent, TResult> & typeof defaults>('etcdRwLock', schema, defaults, options)
  return lockMiddleware('etcdRwLock', 'rwLock', rest, (session, name) =>
    mode === 'read' ? readSide(new RWMutex(session, name)) : new RWMutex(session, name),
  )
}
