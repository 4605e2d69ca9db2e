export { startEtcd, freePort, EtcdNotFoundError, type EtcdCluster, type StartEtcdOptions } from './etcd.js'
