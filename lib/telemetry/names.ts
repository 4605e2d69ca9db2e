// What the barrel exports of the telemetry: names and `telemetryReady`, and no type of
// @opentelemetry/api (the declarations of this file import nothing), so a user's type check
// never needs the optional peer installed.
import { apiLoaded, INSTRUMENTATION_SCOPE as SCOPE } from './otel.js'

/** The instrumentation scope of every span and instrument. */
export const INSTRUMENTATION_SCOPE: 'middy-etcd' = SCOPE

/**
 * Resolves once `@opentelemetry/api` has been looked for: true when it is installed (telemetry
 * goes to the registered providers from then on), false when it is not (nothing is emitted).
 * The lookup starts when the library is imported and takes a few milliseconds; await this only
 * where a span must not be missed right after start-up (a test, a script's first call).
 */
export function telemetryReady(): Promise<boolean> {
  return apiLoaded
}

/** Span and metric attributes (ours, under `middy_etcd.`: no semantic convention covers locks). */
export const ATTR = {
  /** Which primitive: `lock`, `rwlock.read`, `rwlock.write`, `semaphore`, `rate_limit`, `election`, `barrier`, `double_barrier.enter`, `double_barrier.leave`, `idempotency`. */
  primitive: 'middy_etcd.primitive',
  /** The lock, semaphore, election, barrier name or idempotency key (spans only: unbounded cardinality). */
  name: 'middy_etcd.name',
  /** How the wait or hold ended (see {@link Outcome}). */
  outcome: 'middy_etcd.outcome',
  /** The grant's fencing token. */
  fence: 'middy_etcd.fence',
  /** Why a lease was lost: `expired`, `revoked`, `unreachable`, `closed`. */
  reason: 'middy_etcd.lease.loss_reason',
  attempts: 'middy_etcd.stm.attempts',
  conflicts: 'middy_etcd.stm.conflicts',
} as const

/** The name of the span event a lost lease adds to its hold's span. */
export const LEASE_LOST_EVENT = 'middy_etcd.lease_lost'

export type Primitive =
  | 'lock'
  | 'rwlock.read'
  | 'rwlock.write'
  | 'semaphore'
  | 'rate_limit'
  | 'election'
  | 'barrier'
  | 'double_barrier.enter'
  | 'double_barrier.leave'
  | 'idempotency'

/**
 * How a wait or hold ended: `acquired` (granted, passed, admitted, elected), `locked` (a
 * `try…` found it held, a decision form was refused), `rejected` (a rate limiter refused),
 * `duplicate` (an idempotency key already completed or failed), `in_progress` (its record is
 * being made by another call), `gone` (the in-progress record waited on went: begin again), `timeout`, `aborted`, `lost` (our lease or claim went while waiting or holding),
 * `released` (a hold ended by its holder), `error` (anything else).
 */
export type Outcome =
  | 'acquired'
  | 'locked'
  | 'rejected'
  | 'duplicate'
  | 'in_progress'
  | 'gone'
  | 'timeout'
  | 'aborted'
  | 'lost'
  | 'released'
  | 'error'

/**
 * `messaging.system`: the conventions register no value for etcd, and say to use a custom one
 * then. `etcd` it is, not `middy_etcd`: the queue is etcd's own Go recipe layout (`recipe.Queue`),
 * which Go producers and consumers share with us, so the system a span talks to is etcd.
 */
export const MESSAGING_SYSTEM = 'etcd'

/** Attribute names (the conventions' own, and `messaging.etcd.*` for what they leave to each system). */
export const MESSAGING_ATTR = {
  system: 'messaging.system',
  destination: 'messaging.destination.name',
  operationName: 'messaging.operation.name',
  operationType: 'messaging.operation.type',
  messageId: 'messaging.message.id',
  batchCount: 'messaging.batch.message_count',
  /** How many times the message was delivered, this time included (the conventions name it per system). */
  deliveryCount: 'messaging.etcd.message.delivery_count',
  errorType: 'error.type',
} as const
