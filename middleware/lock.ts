import type { MiddlewareObj } from '@middy/core'
import type { Context } from 'aws-lambda'
import { Mutex } from '../lib/locks/mutex.js'
import { lockMiddleware, type LockGrant, type LockMiddlewareOptions } from './lock-middleware.js'
import { validateOptions, type Schema } from './options.js'

export type EtcdLockOptions<TEvent = any, TResult = any> = LockMiddlewareOptions<TEvent, TResult>

export const defaults = { acquire: 'wait', waitMs: Infinity, ttl: 10 } as const

export const schema: Schema = {
  name: { type: 'nameOrFunction', required: true },
  acquire: { type: 'enum', values: ['wait', 'try'] },
  mode: { type: 'renamed', to: 'acquire' },
  waitMs: { type: 'number', min: 0 },
  ttl: { type: 'seconds' },
  onLocked: { type: 'function' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * Holds a distributed lock (Go `Mutex` / `etcdctl lock` compatible) for the length of the
 * handler, as `context.etcd.lock`. Released after the handler, on error, on Middy's early
 * timeout, and when a guard short-circuits; a crashed invocation's lock goes with its lease
 * after `ttl` seconds.
 */
export function etcdLock<TEvent = any, TResult = any>(
  options: EtcdLockOptions<TEvent, TResult>,
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: { lock: LockGrant } }> {
  const opts = validateOptions<EtcdLockOptions<TEvent, TResult> & typeof defaults>('etcdLock', schema, defaults, options)
  return lockMiddleware('etcdLock', 'lock', opts, (session, name) => new Mutex(session, name))
}
