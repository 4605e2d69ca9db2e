export * from './errors.js'
export { createClient, sharedClient, resolveClientOptions, type ClientOptions, type EtcdClient } from './client.js'
export { Session, type SessionOptions } from './session.js'
export { Mutex } from './mutex.js'
export type { WaitOptions, LockOptions } from './wait.js'
export { Queue, type QueueOptions } from './queue.js'
export { PriorityQueue, MAX_PRIORITY, type PriorityQueueOptions } from './priority-queue.js'
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
} from './claims.js'
export { retryDelaySeconds, type RetryOptions } from './backoff.js'
export { Barrier } from './barrier.js'
export { DoubleBarrier } from './double-barrier.js'
export { runSTM, Isolation, type STM, type STMOptions, type STMResult } from './stm.js'
export { Election, type ElectionDecision, type Leader } from './election.js'
export { RWMutex, type RWMode } from './rwmutex.js'
export { Semaphore } from './semaphore.js'
export { RateLimiter, type RateLimitOptions, type RateAcquireOptions, type RateLimitDecision } from './rate-limiter.js'
export { toQueueMessage, checkQueueSettings, dispatchedMessages, type JsonMessage, type QueueMessage, type QueueDispatchEvent, type QueueSettings, type EtcdQueueEvent } from './queue-event.js'
export { type Credentials, type CredentialsProvider } from './credentials.js'
export { IdempotencyStore, IdempotencyClaim, type BeginOptions, type BeginResult, type CompleteOptions, type FailOptions, type WaitOutcome } from './idempotency.js'
export { hashPayload } from './idempotency-record.js'
export { singleFlight, type SingleFlightOptions } from './single-flight.js'
export { fencedUpsert, requireFenced, type FencedUpsertSpec, type Grant, type SqlStatement } from './fencing.js'
