// `middy-etcd/offline`: the Serverless plugin (default export). The queue dispatcher it runs
// offline is `middy-etcd/dispatcher`.
export { default } from './plugin.js'
export { default as MiddyEtcdPlugin, STATE_DIR } from './plugin.js'
export type { EtcdPluginConfig, EtcdQueueEvent } from './config.js'
