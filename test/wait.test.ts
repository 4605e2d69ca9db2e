import { describe, expect, it } from 'vitest'
import { SessionExpiredError, Session, WatchLostError } from '../lib/index.js'
import { keyspace, type Keyspace } from '../lib/kv.js'
import { waitFor, waitGone, whileOwnKeyLives } from '../lib/wait.js'
import { uniqueName, useEtcd } from './helpers.js'

const etcd = useEtcd()

/** The client's keyspace, except that its first `failures` Ranges fail as if etcd were unreachable. */
function flakyRanges(ks: Keyspace, failures: number): Keyspace {
  let left = failures
  return Object.assign(Object.create(ks) as Keyspace, {
    range: (...args: Parameters<Keyspace['range']>) => (left-- > 0 ? Promise.reject(new Error('etcd briefly unreachable')) : ks.range(...args)),
  })
}

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
    const waiting = whileOwnKeyLives(own, AbortSignal.timeout(10_000), (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))))
    const outcome = waiting.then(() => 'resolved', (err: unknown) => err)
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
    const early = await ks.txn([], [ks.delete(`${prefix}a`)])
    expect(await waitGone(ks, prefix, { key: `${prefix}a`, createRevision: a.revision }, seenAt, AbortSignal.timeout(5000))).toBeGreaterThanOrEqual(early.revision)
    const waiting = waitGone(ks, prefix, { key: `${prefix}b`, createRevision: b.revision }, seenAt, AbortSignal.timeout(5000))
    await ks.txn([], [ks.put(`${prefix}c`, '')]) // a put and another key's life do not end the wait
    await ks.del(`${prefix}c`)
    const late = await ks.txn([], [ks.delete(`${prefix}b`)])
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
  it('ends its wait with WatchLostError and leaves the client\'s other watches working', async () => {
    const ks = keyspace(etcd.client)
    const prefix = `${uniqueName('keeps-stream')}/`
    const kept = await ks.txn([], [ks.put(`${prefix}kept`, '')])
    // A wait on the shared delete feed: its watch keeps the client's watch stream open.
    const keptGone = waitGone(ks, prefix, { key: `${prefix}kept`, createRevision: kept.revision }, kept.revision, AbortSignal.timeout(10_000))
    const key = uniqueName('compacted')
    const first = await ks.txn([], [ks.put(key, '1')])
    const last = await ks.txn([], [ks.put(key, '2')])
    await etcd.client.kv.compact({ revision: String(last.revision), physical: true })
    const err = await waitFor(etcd.client, { key }, first.revision, () => true, AbortSignal.timeout(5000)).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(WatchLostError)
    expect((err as Error).message).toMatch(/compact/i)
    await new Promise((r) => setTimeout(r, 300)) // etcd's answer to a stray cancel would be here by now
    const deleted = await ks.txn([], [ks.delete(`${prefix}kept`)])
    expect(await keptGone).toBe(deleted.revision)
  })
})
