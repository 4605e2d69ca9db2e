export * from './errors.js'
export { createClient, sharedClient, resolveClientOptions, type ClientOptions, type EtcdClient } from './core/client.js'
export { Session, type SessionOptions } from './session/session.js'
export { Mutex } from './locks/mutex.js'
export type { WaitOptions, LockOptions } from './wait/wait.js'
export { Queue, type QueueOptions } from './queue/queue.js'
export { PriorityQueue, MAX_PRIORITY, type PriorityQueueOptions } from './queue/priority-queue.js'
export {
  ClaimQueue,
  type Message,
  type ReceiveOptions,
  type NackOptions,
  type DequeueOptions,
  type DeadLetterOptions,
  type Enqueued,
  type EnqueueOptions,
  type PriorityEnqueueOptions,
  type RedriveOptions,
  type Redriven,
  type Swept,
} from './queue/consumer.js'
export { retryDelaySeconds, type RetryOptions } from './queue/backoff.js'
export { Barrier } from './barriers/barrier.js'
export { DoubleBarrier } from './barriers/double-barrier.js'
export { runSTM, Isolation, type STM, type STMOptions, type STMResult } from './stm/stm.js'
export { Election, type ElectionDecision, type Leader } from './locks/election.js'
export { RWMutex, type RWMode } from './locks/rwmutex.js'
export { Semaphore } from './permits/semaphore.js'
export { RateLimiter, type RateLimitOptions, type RateAcquireOptions, type RateLimitDecision } from './permits/rate-limiter.js'
export {
  toQueueMessage,
  checkQueueSettings,
  dispatchedMessages,
  type JsonMessage,
  type QueueMessage,
  type QueueDispatchEvent,
  type QueueSettings,
  type EtcdQueueEvent,
} from './queue/event.js'
export type { Credentials, CredentialsProvider } from './core/credentials.js'
export {
  IdempotencyStore,
  IdempotencyClaim,
  type BeginOptions,
  type BeginResult,
  type CompleteOptions,
  type FailOptions,
  type WaitOutcome,
} from './idempotency/store.js'
export { hashPayload } from './idempotency/record.js'
export { singleFlight, type SingleFlightOptions } from './idempotency/single-flight.js'
export { fencedUpsert, requireFenced, type FencedUpsertSpec, type Grant, type SqlStatement } from './fencing.js'
export {
  PrefixCache,
  type PrefixCacheOptions,
  type ConfigParse,
  type ConfigChange,
  type ConfigEvent,
  type ConfigSnapshot,
  type CurrentOptions,
  type ReloadReason,
} from './config/prefix-cache.js'
export {
  telemetryReady,
  INSTRUMENTATION_SCOPE,
  ATTR as TELEMETRY_ATTRIBUTES,
  LEASE_LOST_EVENT,
  MESSAGING_SYSTEM,
  MESSAGING_ATTR as MESSAGING_ATTRIBUTES,
  type Outcome as TelemetryOutcome,
  type Primitive as TelemetryPrimitive,
} from './telemetry/names.js'
