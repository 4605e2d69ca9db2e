import { EventEmitter } from 'node:events'

/** What a middleware did, for logs and metrics (e.g. CloudWatch EMF). Carries no secrets. */
export interface EtcdEvent {
  /** acquired: lock/permit/leadership/barrier passed, or a call admitted by the rate limit;
   *  waiting: had to queue; released: let go; lost: the lease ended while held;
   *  skipped: try-lock miss, rate limited, follower or duplicate short-circuit;
   *  not-stored: an idempotent invocation's response could not be kept (it was still returned);
   *  changed: configuration changes arrived from the watch; reloaded: the whole configuration was read again (detail.reason). */
  type: 'acquired' | 'waiting' | 'released' | 'lost' | 'skipped' | 'not-stored' | 'changed' | 'reloaded'
  /** Which middleware. */
  primitive:
    | 'lock'
    | 'rwLock'
    | 'semaphore'
    | 'rateLimit'
    | 'leader'
    | 'barrier'
    | 'doubleBarrier'
    | 'queue'
    | 'stm'
    | 'idempotency'
    | 'config'
  /** The lock / semaphore / rate limiter / election / barrier / queue name, the idempotency key, or the configuration prefix. */
  name: string
  /** The etcd key of this invocation's hold, when there is one. */
  key?: string
  /** Fencing token of the hold, as a decimal string (JSON-safe). */
  fence?: string
  /** Time spent waiting before `acquired`, ms. */
  waitedMs?: number
  /** Time held before `released` or `lost`, ms. */
  heldMs?: number
  /** Free-form detail: read/write mode, message counts, error name. */
  detail?: Record<string, string | number | boolean>
}

/** Receives every {@link EtcdEvent} of every middleware in this process. */
export const etcdEvents = new EventEmitter<{ event: [EtcdEvent] }>()

export type OnEvent = (event: EtcdEvent) => void

/** Sends `event` to the middleware's `onEvent` and the shared emitter; a throwing listener never breaks the invocation. */
export function emit(onEvent: OnEvent | undefined, event: EtcdEvent): void {
  try {
    onEvent?.(event)
    if (etcdEvents.listenerCount('event') > 0) etcdEvents.emit('event', event)
  } catch {
    // Observability must not change the outcome of the invocation.
  }
}
