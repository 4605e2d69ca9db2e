import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll } from 'vitest'
import { createClient, type EtcdClient } from '../lib/index.js'
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

/** A key prefix no other test uses. */
export function uniqueName(label = 't'): string {
  return `${label}-${randomUUID().slice(0, 8)}`
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
