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
} from './etcd.js'
export { lambdaContext } from './lambda.js'
