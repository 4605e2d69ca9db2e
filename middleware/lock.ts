import type { MiddlewareObj } from '@middy/core'
import type { Context } from 'aws-lambda'
import { Mutex } from '../lib/mutex.js'
import { lockMiddleware, type LockGrant, type LockMiddlewareOptions } from './hold-lock.js'
import { validateOptions, type Schema } from './options.js'

export type EtcdLockOptions<TEvent = any, TResult = any> = LockMiddlewareOptions<TEvent, TResult>

export const defaults = { mode: 'wait', waitMs: Infinity, ttl: 10 } as const

export const schema: Schema = {
  name: { type: 'nameOrFunction', required: true },
  mode: { type: 'enum', values: ['wait', 'try'] },
  waitMs: { type: 'number', min: 0 },
  ttl: { type: 'integer', min: 1, max: 9_000_000 },
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
