// `middy-etcd/offline`: the Serverless plugin (default export) and the queue dispatcher.
export { default } from './plugin.js'
export { default as MiddyEtcdPlugin, STATE_DIR } from './plugin.js'
export {
  runDispatcher,
  lambdaInvoker,
  subscriptionsFromEnv,
  type QueueSubscription,
  type DispatchEvent,
  type DispatcherOptions,
  type DispatchRecord,
  type Invoke,
  type InvokeOutcome,
  type LambdaInvokerOptions,
} from './dispatcher.js'
export { openQueue, toEventMessage, type ClaimedMessage, type ReceivingQueue } from './queues.js'
export type { EtcdPluginConfig, EtcdQueueEvent } from './config.js'
