// `middy-etcd/dispatcher`: the queue dispatcher — the deployable function and its parts.
export { handler, dispatcherHandler, type DispatcherHandlerOptions, type DispatcherResult, type DispatcherContext } from './handler.js'
export { runDispatcher, type DispatcherOptions, type DispatchRecord, type Invoke, type InvokeOutcome } from './dispatcher.js'
export { lambdaInvoker, type LambdaInvokerOptions } from './lambda-invoker.js'
export { subscriptionsFromEnv, checkSubscription, SUBSCRIPTIONS_ENV, type QueueSubscription } from './subscriptions.js'
export { openQueue, type ClaimedMessage, type ReceivingQueue } from './queues.js'
export { watchDeadLetters, type DeadLetter } from './dead-letters.js'
export type { QueueDispatchEvent, JsonMessage, QueueMessage, EtcdQueueEvent } from '../lib/queue/event.js'
