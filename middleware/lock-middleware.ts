import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { ComparatorBuilder, Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import { LockedError, LockReleasedError, LockTimeoutError } from '../lib/errors.js'
import type { Compare } from '../lib/core/kv.js'
import type { Session } from '../lib/session/session.js'
import type { LockOptions } from '../lib/wait/wait.js'
import { emit, type EtcdEvent, type OnEvent } from './events.js'
import { ScopeUses, shortCircuit, type InvocationScope } from './scope.js'
import { resolveName, type NameOption } from './name.js'

/** What the handler gets as `context.etcd.lock` / `context.etcd.rwLock`. */
export interface LockGrant {
  name: string
  /** The lock key (Go/etcdctl layout). */
  key: string
  /** Fencing token: strictly increasing across holders of this lock. Pass it to downstream systems. */
  fence: bigint
  /** A compare that holds while this hold is current: put it in the compares of your etcd Txns (not a boolean). */
  ownerCompare: () => Compare
  /**
   * An etcd3 transaction builder guarded by this hold:
   * `await grant.fenced().then(client.put('k').value('v')).commit()` writes only while held.
   * Throws `SessionExpiredError` once the lease is past its bound, `LockReleasedError` once released.
   */
  fenced: () => ComparatorBuilder
  /** Aborted if the lease is lost while the handler runs: stop writing. Reading it checks the lease's bound at once. */
  readonly signal: AbortSignal
}

/** The lock calls a lock middleware needs: a Mutex, one side of an RWMutex, or a Semaphore. */
export interface Lockable {
  /** Must call `onWaiting` before it waits: the wait budget's timer starts there. */
  lock(options: LockOptions): Promise<void>
  tryLock(): Promise<void>
  unlock(): Promise<void>
  readonly key: string
  readonly fence: bigint
  ownerCompare(): Compare
  fenced(): ComparatorBuilder
}

/** Options shared by every lock middleware. */
export interface LockMiddlewareOptions<TEvent = any, TResult = any> {
  /** The lock name, or a function of the event and context that returns it. */
  name: NameOption<TEvent>
  /** 'wait' (default) queues for the lock; 'try' short-circuits at once when it is held. */
  acquire?: 'wait' | 'try'
  /** Most time to wait for the lock, ms; always capped by the invocation's remaining time. */
  waitMs?: number
  /** Lease TTL in seconds (default 10): how long a crashed invocation can keep the lock. */
  ttl?: number
  /** With acquire 'try': the response when the lock is held (default: throw LockedError, 409; a full semaphore's is SemaphoreFullError, 429). */
  onLocked?: (request: Request<TEvent, TResult>) => TResult | Promise<TResult>
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

type Resolved<TEvent, TResult> = LockMiddlewareOptions<TEvent, TResult> & { acquire: 'wait' | 'try'; waitMs: number; ttl: number }

/**
 * The body of every lock middleware: acquire in `before` on the invocation's session, give the
 * handler a {@link LockGrant} at `context.etcd[slot]`, release in `after`/`onError`, and before
 * a try-lock miss short-circuits, release what outer middlewares hold (Middy then skips them).
 */
export function lockMiddleware<TEvent, TResult, TSlot extends string>(
  middleware: string,
  slot: TSlot,
  opts: Resolved<TEvent, TResult>,
  open: (session: Session, name: string) => Lockable,
  /** What the middleware holds, for messages ('lock', 'semaphore'). */
  noun = 'lock',
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: Record<TSlot, LockGrant> }> {
  const uses = new ScopeUses(middleware)
  const client = () => opts.client ?? sharedClient()
  const primitive = slot as EtcdEvent['primitive']

  const before = async (request: Request<TEvent, TResult, Error, Context & { etcd: Record<TSlot, LockGrant> }>) => {
    const name = resolveName(middleware, opts.name, request)
    const use = uses.enter(request, client(), request.context)
    const { scope } = use
    const started = performance.now()
    const acquired = await scope.withSession(opts.ttl, (session) => acquire(scope, session, name))
    if ('locked' in acquired) {
      emit(opts.onEvent, { type: 'skipped', primitive, name })
      const { onLocked } = opts
      return shortCircuit(request, () => {
        if (!onLocked) throw acquired.locked
        return onLocked(request)
      })
    }
    const { lock, session } = acquired
    const acquiredAt = performance.now()
    const { key, fence } = lock
    const event = { primitive, name, key, fence: String(fence) }
    const onLost = () => emit(opts.onEvent, { ...event, type: 'lost', heldMs: performance.now() - acquiredAt })
    session.signal.addEventListener('abort', onLost, { once: true })
    use.onRelease(async () => {
      session.signal.removeEventListener('abort', onLost)
      try {
        await lock.unlock()
      } catch (err) {
        if (!(err instanceof LockReleasedError)) {
          // Unreleased: the lock is held until the lease runs out (the session is not reused).
          emit(opts.onEvent, {
            ...event,
            type: 'lost',
            heldMs: performance.now() - acquiredAt,
            detail: { releaseFailed: (err as Error).name },
          })
          throw err
        }
      }
      emit(opts.onEvent, { ...event, type: 'released', heldMs: performance.now() - acquiredAt })
    })
    const grant: LockGrant = {
      name,
      key,
      fence,
      ownerCompare: () => lock.ownerCompare(),
      fenced: () => lock.fenced(),
      // Read anew each time: the session checks its bound when asked (a freeze may have passed it).
      get signal() {
        return session.signal
      },
    }
    request.context.etcd = { ...request.context.etcd, [slot]: grant }
    emit(opts.onEvent, { ...event, type: 'acquired', waitedMs: acquiredAt - started })
    return undefined
  }

  /** Takes the lock on `session`; with `acquire: 'try'`, reports a lock held by others as `locked`. */
  const acquire = async (
    scope: InvocationScope,
    session: Session,
    name: string,
  ): Promise<{ lock: Lockable; session: Session } | { locked: LockedError }> => {
    const lock = open(session, name)
    if (opts.acquire === 'try') {
      try {
        await lock.tryLock()
      } catch (err) {
        if (err instanceof LockedError) return { locked: err }
        throw err
      }
      return { lock, session }
    }
    const budget = scope.deferredWaitBudget(opts.waitMs)
    const onWaiting = () => {
      budget.start()
      emit(opts.onEvent, { type: 'waiting', primitive, name })
    }
    try {
      await lock.lock({ signal: budget.signal, onWaiting })
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      throw new LockTimeoutError(
        `${middleware}: ${noun} ${JSON.stringify(name)} not acquired within ${budget.ms} ms; raise waitMs or the function timeout`,
      )
    } finally {
      budget.stop()
    }
    return { lock, session }
  }

  const leave = (request: Request<TEvent, TResult>) => uses.leave(request)

  return { before, after: leave, onError: leave }
}
