export { etcdLock, type EtcdLockOptions, type LockGrant } from './lock.js'
export { etcdEvents, type EtcdEvent, type OnEvent } from './events.js'
export type { NameOption } from './name.js'
