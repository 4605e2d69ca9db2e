import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { ICompare, Namespace } from 'etcd3'
import { sharedClient } from '../lib/client.js'
import { LockedError, LockReleasedError, LockTimeoutError } from '../lib/errors.js'
import { Mutex } from '../lib/mutex.js'
import { emit, type OnEvent } from './events.js'
import { Invocation } from './invocation.js'
import { resolveName, type NameOption } from './name.js'
import { validateOptions, type Schema } from './options.js'

/** What the handler gets as `context.etcd.lock`. */
export interface LockGrant {
  name: string
  /** The lock key, `<name>/<leaseHex>` (Go/etcdctl layout). */
  key: string
  /** Fencing token: strictly increasing across holders of this lock. Pass it to downstream systems. */
  fence: bigint
  /** A compare that holds while this hold is current: put it in the `compare` of your etcd Txns. */
  isOwner: () => ICompare
  /** Aborted if the lease is lost while the handler runs: stop writing. */
  signal: AbortSignal
}

export interface EtcdLockOptions<TEvent = any, TResult = any> {
  /** The lock name, or a function of the event and context that returns it. */
  name: NameOption<TEvent>
  /** 'wait' (default) queues for the lock; 'try' short-circuits at once when it is held. */
  mode?: 'wait' | 'try'
  /** Most time to wait for the lock, ms; always capped by the invocation's remaining time. */
  waitMs?: number
  /** Lease TTL in seconds (default 10): how long a crashed invocation can keep the lock. */
  ttl?: number
  /** With mode 'try': the response when the lock is held (default: throw LockedError). */
  onLocked?: (request: Request<TEvent, TResult>) => TResult | Promise<TResult>
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = { mode: 'wait', waitMs: Infinity, ttl: 10 } as const

const schema: Schema = {
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
 * handler. Released after the handler, on error, on Middy's early timeout, and when a guard
 * short-circuits; a crashed invocation's lock goes with its lease after `ttl` seconds.
 */
export function etcdLock<TEvent = any, TResult = any>(
  options: EtcdLockOptions<TEvent, TResult>,
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: { lock: LockGrant } }> {
  const opts = validateOptions<Required<Omit<EtcdLockOptions<TEvent, TResult>, 'onLocked' | 'client' | 'onEvent'>> & EtcdLockOptions<TEvent, TResult>>(
    'etcdLock',
    schema,
    defaults,
    options,
  )
  const self = {}
  const client = () => opts.client ?? sharedClient()

  const before = async (request: Request<TEvent, TResult, Error, Context & { etcd: { lock: LockGrant } }>) => {
    const name = resolveName('etcdLock', opts.name, request)
    const scope = Invocation.of(request, client(), request.context, self)
    const session = await scope.session(opts.ttl)
    const mutex = new Mutex(session, name)
    const started = performance.now()
    if (opts.mode === 'try') {
      try {
        await mutex.tryLock()
      } catch (err) {
        if (!(err instanceof LockedError)) throw err
        emit(opts.onEvent, { type: 'skipped', primitive: 'lock', name })
        // Middy skips every `after` once a `before` answers: release what outer middlewares hold.
        await Invocation.endAll(request)
        if (!opts.onLocked) throw err
        request.earlyResponse = await opts.onLocked(request)
        return request.earlyResponse
      }
    } else {
      const budget = Math.min(opts.waitMs, scope.budget())
      const signal = AbortSignal.timeout(Math.floor(budget))
      try {
        await mutex.lock({ signal })
      } catch (err) {
        if (err !== signal.reason) throw err
        throw new LockTimeoutError(`etcdLock: lock ${JSON.stringify(name)} not acquired within ${Math.round(budget)} ms (waitMs or the invocation's remaining time)`)
      }
    }
    const acquiredAt = performance.now()
    const { key, fence } = mutex
    const onLost = () => emit(opts.onEvent, { type: 'lost', primitive: 'lock', name, key, fence: String(fence), heldMs: performance.now() - acquiredAt })
    session.signal.addEventListener('abort', onLost, { once: true })
    scope.hold(self, async () => {
      session.signal.removeEventListener('abort', onLost)
      await mutex.unlock().catch((err) => {
        if (!(err instanceof LockReleasedError)) throw err
      })
      emit(opts.onEvent, { type: 'released', primitive: 'lock', name, key, fence: String(fence), heldMs: performance.now() - acquiredAt })
    })
    const grant: LockGrant = { name, key, fence, isOwner: () => mutex.isOwner(), signal: session.signal }
    request.context.etcd = { ...request.context.etcd, lock: grant }
    emit(opts.onEvent, { type: 'acquired', primitive: 'lock', name, key, fence: String(fence), waitedMs: acquiredAt - started })
    return undefined
  }

  const release = async (request: Request<TEvent, TResult, Error, Context & { etcd: { lock: LockGrant } }>) => {
    const scope = Invocation.find(request, client())
    if (!scope) return
    await scope.release(self)
    if (scope.owner === self) await scope.end()
  }

  return { before, after: release, onError: release }
}
