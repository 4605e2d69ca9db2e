import { describe, expect, it } from 'vitest'
import { SessionExpiredError, Session } from '../lib/index.js'
import { keyspace, type Keyspace } from '../lib/kv.js'
import { whileOwnKeyLives } from '../lib/wait.js'
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
