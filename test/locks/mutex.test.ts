import { describe, expect, it } from 'vitest'
import {
  InvalidArgumentError,
  LockReleasedError,
  LockedError,
  Mutex,
  Session,
  SessionExpiredError,
  type EtcdClient,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd()

/** The keys currently under `<name>/`, oldest first. */
async function keysOf(client: EtcdClient, name: string): Promise<string[]> {
  const res = await keyspace(client).range(`${name}/`, { prefix: true, sort: ['Create', 'Ascend'] })
  return res.kvs.map((kv) => kv.key)
}

/** Polls until `<name>/` holds `n` keys (bounded: fails instead of hanging). */
async function untilKeys(name: string, n: number): Promise<string[]> {
  for (let i = 0; i < 200; i++) {
    const keys = await keysOf(etcd.client, name)
    if (keys.length === n) return keys
    await sleep(25)
  }
  throw new Error(`${name}/ never held ${n} keys`)
}

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(p: Promise<T>) {
  const state = { settled: false, error: undefined as unknown, promise: p }
  p.then(
    () => (state.settled = true),
    (err) => {
      state.settled = true
      state.error = err
    },
  )
  return state
}

const sessions = (n: number, ttl = 10, client: EtcdClient = etcd.client) =>
  Promise.all(Array.from({ length: n }, () => Session.create(client, { ttl })))

describe('Mutex', () => {
  it("uses Go's layout: <name>/<leaseHex>, empty value, session lease attached", async () => {
    const [s] = await sessions(1)
    const name = uniqueName('layout')
    const m = new Mutex(s, name)
    await m.lock()
    expect(m.key).toBe(`${name}/${s.leaseHex}`)
    const [kv] = (await keyspace(etcd.client).range(m.key)).kvs
    expect(kv.lease).toBe(s.leaseId)
    expect(kv.value.length).toBe(0)
    expect(m.held).toBe(true)
    expect(m.fence).toBe(kv.createRevision)
    // Uncontended, the grant revision is the key's create revision (Go's Header().Revision).
    expect(m.revision).toBe(kv.createRevision)
    await m.unlock()
    expect(m.held).toBe(false)
    expect(m.key).toBe('')
    expect(await keysOf(etcd.client, name)).toEqual([])
    await s.close()
  })

  it('a name ending in "/" gets Go\'s double slash (NewMutex(s, "/my-lock/") → "/my-lock//<hex>"); nested names contend as in Go', async () => {
    const [s1, s2] = await sessions(2)
    const name = `/${uniqueName('slash')}/`
    const m = new Mutex(s1, name)
    await m.lock()
    expect(m.key).toBe(`${name}/${s1.leaseHex}`)
    await expect(new Mutex(s2, name).tryLock()).rejects.toBeInstanceOf(LockedError)
    // As in Go (keys are matched by prefix), the lock named without the trailing slash ranges
    // over "<name>/", which contains this lock's key: the two contend. Nested lock names
    // ("a" and "a/b") therefore block each other, for etcdctl too.
    await expect(new Mutex(s2, name.slice(0, -1)).tryLock()).rejects.toBeInstanceOf(LockedError)
    await m.unlock()
    const other = new Mutex(s2, name.slice(0, -1))
    await other.tryLock()
    expect(other.held).toBe(true)
    await other.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it('100 concurrent holders: counter ends at 100, fences increase in grant order, no overlap', async () => {
    const name = uniqueName('seed')
    const counter = `${name}-counter`
    const clients = [etcd.client, etcd.newClient(), etcd.newClient(), etcd.newClient()]
    const all = await Promise.all(Array.from({ length: 100 }, (_, i) => Session.create(clients[i % clients.length], { ttl: 30 })))
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(counter, '0')])
    const fences: bigint[] = []
    const intervals: { start: number; end: number }[] = []
    let inside = 0
    let maxInside = 0
    await Promise.all(
      all.map(async (s) => {
        const m = new Mutex(s, name)
        const own = keyspace(s.client)
        await m.lock()
        const start = performance.now()
        inside++
        maxInside = Math.max(maxInside, inside)
        fences.push(m.fence)
        const current = Number((await own.range(counter)).kvs[0].value.toString())
        // The write is fenced: it applies only while this hold is current.
        const write = await own.txn([m.ownerCompare()], [own.put(counter, String(current + 1))])
        expect(write.succeeded).toBe(true)
        inside--
        intervals.push({ start, end: performance.now() })
        await m.unlock()
      }),
    )
    expect(Number((await ks.range(counter)).kvs[0].value.toString())).toBe(100)
    expect(maxInside).toBe(1)
    expect(fences).toHaveLength(100)
    for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1])
    const sorted = [...intervals].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) expect(sorted[i].start).toBeGreaterThanOrEqual(sorted[i - 1].end)
    expect(await keysOf(etcd.client, name)).toEqual([])
    await Promise.all(all.map((s) => s.close()))
  })

  it('tryLock with 5 contenders: exactly one wins, four get LockedError, no waiter keys left', async () => {
    const name = uniqueName('trylock')
    const ss = await sessions(5)
    const mutexes = ss.map((s) => new Mutex(s, name))
    const results = await Promise.allSettled(mutexes.map((m) => m.tryLock()))
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    expect(won).toHaveLength(1)
    expect(lost).toHaveLength(4)
    for (const r of lost) expect(r.reason).toBeInstanceOf(LockedError)
    const winner = mutexes[results.findIndex((r) => r.status === 'fulfilled')]
    expect(await keysOf(etcd.client, name)).toEqual([winner.key])
    for (const m of mutexes) if (m !== winner) expect(m.held).toBe(false)
    await winner.unlock()
    // Free again: a loser's tryLock now succeeds (Go's ExampleMutex_TryLock).
    const loser = mutexes.find((m) => m !== winner)!
    await loser.tryLock()
    expect(loser.held).toBe(true)
    await loser.unlock()
    expect(await keysOf(etcd.client, name)).toEqual([])
    await Promise.all(ss.map((s) => s.close()))
  })

  it("a failed tryLock leaves the same session's queued key alone (Go deletes it)", async () => {
    const name = uniqueName('trylock-shared')
    const [s1, s2] = await sessions(2)
    const holder = new Mutex(s1, name)
    await holder.lock()
    const queued = new Mutex(s2, name)
    const waiting = queued.lock()
    await untilKeys(name, 2)
    await expect(new Mutex(s2, name).tryLock()).rejects.toBeInstanceOf(LockedError)
    expect(await keysOf(etcd.client, name)).toEqual([holder.key, `${name}/${s2.leaseHex}`])
    await holder.unlock()
    await waiting
    expect(queued.held).toBe(true)
    await queued.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it('waits on the current holder when a queued predecessor leaves (TestMutexWaitsOnCurrentHolder)', async () => {
    const name = uniqueName('current-holder')
    const [sOwner, sVictim, sNew] = await sessions(3)
    const owner = new Mutex(sOwner, name)
    await owner.lock()
    const victim = track(new Mutex(sVictim, name).lock())
    await untilKeys(name, 2)
    const newOwnerMutex = new Mutex(sNew, name)
    const newOwner = track(newOwnerMutex.lock())
    await untilKeys(name, 3)
    await sVictim.close()
    await untilKeys(name, 2)
    // The victim's Lock call returns (its session is gone, so it cannot have the lock).
    await expect(victim.promise).rejects.toBeInstanceOf(SessionExpiredError)
    await sleep(500)
    expect(newOwner.settled).toBe(false)
    expect(newOwnerMutex.held).toBe(false)
    await owner.unlock()
    await newOwner.promise
    expect(newOwnerMutex.held).toBe(true)
    expect(newOwnerMutex.fence).toBeGreaterThan(0n)
    await newOwnerMutex.unlock()
    await Promise.all([sOwner.close(), sNew.close()])
  })

  it('a waiter whose session is closed rejects with SessionExpiredError at once, while the holder still holds (etcd #19597)', async () => {
    const name = uniqueName('expired-close')
    const [s1, s2] = await sessions(2)
    const m1 = new Mutex(s1, name)
    await m1.lock()
    const m2 = new Mutex(s2, name)
    const waiting = track(m2.lock())
    await untilKeys(name, 2)
    await s2.close()
    await expect(waiting.promise).rejects.toBeInstanceOf(SessionExpiredError)
    expect(m1.held).toBe(true) // the holder never unlocked
    expect(m2.held).toBe(false)
    expect(await keysOf(etcd.client, name)).toEqual([m1.key])
    await m1.unlock()
    await s1.close()
  })

  it('a waiter whose lease is revoked elsewhere rejects with SessionExpiredError while the holder still holds', async () => {
    const name = uniqueName('expired-revoke')
    const [s1, s2] = await sessions(2)
    const m1 = new Mutex(s1, name)
    await m1.lock()
    const m2 = new Mutex(s2, name)
    const waiting = track(m2.lock())
    await untilKeys(name, 2)
    await etcd.newClient().leaseClient.leaseRevoke({ ID: s2.leaseId })
    await expect(waiting.promise).rejects.toBeInstanceOf(SessionExpiredError)
    expect(m1.held).toBe(true)
    expect(await keysOf(etcd.client, name)).toEqual([m1.key])
    await m1.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it('lock() on a session whose lease was revoked before it noticed rejects with SessionExpiredError', async () => {
    const name = uniqueName('stale-session')
    const [s] = await sessions(1, 30) // 30 s: after the first keepalive, the next is 10 s away
    // Let the keepalive sent at creation be answered first, or its answer may report the revoke.
    for (let i = 0; i < 50 && s.aliveUntil === 0; i++) await sleep(20)
    await sleep(200)
    await etcd.newClient().leaseClient.leaseRevoke({ ID: s.leaseId })
    expect(s.active).toBe(true) // not heard yet
    await expect(new Mutex(s, name).lock()).rejects.toBeInstanceOf(SessionExpiredError)
    await expect(new Mutex(s, name).tryLock()).rejects.toBeInstanceOf(SessionExpiredError)
    expect(await keysOf(etcd.client, name)).toEqual([])
    await s.close()
  })

  it('relocks on the same session without deadlock (TestMutexSessionRelock)', async () => {
    const name = uniqueName('relock')
    const [s] = await sessions(1)
    const m1 = new Mutex(s, name)
    await m1.lock()
    const m2 = new Mutex(s, name)
    await m2.lock()
    expect(m2.held).toBe(true)
    expect(m2.key).toBe(m1.key)
    expect(m2.fence).toBe(m1.fence)
    expect(await keysOf(etcd.client, name)).toEqual([m1.key])
    await m2.unlock()
    expect(await keysOf(etcd.client, name)).toEqual([])
    await s.close()
  })

  it('a Mutex object locks, unlocks and relocks in a loop with a fresh fence each time', async () => {
    const name = uniqueName('loop')
    const [s] = await sessions(1)
    const m = new Mutex(s, name)
    let last = 0n
    for (let i = 0; i < 5; i++) {
      await m.lock()
      expect(m.fence).toBeGreaterThan(last)
      last = m.fence
      await m.unlock()
    }
    await s.close()
  })

  it('unlock before lock and double unlock throw LockReleasedError (TestMutexUnlock)', async () => {
    const name = uniqueName('unlock')
    const [s] = await sessions(1)
    const m = new Mutex(s, name)
    await expect(m.unlock()).rejects.toBeInstanceOf(LockReleasedError)
    expect(() => m.fence).toThrow(LockReleasedError)
    await m.lock()
    await m.unlock()
    await expect(m.unlock()).rejects.toBeInstanceOf(LockReleasedError)
    await s.close()
  })

  it("aborting a lock wait rejects with the signal's reason and leaves no waiter key", async () => {
    const name = uniqueName('abort')
    const [s1, s2] = await sessions(2)
    const m1 = new Mutex(s1, name)
    await m1.lock()
    const m2 = new Mutex(s2, name)
    const controller = new AbortController()
    const waiting = m2.lock({ signal: controller.signal })
    await untilKeys(name, 2)
    const reason = new Error('caller gave up')
    controller.abort(reason)
    await expect(waiting).rejects.toBe(reason)
    expect(m2.held).toBe(false)
    expect(await keysOf(etcd.client, name)).toEqual([m1.key])

    // A timeout signal works the same way; the object can lock again afterwards.
    await expect(m2.lock({ signal: AbortSignal.timeout(300) })).rejects.toMatchObject({ name: 'TimeoutError' })
    expect(await keysOf(etcd.client, name)).toEqual([m1.key])
    await m1.unlock()
    await m2.lock()
    expect(m2.held).toBe(true)
    await m2.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it('an already aborted signal rejects before anything is written', async () => {
    const name = uniqueName('pre-aborted')
    const [s] = await sessions(1)
    const reason = new Error('too late')
    await expect(new Mutex(s, name).lock({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    expect(await keysOf(etcd.client, name)).toEqual([])
    await s.close()
  })

  it('waiters are served FIFO by create revision', async () => {
    const name = uniqueName('fifo')
    const ss = await sessions(4)
    const holder = new Mutex(ss[0], name)
    await holder.lock()
    const order: number[] = []
    const waiters: Promise<void>[] = []
    for (let i = 1; i < 4; i++) {
      const m = new Mutex(ss[i], name)
      waiters.push(
        m.lock().then(async () => {
          order.push(i)
          await m.unlock()
        }),
      )
      await untilKeys(name, i + 1) // queue in a known order
    }
    await holder.unlock()
    await Promise.all(waiters)
    expect(order).toEqual([1, 2, 3])
    await Promise.all(ss.map((s) => s.close()))
  })

  it('ownerCompare() and fenced() guard writes: they fail after the hold ends', async () => {
    const name = uniqueName('fence')
    const [s1, s2] = await sessions(2)
    const ks = keyspace(etcd.client)
    const m1 = new Mutex(s1, name)
    await m1.lock()
    const stale = m1.ownerCompare()
    expect(
      (
        await m1
          .fenced()
          .then(etcd.client.put(`${name}-data`).value('a'))
          .commit()
      ).succeeded,
    ).toBe(true)
    await m1.unlock()
    const m2 = new Mutex(s2, name)
    await m2.lock()
    expect(m2.fence).toBeGreaterThan(0n)
    expect((await ks.txn([stale], [ks.put(`${name}-data`, 'stale')])).succeeded).toBe(false)
    expect((await ks.txn([m2.ownerCompare()], [ks.put(`${name}-data`, 'b')])).succeeded).toBe(true)
    expect(() => m1.fenced()).toThrow(LockReleasedError)
    expect((await ks.range(`${name}-data`)).kvs[0].value.toString()).toBe('b')
    await m2.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it('refuses a foreign key under its prefix (data written inside <name>/) with a typed error naming it, instead of waiting forever', async () => {
    const name = uniqueName('foreign')
    const [s1, s2] = await sessions(2)
    const m1 = new Mutex(s1, name)
    await m1.lock()
    // The mistake of the README's first primitives example: data written under the lock's own prefix.
    await m1
      .fenced()
      .then(etcd.client.put(`${name}/state`).value('done'))
      .commit()
    await m1.unlock()
    const m2 = new Mutex(s2, name)
    await expect(m2.lock({ signal: AbortSignal.timeout(5_000) })).rejects.toThrow(new RegExp(`key "${name}/state" under the lock's prefix`))
    await expect(m2.tryLock()).rejects.toBeInstanceOf(InvalidArgumentError)
    // Only the foreign key is left: the refused calls removed their own.
    expect(await keysOf(etcd.client, name)).toEqual([`${name}/state`])
    // Behind a real holder, the refusal comes when the foreign key becomes the one to wait for.
    await etcd.client.delete().key(`${name}/state`)
    await m1.lock()
    const waiting = m2.lock({ signal: AbortSignal.timeout(5_000) })
    await untilKeys(name, 2)
    await etcd.client.put(`${name}/zz-data`).value('x')
    await m1.unlock()
    await expect(waiting).resolves.toBeUndefined() // the data key is younger than m2's: not in its way
    await m2.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it('rejects a concurrent second lock() on one object and lock() while held', async () => {
    const name = uniqueName('misuse')
    const [s1, s2] = await sessions(2)
    const m1 = new Mutex(s1, name)
    await m1.lock()
    await expect(m1.lock()).rejects.toBeInstanceOf(InvalidArgumentError)
    const m2 = new Mutex(s2, name)
    const first = m2.lock()
    await expect(m2.lock()).rejects.toBeInstanceOf(InvalidArgumentError)
    await m1.unlock()
    await first
    await m2.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it.each(['', 42, null, undefined, { toString: () => 'x' }])('rejects name %s with InvalidArgumentError, writing nothing', async (bad) => {
    const [s] = await sessions(1)
    const before = await etcd.client.getAll().count()
    expect(() => new Mutex(s, bad as string)).toThrow(InvalidArgumentError)
    expect(await etcd.client.getAll().count()).toBe(before)
    await s.close()
  })
})
