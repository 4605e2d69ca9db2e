// Real etcd processes for tests: the same launcher the offline plugin uses.
export { startEtcd, freePort, EtcdNotFoundError, type EtcdCluster, type StartEtcdOptions } from '../offline/etcd-process.js'
