export { etcdLock, type EtcdLockOptions } from './lock.js'
export { etcdRwLock, type EtcdRwLockOptions } from './rw-lock.js'
export { etcdSemaphore, type EtcdSemaphoreOptions } from './semaphore.js'
export { etcdRateLimit, type EtcdRateLimitOptions, type RateLimitGrant } from './rate-limit.js'
export { etcdBarrier, type EtcdBarrierOptions } from './barrier.js'
export { etcdDoubleBarrier, type EtcdDoubleBarrierOptions } from './double-barrier.js'
export {
  queueConsumer,
  toQueueMessage,
  type QueueConsumerOptions,
  type JsonMessage,
  type QueueMessage,
  type QueueDispatchEvent,
  type BatchResponse,
} from './queue-consumer.js'
export { withSTM, type WithSTMOptions } from './with-stm.js'
export { leaderGuard, type LeaderGuardOptions, type LeadershipGrant } from './leader-guard.js'
export type { LockGrant } from './lock-middleware.js'
export { etcdEvents, type EtcdEvent, type OnEvent } from './events.js'
export type { NameOption } from './name.js'
export { fromHeader, fromEvent, type EventValue } from './http.js'
export { etcdPlugin, type PluginObject } from './plugin.js'
export { logEtcdEvents, jsonLinesLogger, type StructuredLogger, type LogEtcdEventsOptions, type EtcdEventLevel } from './log-events.js'
export { etcdPowertoolsMetrics, metricsOfEvent, type PowertoolsMetricsLike, type BridgedMetric } from './powertools-metrics.js'
export {
  etcdIdempotency,
  type EtcdIdempotencyOptions,
  type IdempotencyContext,
  type IdempotencyGrant,
  type StoredResponseInfo,
} from './idempotency.js'
export { etcdConfig, type EtcdConfigOptions, type ConfigContext } from './config.js'
