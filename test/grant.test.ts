/**
 * The grant contract (lib/fencing.ts `Grant`): every exclusive grant — Mutex, RWMutex in either
 * mode, Semaphore, IdempotencyClaim, Election, and the middlewares' `context.etcd` grants — offers
 * `key`, `fence`, `ownerCompare()`, `fenced()` and `signal` under the same names (checked by tsc,
 * which compiles test/), and they mean the same against a real etcd: the fence is the key's
 * create revision, both guards let a write through while held, the signal is live; once released
 * the signal is aborted and the compare refuses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  Election,
  IdempotencyStore,
  LockReleasedError,
  Mutex,
  NotLeaderError,
  RWMutex,
  Semaphore,
  Session,
  type Grant,
  type IdempotencyClaim,
} from '../lib/index.js'
import { keyspace } from '../lib/core/kv.js'
import type { IdempotencyGrant, LeadershipGrant, LockGrant } from '../middleware/index.js'
import { uniqueName, useEtcd } from './helpers.js'

/** Compiles only if every grant type is a {@link Grant}. */
type Grants<T extends Grant[]> = T
export type EveryGrant = Grants<[Mutex, RWMutex, Semaphore, IdempotencyClaim, Election, LockGrant, LeadershipGrant, IdempotencyGrant]>

const etcd = useEtcd(1)
let session: Session

beforeAll(async () => {
  session = await Session.create(etcd.client, { ttl: 30 })
})
afterAll(async () => {
  await session?.close()
})

/** What a held grant must do: fence = its etcd key's create revision, both guards pass, the signal is live. */
async function holds(grant: Grant, etcdKey = grant.key): Promise<void> {
  const ks = keyspace(etcd.client)
  expect(grant.key).not.toBe('')
  const [kv] = (await ks.range(etcdKey)).kvs
  expect(grant.fence).toBe(kv.createRevision)
  expect(grant.signal.aborted).toBe(false)
  const target = uniqueName('grant-write')
  expect((await grant.fenced().then(etcd.client.put(target).value('a')).commit()).succeeded).toBe(true)
  expect((await ks.txn([grant.ownerCompare()], [ks.put(target, 'b')])).succeeded).toBe(true)
}

/** What a released grant must do: its signal aborted with `reason`, its compare refusing. */
async function released(grant: Grant, reason: new (...args: never[]) => Error): Promise<void> {
  const ks = keyspace(etcd.client)
  expect(grant.signal.aborted).toBe(true)
  expect(grant.signal.reason).toBeInstanceOf(reason)
  expect((await ks.txn([grant.ownerCompare()], [ks.put(uniqueName('grant-late'), 'x')])).succeeded).toBe(false)
}

describe('the grant contract', () => {
  /** Each lock-like grant: how to take and give it back, and what its signal says when nothing is held. */
  const cases: [
    string,
    () => { grant: Grant; take: () => Promise<unknown>; give: () => Promise<unknown> }[],
    new (...args: never[]) => Error,
  ][] = [
    [
      'Mutex',
      () => {
        const m = new Mutex(session, uniqueName('grant-mutex'))
        return [{ grant: m, take: () => m.lock(), give: () => m.unlock() }]
      },
      LockReleasedError,
    ],
    [
      'RWMutex, read and write',
      () => {
        const rw = new RWMutex(session, uniqueName('grant-rw'))
        return [
          { grant: rw, take: () => rw.rLock(), give: () => rw.rUnlock() },
          { grant: rw, take: () => rw.lock(), give: () => rw.unlock() },
        ]
      },
      LockReleasedError,
    ],
    [
      'Semaphore',
      () => {
        const s = new Semaphore(session, uniqueName('grant-sem'), 2)
        return [{ grant: s, take: () => s.acquire(), give: () => s.release() }]
      },
      LockReleasedError,
    ],
    [
      'Election',
      () => {
        const e = new Election(session, uniqueName('grant-elect'))
        return [{ grant: e, take: () => e.campaign('me'), give: () => e.resign() }]
      },
      NotLeaderError,
    ],
  ]

  it.each(cases)('%s', async (_, make, notHeld) => {
    for (const { grant, take, give } of make()) {
      await released(grant, notHeld)
      await take()
      await holds(grant)
      await give()
      await released(grant, notHeld)
    }
  })

  it('IdempotencyClaim: key is the idempotency key, recordKey the etcd key it fences by', async () => {
    const prefix = uniqueName('grant-idem')
    const store = new IdempotencyStore(etcd.client, prefix)
    const begun = await store.begin('k', { session })
    if (begun.status !== 'owned') throw new Error(`expected to own the key, got ${begun.status}`)
    expect([begun.claim.key, begun.claim.recordKey]).toEqual(['k', `${prefix}/k`])
    await holds(begun.claim, begun.claim.recordKey)
    await store.complete(begun.claim, 'done', { ttl: 5 })
  })
})
