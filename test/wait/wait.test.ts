import { describe, expect, it } from 'vitest'
import { Semaphore, SessionExpiredError, Session, WatchLostError } from '../../lib/index.js'
import { keyspace, type Keyspace } from '../../lib/core/kv.js'
import { waitFor, waitGone, waitRangeChange, whileOwnKeyLives } from '../../lib/wait/wait.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd()

/** The client's keyspace, except that its first `failures` Ranges fail as if etcd were unreachable. */
function flakyRanges(ks: Keyspace, failures: number): Keyspace {
  let left = failures
  return Object.assign(Object.create(ks) as Keyspace, {
    range: (...args: Parameters<Keyspace['range']>) =>
      left-- > 0 ? Promise.reject(new Error('etcd briefly unreachable')) : ks.range(...args),
  })
}

/** The client's keyspace, except that every Range answers `ms` late. */
function slowRanges(ks: Keyspace, ms: number): Keyspace {
  return Object.assign(Object.create(ks) as Keyspace, {
    range: async (...args: Parameters<Keyspace['range']>) => {
      const res = await ks.range(...args)
      await sleep(ms)
      return res
    },
  })
}

describe('waitRangeChange', () => {
  it('a delete event that comes while the gap before the watch is still being read says "read again", not "only this key went"', async () => {
    const ks = keyspace(etcd.client)
    const prefix = `${uniqueName('slots')}/`
    for (const k of ['a', 'b', 'c']) await ks.txn([], [ks.put(`${prefix}${k}`, '')])
    const seen = await ks.range(prefix, { prefix: true })
    await ks.del(`${prefix}a`) // in the gap: before the watch starts
    const woke = waitRangeChange(slowRanges(ks, 1500), prefix, seen.revision, seen.kvs, AbortSignal.timeout(10_000))
    await sleep(300) // the watch is on; its Range over the gap answers late
    await ks.del(`${prefix}b`)
    // "b went at this revision" would let the caller keep a, deleted in the gap, in its view.
    expect(await woke).toEqual({})
  })

  it('a semaphore head whose permits come free one by one, some before its watch starts, is granted (40 rounds)', async () => {
    // Five holders, permits lowered to 3, slots 0-2 released in a row: the head must be granted
    // once 2 are left. Before the fix above, most runs of 40 rounds had one that waited for ever
    // (the test above is the exact race, made certain).
    for (let round = 0; round < 40; round++) {
      const name = uniqueName('lowered')
      const s = await Session.create(etcd.client, { ttl: 10 })
      const old = Array.from({ length: 5 }, () => new Semaphore(s, name, 5))
      for (const o of old) await o.acquire()
      await etcd.client.put(`${name}/config`).value('permits=3')
      const contenders = [0, 1, 2].map(() => new Semaphore(s, name, 3))
      const granted = contenders.map((c) => c.acquire().then(() => c))
      for (let i = 0; i < 200 && (await etcd.client.getAll().prefix(`${name}/waiters/`).keys()).length < 3; i++) await sleep(10)
      for (const slot of [0, 1, 2]) await old.find((o) => o.key === `${name}/holders/${slot}`)!.release()
      const first = await Promise.race([...granted, sleep(3000).then(() => undefined)])
      expect(first, `round ${round}: nobody granted 3 s after only 2 of 3 permits were left held`).toBeInstanceOf(Semaphore)
      for (const o of old) if (o.key?.endsWith('/3') || o.key?.endsWith('/4')) await o.release()
      for (const c of await Promise.all(granted)) await c.release()
      await s.close()
    }
  }, 120_000)
})

describe('whileOwnKeyLives', () => {
  it('a failed read in the own-key watch does not turn early loss detection off', async () => {
    const ks = keyspace(etcd.client)
    const session = await Session.create(etcd.client, { ttl: 10 })
    const key = uniqueName('own')
    const created = await ks.txn([], [ks.put(key, '', session.leaseId)])
    // A write after our read, so the watch's start is past `seenAt` and it reads to close the gap.
    await ks.txn([], [ks.put(uniqueName('other'), 'x')])
    const lost = () => new SessionExpiredError('own key lost')
    const own = { ks: flakyRanges(ks, 1), key, createRevision: created.revision, seenAt: created.revision, session: session.signal, lost }
    const waiting = whileOwnKeyLives(
      own,
      AbortSignal.timeout(10_000),
      (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
    )
    const outcome = waiting.then(
      () => 'resolved',
      (err: unknown) => err,
    )
    await new Promise((r) => setTimeout(r, 500)) // the failed read has happened by now
    await ks.del(key)
    const err = await outcome
    expect(err).toBeInstanceOf(SessionExpiredError)
    expect((err as Error).message).toBe('own key lost')
    await session.close()
  })
})

describe('waitGone (on the shared delete feed of the prefix)', () => {
  it('resolves at the delete of the key, also when it went between the read and the call', async () => {
    const ks = keyspace(etcd.client)
    const prefix = `${uniqueName('gone')}/`
    const a = await ks.txn([], [ks.put(`${prefix}a`, '')])
    const b = await ks.txn([], [ks.put(`${prefix}b`, '')])
    const seenAt = b.revision
    // `a` goes after the read at seenAt but before anyone waits for it: replayed or re-read.
    const early = await ks.txn([], [ks.deleteOp(`${prefix}a`)])
    expect(
      await waitGone(ks, prefix, { key: `${prefix}a`, createRevision: a.revision }, seenAt, AbortSignal.timeout(5000)),
    ).toBeGreaterThanOrEqual(early.revision)
    const waiting = waitGone(ks, prefix, { key: `${prefix}b`, createRevision: b.revision }, seenAt, AbortSignal.timeout(5000))
    await ks.txn([], [ks.put(`${prefix}c`, '')]) // a put and another key's life do not end the wait
    await ks.del(`${prefix}c`)
    const late = await ks.txn([], [ks.deleteOp(`${prefix}b`)])
    expect(await waiting).toBe(late.revision)
  })

  it('rejects with the reason on abort', async () => {
    const ks = keyspace(etcd.client)
    const prefix = `${uniqueName('gone-abort')}/`
    const a = await ks.txn([], [ks.put(`${prefix}a`, '')])
    const stop = new AbortController()
    const waiting = waitGone(ks, prefix, { key: `${prefix}a`, createRevision: a.revision }, a.revision, stop.signal)
    stop.abort(new Error('caller gave up'))
    await expect(waiting).rejects.toThrow('caller gave up')
  })
})

describe('a watch etcd cancels', () => {
  // etcd3 drops a watcher that etcd cancelled (here: its start revision was compacted) and then
  // emits 'error'. Cancelling it once more used to send a cancel for an id etcd3 no longer knew;
  // with another watch keeping the stream open, etcd's answer made etcd3 throw from the stream's
  // data handler (an uncaught exception: the process would end, and the client's watches broke).
  it("ends its wait with WatchLostError and leaves the client's other watches working", async () => {
    const ks = keyspace(etcd.client)
    const prefix = `${uniqueName('keeps-stream')}/`
    const kept = await ks.txn([], [ks.put(`${prefix}kept`, '')])
    // A wait on the shared delete feed: its watch keeps the client's watch stream open.
    const keptGone = waitGone(
      ks,
      prefix,
      { key: `${prefix}kept`, createRevision: kept.revision },
      kept.revision,
      AbortSignal.timeout(10_000),
    )
    const key = uniqueName('compacted')
    const first = await ks.txn([], [ks.put(key, '1')])
    const last = await ks.txn([], [ks.put(key, '2')])
    await etcd.client.kv.compact({ revision: String(last.revision), physical: true })
    const err = await waitFor(etcd.client, { key }, first.revision, () => true, AbortSignal.timeout(5000)).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(WatchLostError)
    expect((err as Error).message).toMatch(/compact/i)
    await new Promise((r) => setTimeout(r, 300)) // etcd's answer to a stray cancel would be here by now
    const deleted = await ks.txn([], [ks.deleteOp(`${prefix}kept`)])
    expect(await keptGone).toBe(deleted.revision)
  })
})
