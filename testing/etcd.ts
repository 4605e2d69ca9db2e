// Real etcd processes for tests: the same launcher the offline plugin uses.
export {
  startEtcd,
  freePort,
  resolveEtcd,
  etcdReleases,
  EtcdNotFoundError,
  type EtcdCluster,
  type EtcdLine,
  type EtcdRelease,
  type StartEtcdOptions,
} from '../offline/etcd-process.js'
