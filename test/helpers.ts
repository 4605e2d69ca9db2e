import { randomUUID } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { afterAll, beforeAll } from 'vitest'
import { createClient, sharedClient, type EtcdClient } from '../lib/index.js'
import { startEtcd, type EtcdCluster } from '../testing/index.js'

/** A real etcd for the current test file, started before its tests and stopped after. */
export function useEtcd(nodes: 1 | 3 = 1) {
  const ctx = {} as { cluster: EtcdCluster; client: EtcdClient; clients: EtcdClient[] }
  beforeAll(async () => {
    ctx.cluster = await startEtcd({ nodes })
    ctx.client = createClient({ endpoints: ctx.cluster.endpoints })
    ctx.clients = [ctx.client]
  })
  afterAll(async () => {
    for (const c of ctx.clients ?? []) c.close()
    await ctx.cluster?.stop()
  })
  /** Another client on the same cluster (closed after the file). */
  const newClient = (endpoints = ctx.cluster.endpoints) => {
    const c = createClient({ endpoints })
    ctx.clients.push(c)
    return c
  }
  /** A client of member `i` only (modulo the cluster size): spreads contenders over the members. */
  const memberClient = (i: number) => newClient([ctx.cluster.endpoints[i % ctx.cluster.endpoints.length]])
  /** The keys starting with `prefix`, as the test's client sees them. */
  const keysUnder = (prefix: string): Promise<string[]> => ctx.client.getAll().prefix(prefix).keys()
  return Object.assign(ctx, { newClient, memberClient, keysUnder })
}

/**
 * Points `sharedClient()` (which reads ETCD_ENDPOINTS on its first call) at `etcd`'s cluster for
 * this file, as the examples and handlers expect; closes it and restores the variable after the
 * file, since the same worker process may run other test files next.
 */
export function useSharedClient(etcd: { cluster: EtcdCluster }): void {
  const before = process.env.ETCD_ENDPOINTS
  beforeAll(() => {
    process.env.ETCD_ENDPOINTS = etcd.cluster.endpoints.join(',')
  })
  afterAll(() => {
    sharedClient().close()
    if (before === undefined) delete process.env.ETCD_ENDPOINTS
    else process.env.ETCD_ENDPOINTS = before
  })
}

/** A key prefix no other test uses. */
export function uniqueName(label = 't'): string {
  return `${label}-${randomUUID().slice(0, 8)}`
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Polls `probe` until it returns something truthy, and returns that; fails naming `what` after
 * `timeoutMs` (a bound that only catches hangs, never a timing assertion).
 */
export async function until<T>(
  what: string,
  timeoutMs: number,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

/** Whether process `pid` is running (a killed child not yet reaped is a zombie: not running). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

/**
 * SIGSTOPs `pid` and resolves once every thread of it has stopped. kill() only queues the signal:
 * on a loaded machine the target can keep running for a moment and still answer a request sent
 * right after it.
 */
export async function freeze(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP')
  const stopped = () =>
    readdirSync(`/proc/${pid}/task`).every((tid) => /^\S+ \(.*\) [Tt]/.test(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')))
  await until(`process ${pid} to stop after SIGSTOP`, 5_000, stopped, 2)
}
