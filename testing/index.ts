export { startEtcd, freePort, EtcdNotFoundError, type EtcdCluster, type StartEtcdOptions } from './etcd.js'
export { lambdaContext } from './lambda.js'
