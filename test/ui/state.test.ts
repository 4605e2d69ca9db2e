// The page's state model (cli/ui/state.ts) against a real etcd: each primitive as the library
// writes it, read back through the key layouts — holders, waiters, fences, leases, queue counts,
// idempotency records, double barriers — and the "what is stuck" overview built from it.
import { afterAll, describe, expect, it } from 'vitest'
import { DoubleBarrier, Election, Queue, RateLimiter, RWMutex, Semaphore, Session } from '../../lib/index.js'
import { LeaseBook, LockCache, readState, RevisionClock, stuckOverview } from '../../cli/ui/state.js'
import { startUiServer } from '../../cli/ui/server.js'
import { sleep, uniqueName, until, useEtcd } from '../helpers.js'

const etcd = useEtcd(1)
const sessions: Session[] = []
afterAll(async () => {
  for (const s of sessions) await s.close().catch(() => {})
})
const session = async (ttl = 30) => {
  const s = await Session.create(etcd.client, { ttl })
  sessions.push(s)
  return s
}
const read = () => readState(etcd.client, new RevisionClock(), new LeaseBook(etcd.client), new LockCache())

describe('the state model', () => {
  it('reads RWMutex holders and writers waiting, an election with its proposal, semaphores and rate limiters', async () => {
    const rw = uniqueName('st-rw')
    await new RWMutex(await session(), rw).rLock()
    await new RWMutex(await session(), rw).rLock()
    const writer = new RWMutex(await session(), rw).lock()
    writer.catch(() => {})
    const election = uniqueName('st-el')
    await new Election(await session(), election).campaign('node-a')
    const second = new Election(await session(), election).campaign('node-b')
    second.catch(() => {})
    const sem = uniqueName('st-sem')
    await new Semaphore(await session(), sem, 1).acquire()
    const queued = new Semaphore(await session(), sem, 1).acquire()
    queued.catch(() => {})
    const limiter = uniqueName('st-rl')
    const rl = new RateLimiter(etcd.client, limiter, { rate: 5, burst: 1 })
    await rl.acquire()
    await until(
      'every waiter to queue',
      10_000,
      async () => (await etcd.keysUnder(`${rw}/write/`)).length === 1 && (await etcd.keysUnder(`${sem}/waiters/`)).length === 1,
    )

    const state = await read()
    const rwLock = state.locks.find((l) => l.name === rw)!
    expect(rwLock.kind).toBe('rwmutex')
    expect(rwLock.holders.map((h) => h.mode)).toEqual(['read', 'read'])
    expect(rwLock.waiters.map((h) => h.mode)).toEqual(['write'])
    expect(rwLock.holders[0].fence).toBeLessThan(rwLock.waiters[0].fence)
    for (const c of [...rwLock.holders, ...rwLock.waiters]) {
      expect(c.ttl).toBeGreaterThan(20)
      expect(c.grantedTtl).toBe(30)
      expect(c.zombie).toBe(false)
    }
    const el = state.locks.find((l) => l.name === election)!
    expect(el.kind).toBe('election')
    expect(el.holders[0].proposal).toBe('node-a')
    await until('the second candidate', 5000, async () => (await etcd.keysUnder(`${election}/`)).length === 2)
    const again = await read()
    expect(again.locks.find((l) => l.name === election)!.waiters.map((c) => c.proposal)).toEqual(['node-b'])
    const semView = state.permits.find((p) => p.name === sem)!
    expect(semView).toMatchObject({ kind: 'semaphore', permits: 1, settings: 'permits=1' })
    expect(semView.holders.map((h) => h.slot)).toEqual([0])
    expect(semView.waiters).toHaveLength(1)
    expect(state.permits.find((p) => p.name === limiter)).toMatchObject({ kind: 'rate limiter', settings: 'rate=5 per=1000 burst=1' })
    const stuck = stuckOverview(state, new Map())
    expect(stuck.callersQueued).toEqual([expect.objectContaining({ name: sem, queued: 1, inUse: 1, permits: 1 })])
    await rl.close()
  })

  it('counts a queue: ready, in flight, delayed, dead letters, and its oldest ready message', async () => {
    const name = uniqueName('st-q')
    const q = new Queue(etcd.client, name)
    const first = await q.enqueue('one')
    await q.enqueue('two')
    await q.enqueue('three')
    await q.enqueue('later', { delayMs: 60_000 })
    await new Queue(etcd.client, `dlq/${name}`).enqueue('poison')
    const [claimed] = await q.receive({ max: 1, visibilityTimeout: 30 })
    expect(claimed.id).toBe(first.id)
    const state = await read()
    const view = state.queues.find((v) => v.name === name)!
    expect(view).toMatchObject({
      kind: 'fifo',
      items: 3,
      ready: 2,
      inFlight: 1,
      delayed: 1,
      deadLetter: { queue: `dlq/${name}`, items: 1 },
    })
    // The oldest message not in flight is the second one; its age comes from its producer's timestamp.
    expect(view.oldestReady?.key).not.toBe(first.key)
    expect(view.oldestReady?.sinceExact).toBe(true)
    expect(Date.now() - view.oldestReady!.since).toBeLessThan(10_000)
    // The dead-letter queue shows under its queue, not as a queue of its own.
    expect(state.queues.some((v) => v.name === `dlq/${name}`)).toBe(false)
    const grew = stuckOverview(state, new Map([[name, 0]])).deadLettersGrew
    expect(grew).toEqual([{ name, deadLetter: `dlq/${name}`, items: 1, before: 0 }])
  })

  it('reads idempotency records by state and flags one in progress past its TTL; finds double barriers', async () => {
    const fn = uniqueName('st-fn')
    const lease = etcd.client.lease(2)
    await lease.grant()
    await lease.put(`__idempotency/${fn}/k1`).value(JSON.stringify({ state: 'in-progress', owner: 'lambda-1' }))
    await etcd.client.put(`__idempotency/${fn}/k2`).value(JSON.stringify({ state: 'completed', result: 1 }))
    const barrier = uniqueName('st-db')
    const entering = new DoubleBarrier(await session(), barrier, 2).enter()
    entering.catch(() => {})
    await until('the participant', 5000, async () => (await etcd.keysUnder(`${barrier}/waiters/`)).length === 1)
    const clock = new RevisionClock()
    const leases = new LeaseBook(etcd.client)
    const cache = new LockCache()
    const before = await readState(etcd.client, clock, leases, cache)
    expect(
      before.records
        .filter((r) => r.store === `__idempotency/${fn}`)
        .map((r) => r.state)
        .sort(),
    ).toEqual(['completed', 'in-progress'])
    expect(before.records.find((r) => r.key.endsWith('/k1'))).toMatchObject({ owner: 'lambda-1', overdue: false })
    expect(before.barriers.find((b) => b.name === barrier)).toEqual({ name: barrier, held: false, participants: 1, ready: false })
    // Dated by this clock's first sample, the record's age is a lower bound that grows past the lease's 2 s.
    await sleep(2500)
    const after = await readState(etcd.client, clock, leases, cache)
    expect(after.records.find((r) => r.key.endsWith('/k1'))).toMatchObject({ state: 'in-progress', overdue: true })
    expect(stuckOverview(after, new Map()).recordsOverdue.map((r) => r.key)).toContain(`__idempotency/${fn}/k1`)
    await lease.revoke()
  })

  it("counts a rate limiter's admissions per second from the watch", async () => {
    const limiter = uniqueName('st-rate')
    const server = await startUiServer({ client: etcd.client })
    const rl = new RateLimiter(etcd.newClient(), limiter, { rate: 20, burst: 4 })
    try {
      await until('the first snapshot', 10_000, () => server.state())
      for (let i = 0; i < 10; i++) await rl.acquire()
      const row = await until('the limiter in a snapshot', 5000, async () => {
        const list = (await (await fetch(`${server.url}api/list?section=permits&q=${limiter}`)).json()) as {
          rows: { admittedPerSecond?: number }[]
        }
        return list.rows[0]
      })
      // 10 admissions in the last 10 s.
      expect(row.admittedPerSecond).toBe(1)
    } finally {
      await rl.close()
      await server.close()
    }
  })
})
