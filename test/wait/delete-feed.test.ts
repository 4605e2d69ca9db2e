import { describe, expect, it } from 'vitest'
import { countRpcs } from '../../bench/util/rpcs.js'
import { createClient, Mutex, Session, SessionExpiredError, WatchLostError } from '../../lib/index.js'
import { AHEAD_READ_LIMIT } from '../../lib/wait/turn.js'
import { onDeletes, type FeedSubscriber } from '../../lib/wait/delete-feed.js'
import { keyspace, type KeyValue } from '../../lib/core/kv.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd()

/** A subscriber that records what the feed told it. */
function recorder(seenAt: bigint) {
  const heard = {
    deleted: [] as { key: string; revision: bigint }[],
    resyncs: [] as { keys: string[]; revision: bigint }[],
    failures: [] as unknown[],
  }
  const sub: FeedSubscriber = {
    seenAt,
    deleted: (key, revision) => heard.deleted.push({ key, revision }),
    resync: (kvs: KeyValue[], revision) => heard.resyncs.push({ keys: kvs.map((kv) => kv.key).sort(), revision }),
    failed: (error) => heard.failures.push(error),
  }
  return { sub, heard }
}

/** Polls `check` until it holds (bounded: fails instead of hanging). */
async function until(check: () => boolean, what: string) {
  for (let i = 0; i < 200 && !check(); i++) await sleep(10)
  if (!check()) throw new Error(`never happened: ${what}`)
}

describe('the shared delete feed (lib/wait/delete-feed.ts)', () => {
  it('a subscriber whose read is older than a delete the feed already delivered gets it replayed, in order, and nothing at or before its read', async () => {
    const ks = keyspace(etcd.client)
    const prefix = `${uniqueName('feed-log')}/`
    const a = await ks.txn([], [ks.put(`${prefix}a`), ks.put(`${prefix}b`), ks.put(`${prefix}c`)])
    const first = recorder(a.revision)
    const stopFirst = onDeletes(ks, prefix, first.sub)
    // Let the watch be created first (a delete before it would reach this subscriber as a resync).
    await sleep(300)
    try {
      const delA = await ks.txn([], [ks.deleteOp(`${prefix}a`)])
      await until(() => first.heard.deleted.length === 1, 'the first delete reached the feed')
      const delB = await ks.txn([], [ks.deleteOp(`${prefix}b`)])
      await until(() => first.heard.deleted.length === 2, 'the second delete reached the feed')
      // Read between the two deletes, subscribed after both were delivered: only the second is news to it.
      const late = recorder(delA.revision)
      const stopLate = onDeletes(ks, prefix, late.sub)
      await until(() => late.heard.deleted.length === 1, 'the log was replayed')
      expect(late.heard.deleted).toEqual([{ key: `${prefix}b`, revision: delB.revision }])
      expect(late.heard.resyncs).toEqual([])
      stopLate()
    } finally {
      stopFirst()
    }
  })

  it('a subscriber whose read predates the feed gets the whole prefix once (one Range for a burst of them), then live deletes', async () => {
    const client = etcd.newClient()
    const ks = keyspace(client)
    const prefix = `${uniqueName('feed-resync')}/`
    const old = await ks.txn([], [ks.put(`${prefix}x`), ks.put(`${prefix}y`)])
    await ks.txn([], [ks.deleteOp(`${prefix}x`)]) // before any feed: no event for it
    const subs = Array.from({ length: 20 }, () => recorder(old.revision))
    const { result: stops, perOp } = await countRpcs(etcd.cluster.endpoints[0], 1, async () => {
      const stops = subs.map((r) => onDeletes(ks, prefix, r.sub))
      await until(() => subs.every((r) => r.heard.resyncs.length === 1), 'every subscriber was resynced')
      return stops
    })
    for (const r of subs) expect(r.heard.resyncs[0].keys).toEqual([`${prefix}y`])
    // One watch create, and one Range for all twenty.
    expect(perOp.Range ?? 0).toBe(1)
    expect(perOp.Watch ?? 0).toBe(1)
    const del = await ks.txn([], [ks.deleteOp(`${prefix}y`)])
    await until(() => subs.every((r) => r.heard.deleted.length === 1), 'the live delete reached every subscriber')
    for (const r of subs) expect(r.heard.deleted).toEqual([{ key: `${prefix}y`, revision: del.revision }])
    for (const stop of stops) stop()
  })

  it('closing the client fails every subscriber with WatchLostError (client-closed)', async () => {
    const client = createClient({ endpoints: etcd.cluster.endpoints })
    const ks = keyspace(client)
    const prefix = `${uniqueName('feed-close')}/`
    const seen = await ks.txn([], [ks.put(`${prefix}k`)])
    const r = recorder(seen.revision)
    onDeletes(ks, prefix, r.sub)
    await sleep(100)
    client.close()
    await until(() => r.heard.failures.length === 1, 'the subscriber heard of the close')
    expect(r.heard.failures[0]).toBeInstanceOf(WatchLostError)
    expect((r.heard.failures[0] as WatchLostError).reason).toBe('client-closed')
    expect(() => onDeletes(ks, prefix, recorder(seen.revision).sub)).toThrow(WatchLostError)
  })
})

describe('Mutex waiters on the shared feed', () => {
  it("30 waiters of one process cost one watch (create + cancel), and are served FIFO, those beyond the lock Txn's read with one read more each", async () => {
    const client = etcd.newClient()
    const name = uniqueName('feed-fifo')
    const sessions = await Promise.all(Array.from({ length: 31 }, () => Session.create(client, { ttl: 30 })))
    const holder = new Mutex(sessions[0], name)
    await holder.lock()
    const order: number[] = []
    await sleep(700) // earlier tests' feeds finish lingering (their cancels would be counted here)
    const { perOp } = await countRpcs(etcd.cluster.endpoints[0], 1, async () => {
      const waiters: Promise<void>[] = []
      for (let i = 1; i <= 30; i++) {
        const m = new Mutex(sessions[i], name)
        waiters.push(
          m.lock().then(async () => {
            order.push(i)
            await m.unlock()
          }),
        )
        // Queue in a known order: each waiter's key exists before the next one locks.
        for (let t = 0; t < 200 && (await client.getAll().prefix(`${name}/`).count()) !== i + 1; t++) await sleep(5)
      }
      await holder.unlock()
      await Promise.all(waiters)
    })
    expect(order).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
    // 30 acquires + 31 unlocks; a waiter that saw every key ahead (the lock Txn reads
    // AHEAD_READ_LIMIT of them) reads nothing more before its turn, one further back reads once.
    const deeper = 30 - (AHEAD_READ_LIMIT - 1)
    expect(deeper).toBeGreaterThan(0)
    expect(perOp.Watch ?? 0).toBeLessThanOrEqual(2)
    expect(perOp.Txn ?? 0).toBeLessThanOrEqual(61 + deeper)
    await Promise.all(sessions.map((s) => s.close()))
  })

  it('a waiter whose key is deleted by someone else rejects with SessionExpiredError at once, the others keep their place', async () => {
    const name = uniqueName('feed-own')
    const [s1, s2, s3] = await Promise.all([1, 2, 3].map(() => Session.create(etcd.client, { ttl: 30 })))
    const holder = new Mutex(s1, name)
    await holder.lock()
    const victim = new Mutex(s2, name)
    const victimWait = victim.lock()
    const victimOutcome = victimWait.then(
      () => 'locked',
      (err: unknown) => err,
    )
    await until(() => victim.key !== '', 'the victim queued')
    const next = new Mutex(s3, name)
    const nextWait = next.lock()
    await sleep(200)
    await keyspace(etcd.client).del(victim.key)
    expect(await victimOutcome).toBeInstanceOf(SessionExpiredError)
    expect(next.held).toBe(false) // the holder still holds
    await holder.unlock()
    await nextWait
    expect(next.held).toBe(true)
    await next.unlock()
    await Promise.all([s1.close(), s2.close(), s3.close()])
  })

  it('a waiter with more keys ahead than the lock Txn reads takes the lock only after every one of them is gone', async () => {
    const name = uniqueName('feed-deep')
    const ks = keyspace(etcd.client)
    const others = await Promise.all(Array.from({ length: AHEAD_READ_LIMIT + 8 }, () => Session.create(etcd.client, { ttl: 30 })))
    for (const s of others) await ks.txn([], [ks.put(`${name}/${s.leaseHex}`, '', s.leaseId)])
    const session = await Session.create(etcd.client, { ttl: 30 })
    const m = new Mutex(session, name)
    let lockedAt: bigint | undefined
    const waiting = m.lock({ signal: AbortSignal.timeout(20_000) }).then(() => (lockedAt = m.fence))
    await sleep(200)
    // The oldest go last: the waiter's read covered only the youngest AHEAD_READ_LIMIT of them.
    for (const s of others.slice(8).reverse()) await s.close()
    await sleep(200)
    expect(lockedAt).toBeUndefined()
    for (const s of others.slice(0, 8)) {
      expect(lockedAt).toBeUndefined()
      await s.close()
    }
    await waiting
    expect(m.held).toBe(true)
    expect((await ks.range(`${name}/`, { prefix: true })).kvs.map((kv) => kv.key)).toEqual([m.key])
    await m.unlock()
    await session.close()
  })

  it("a key without a lease deep in the queue (beyond the lock Txn's read) is refused when the waiter reads further, not waited on forever", async () => {
    const name = uniqueName('feed-foreign')
    const ks = keyspace(etcd.client)
    const holderSession = await Session.create(etcd.client, { ttl: 30 })
    await ks.txn([], [ks.put(`${name}/data`, 'x')]) // the oldest key: a foreign one
    const others = await Promise.all(Array.from({ length: AHEAD_READ_LIMIT + 4 }, () => Session.create(etcd.client, { ttl: 30 })))
    // More contenders behind the foreign key than the lock Txn reads, put directly (as other
    // processes' lock keys would be).
    for (const s of others) await ks.txn([], [ks.put(`${name}/${s.leaseHex}`, '', s.leaseId)])
    const m = new Mutex(holderSession, name)
    const waiting = m.lock({ signal: AbortSignal.timeout(10_000) }).then(
      () => 'locked',
      (err: unknown) => err,
    )
    await sleep(200)
    // The contenders go: the waiter's known keys are all deleted, it reads on and finds the foreign key.
    await Promise.all(others.map((s) => s.close()))
    const outcome = await waiting
    expect(outcome).toBeInstanceOf(Error)
    expect((outcome as Error).message).toMatch(new RegExp(`key "${name}/data" under the lock's prefix`))
    expect((await ks.range(`${name}/`, { prefix: true })).kvs.map((kv) => kv.key)).toEqual([`${name}/data`])
    await holderSession.close()
  })
})
