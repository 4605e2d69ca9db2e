import { existsSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { LockedError, Mutex, Session, createClient, type EtcdClient } from '../lib/index.js'
import { EtcdNotFoundError, startEtcd, type EtcdCluster } from '../testing/index.js'
import { sleep, uniqueName, alive } from './helpers.js'

/** True while a process with this pid exists. */

describe('startEtcd: a 3-member cluster', () => {
  let cluster: EtcdCluster
  const clients: EtcdClient[] = []
  /** A client pinned to one member. */
  const memberClient = (i: number) => {
    const c = createClient({ endpoints: [cluster.endpoints[i]], callTimeoutMs: 2000 })
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    cluster = await startEtcd({ nodes: 3 })
  })
  afterAll(async () => {
    for (const c of clients) c.close()
    await cluster?.stop()
  })

  it('comes up: three endpoints, three live processes, one replicated store', async () => {
    expect(cluster.endpoints).toHaveLength(3)
    for (const e of cluster.endpoints) expect(e).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    const pids = cluster.pids()
    expect(pids).toHaveLength(3)
    for (const pid of pids) expect(alive(pid!)).toBe(true)
    expect(existsSync(cluster.dataDir)).toBe(true)
    const key = uniqueName('replicated')
    await memberClient(0).put(key).value('v')
    for (const i of [1, 2]) expect(await memberClient(i).get(key).string()).toBe('v')
  })

  it('Go TestMutexLockMultiNode: sessions on different members take turns, one holder at a time', async () => {
    const name = uniqueName('multi')
    const sessions = await Promise.all([0, 1, 2, 0, 1].map((i) => Session.create(memberClient(i), { ttl: 10 })))
    let inside = 0
    let maxInside = 0
    const fences: bigint[] = []
    await Promise.all(
      sessions.map(async (s) => {
        const m = new Mutex(s, name)
        await m.lock()
        inside++
        maxInside = Math.max(maxInside, inside)
        fences.push(m.fence)
        await sleep(20)
        inside--
        await m.unlock()
      }),
    )
    expect(maxInside).toBe(1)
    expect(fences).toHaveLength(5)
    for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1])
    await Promise.all(sessions.map((s) => s.close()))
  })

  it('Go TestMutexTryLockMultiNode: 5 tryLocks across members, exactly one wins', async () => {
    const name = uniqueName('multi-try')
    const sessions = await Promise.all([0, 1, 2, 0, 1].map((i) => Session.create(memberClient(i), { ttl: 10 })))
    const mutexes = sessions.map((s) => new Mutex(s, name))
    const results = await Promise.allSettled(mutexes.map((m) => m.tryLock()))
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(LockedError)
    expect(await memberClient(2).getAll().prefix(`${name}/`).count()).toBe(1)
    await Promise.all(sessions.map((s) => s.close()))
  })

  it('stopMember stops one process; the other two keep serving; startMember brings it back with its data', async () => {
    const before = cluster.pids()[1]!
    await cluster.stopMember(1)
    expect(cluster.pids()[1]).toBeUndefined()
    expect(alive(before)).toBe(false)
    const key = uniqueName('quorum')
    await memberClient(0).put(key).value('while-down')
    expect(await memberClient(2).get(key).string()).toBe('while-down')

    await cluster.startMember(1)
    const after = cluster.pids()[1]!
    expect(after).toBeGreaterThan(0)
    expect(after).not.toBe(before)
    expect(alive(after)).toBe(true)
    // It caught up on what it missed, and serves linearizable reads again.
    expect(await memberClient(1).get(key).string()).toBe('while-down')
  })

  it('stop() kills every process and removes the data directory; twice is fine', async () => {
    const pids = cluster.pids().map((p) => p!)
    for (const pid of pids) expect(alive(pid)).toBe(true)
    await cluster.stop()
    for (const pid of pids) expect(alive(pid)).toBe(false)
    expect(cluster.pids()).toEqual([undefined, undefined, undefined])
    expect(existsSync(cluster.dataDir)).toBe(false)
    await cluster.stop()
    await expect(cluster.startMember(0)).rejects.toThrow(/stopped/)
  })
})

describe('startEtcd: bad setups fail loudly', () => {
  it('a missing etcd binary → EtcdNotFoundError saying how to install it', async () => {
    const err = await startEtcd({ bin: '/nonexistent/etcd' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(EtcdNotFoundError)
    expect((err as Error).message).toContain('apt-get install')
    await expect(startEtcd({ bin: 'no-such-etcd-binary' })).rejects.toBeInstanceOf(EtcdNotFoundError)
  })

  it('nodes other than 1 or 3 is an error', async () => {
    await expect(startEtcd({ nodes: 2 as 1 })).rejects.toThrow(/nodes must be 1 or 3/)
  })

  it('a single member started on a given port serves there and stops cleanly', async () => {
    const { freePort } = await import('../testing/index.js')
    const port = await freePort()
    const cluster = await startEtcd({ port })
    try {
      expect(cluster.endpoints).toEqual([`http://127.0.0.1:${port}`])
      const c = createClient({ endpoints: cluster.endpoints })
      await c.put('k').value('v')
      expect(await c.get('k').string()).toBe('v')
      c.close()
    } finally {
      const [pid] = cluster.pids()
      await cluster.stop()
      expect(alive(pid!)).toBe(false)
      expect(existsSync(cluster.dataDir)).toBe(false)
    }
  })
})
