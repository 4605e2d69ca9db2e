export * from './errors.js'
export { createClient, sharedClient, resolveClientOptions, type ClientOptions, type EtcdClient } from './client.js'
export { Session, type SessionOptions } from './session.js'
export { Mutex, type WaitOptions } from './mutex.js'
