// redlock 5.0.0-beta.2 ships dist/index.d.ts but its package.json "exports" names no "types", so
// TypeScript (moduleResolution NodeNext) cannot find them (TS7016). The part of its API the tests
// and benchmarks use, copied from that file. Remove once redlock publishes typed exports.
declare module 'redlock' {
  import type { Redis, Cluster } from 'ioredis'
  export interface Settings {
    readonly driftFactor: number
    readonly retryCount: number
    readonly retryDelay: number
    readonly retryJitter: number
    readonly automaticExtensionThreshold: number
  }
  export type ExecutionStats = { readonly membershipSize: number; readonly quorumSize: number }
  export type ExecutionResult = { attempts: ReadonlyArray<Promise<ExecutionStats>> }
  export class ExecutionError extends Error {
    readonly attempts: ReadonlyArray<Promise<ExecutionStats>>
  }
  export class ResourceLockedError extends Error {}
  export class Lock {
    readonly redlock: Redlock
    readonly resources: string[]
    readonly value: string
    expiration: number
    release(): Promise<ExecutionResult>
    extend(duration: number): Promise<Lock>
  }
  export default class Redlock {
    readonly settings: Settings
    constructor(clients: Iterable<Redis | Cluster>, settings?: Partial<Settings>)
    acquire(resources: string[], duration: number, settings?: Partial<Settings>): Promise<Lock>
    release(lock: Lock, settings?: Partial<Settings>): Promise<ExecutionResult>
    quit(): Promise<void>
  }
}
