/**
 * The idempotency store against real etcd: begin / complete / fail, what a duplicate
 * finds, waits that learn the outcome from a watch, fencing (a duplicate can never change or
 * delete the owner's record), payload checks, results etcd cannot keep, and record lifetimes
 * that are etcd leases (never a clock).
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  hashPayload,
  IdempotencyClaimLostError,
  IdempotencyKeyMismatchError,
  IdempotencyResultNotStorableError,
  IdempotencyStore,
  InvalidArgumentError,
  InvalidStateError,
  Session,
  type BeginResult,
  type IdempotencyClaim,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { waitChange, waitDelete } from '../../lib/wait/wait.js'
import { uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd(1)
let session: Session
let other: Session

beforeAll(async () => {
  session = await Session.create(etcd.client, { ttl: 10 })
  other = await Session.create(etcd.client, { ttl: 10 })
})
afterAll(async () => {
  await session?.close()
  await other?.close()
})

const store = () => new IdempotencyStore(etcd.client, uniqueName('idem'))

function owned(res: BeginResult): IdempotencyClaim {
  if (res.status !== 'owned') throw new Error(`expected to own the key, found ${res.status}`)
  return res.claim
}

async function record(s: IdempotencyStore, key: string) {
  const kv = (await keyspace(etcd.client).range(`${s.prefix}/${key}`)).kvs[0]
  return kv && { ...kv, value: JSON.parse(kv.value.toString()) }
}

describe('begin / complete / fail', () => {
  it('the first caller owns the key; a duplicate finds it in progress, then the stored result', async () => {
    const s = store()
    const claim = owned(await s.begin('order-1', { session }))
    expect(claim.fence).toBeGreaterThan(0n)
    const dup = await s.begin('order-1', { session: other })
    expect(dup.status).toBe('in-progress')
    await s.complete(claim, { id: 1, total: 9.5 }, { ttl: 60 })
    const again = await s.begin('order-1', { session: other })
    expect(again).toMatchObject({ status: 'completed', result: { id: 1, total: 9.5 } })
    // The completed record lives on a lease of its own, not on the owner's session.
    const rec = await record(s, 'order-1')
    expect(rec.lease).not.toBe(session.leaseId)
    expect(rec.createRevision).toBe(claim.fence)
  })

  it('an undefined result is stored and returned as undefined', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    await s.complete(claim, undefined, { ttl: 60 })
    const again = await s.begin('k', { session: other })
    expect(again.status).toBe('completed')
    expect('result' in again && again.result).toBeUndefined()
  })

  it('fail removes the record: the next caller owns the key with a higher fence', async () => {
    const s = store()
    const first = owned(await s.begin('k', { session }))
    await s.fail(first)
    expect(await record(s, 'k')).toBeUndefined()
    const second = owned(await s.begin('k', { session: other }))
    expect(second.fence).toBeGreaterThan(first.fence)
    await s.fail(second)
  })

  it('a claim is finished once: a second complete or fail is a typed error', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    expect([claim.finished, claim.settled]).toEqual([false, false])
    await s.complete(claim, 1, { ttl: 60 })
    expect([claim.finished, claim.settled]).toEqual([true, true])
    await expect(s.complete(claim, 2, { ttl: 60 })).rejects.toThrow(InvalidArgumentError)
    await expect(s.complete(claim, 2, { ttl: 60 })).rejects.toThrow(InvalidStateError)
    await expect(s.fail(claim)).rejects.toThrow(/already completed or failed/)
    expect((await record(s, 'k')).value.result).toBe(1)
  })

  it("a claim from another store (another prefix) cannot touch this store's records", async () => {
    const a = store()
    const b = store()
    const claim = owned(await a.begin('k', { session }))
    await expect(b.fail(claim)).rejects.toThrow(InvalidArgumentError)
    await expect(b.complete(claim, 1, { ttl: 5 })).rejects.toThrow(/this store's begin/)
    expect((await record(a, 'k')).value.state).toBe('in-progress')
    await a.fail(claim)
  })

  it('without a session the store grants a lease for the claim and revokes it when settled', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { leaseTtl: 5 }))
    const lease = (await record(s, 'k')).lease
    await s.complete(claim, 'done', { ttl: 60 })
    const live = await etcd.client.leaseClient.leaseTimeToLive({ ID: lease })
    expect(Number(live.TTL)).toBe(-1) // revoked
    expect((await s.begin('k', { leaseTtl: 5 })).status).toBe('completed')
  })
})

describe('a duplicate can never change or delete the owner record', () => {
  it("a rejected or timed-out duplicate holds nothing it could delete; the owner's record survives it", async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    const before = await record(s, 'k')
    const dup = await s.begin('k', { session: other })
    expect(dup.status).toBe('in-progress')
    if (dup.status !== 'in-progress') return
    await expect(dup.wait({ signal: AbortSignal.timeout(100) })).rejects.toThrow()
    // The duplicate's session ends (as a crashed duplicate's would): the record is not on its lease.
    const dupSession = await Session.create(etcd.client, { ttl: 2 })
    expect((await s.begin('k', { session: dupSession })).status).toBe('in-progress')
    await dupSession.close()
    const after = await record(s, 'k')
    expect(after).toEqual(before)
    await s.complete(claim, 'ok', { ttl: 60 })
    expect((await record(s, 'k')).value).toMatchObject({ state: 'completed', result: 'ok' })
  })

  it("a stale owner (its lease ended, the key taken over) cannot complete or delete the new owner's record", async () => {
    const s = store()
    const stale = await Session.create(etcd.client, { ttl: 5 })
    const old = owned(await s.begin('k', { session: stale }))
    await stale.close() // its lease, and its in-progress record, are gone
    const current = owned(await s.begin('k', { session }))
    await expect(s.complete(old, 'stale answer', { ttl: 60 })).rejects.toThrow(IdempotencyClaimLostError)
    const stale2 = await Session.create(etcd.client, { ttl: 5 })
    const old2 = owned(await s.begin('k2', { session: stale2 }))
    await stale2.close()
    const current2 = owned(await s.begin('k2', { session }))
    await s.fail(old2) // fenced: no effect on the new record
    expect((await record(s, 'k')).value.state).toBe('in-progress')
    expect((await record(s, 'k2')).createRevision).toBe(current2.fence)
    await s.complete(current, 'fresh', { ttl: 60 })
    await s.complete(current2, 'fresh', { ttl: 60 })
    expect((await record(s, 'k')).value.result).toBe('fresh')
  })
})

describe('waiting for an in-progress record (watch, no polling)', () => {
  it('a waiter gets the result as soon as the owner completes', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    const dup = await s.begin('k', { session: other })
    if (dup.status !== 'in-progress') throw new Error(dup.status)
    const waiting = dup.wait({ signal: AbortSignal.timeout(10_000) })
    await s.complete(claim, [1, 2, 3], { ttl: 60 })
    expect(await waiting).toMatchObject({ status: 'completed', result: [1, 2, 3] })
  })

  it("a waiter learns 'gone' when the owner fails, or when its lease ends (crash)", async () => {
    const s = store()
    const claim = owned(await s.begin('failing', { session }))
    const dup = await s.begin('failing', { session: other })
    if (dup.status !== 'in-progress') throw new Error(dup.status)
    const waiting = dup.wait()
    await s.fail(claim)
    expect(await waiting).toEqual({ status: 'gone' })

    const crashing = await Session.create(etcd.client, { ttl: 1 })
    owned(await s.begin('crash', { session: crashing }))
    const dup2 = await s.begin('crash', { session: other })
    if (dup2.status !== 'in-progress') throw new Error(dup2.status)
    const waiting2 = dup2.wait({ signal: AbortSignal.timeout(15_000) })
    crashing.orphan() // stops the keepalive: the lease runs out as a crashed process's would
    expect(await waiting2).toEqual({ status: 'gone' })
    expect((await s.begin('crash', { session: other })).status).toBe('owned')
  })

  it('ttl 0: the waiting callers get the result, the record goes at once', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    const dup = await s.begin('k', { session: other })
    if (dup.status !== 'in-progress') throw new Error(dup.status)
    const waiting = dup.wait()
    await s.complete(claim, 'only for those in flight', { ttl: 0 })
    expect(await waiting).toMatchObject({ status: 'completed', result: 'only for those in flight' })
    expect(await record(s, 'k')).toBeUndefined()
  })

  it('fail with an error hands it to the waiting callers, then the record goes', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    const dup = await s.begin('k', { session: other })
    if (dup.status !== 'in-progress') throw new Error(dup.status)
    const waiting = dup.wait()
    const boom = Object.assign(new Error('upstream said 503'), { code: 'UPSTREAM' })
    await s.fail(claim, { error: boom })
    const outcome = await waiting
    expect(outcome.status).toBe('failed')
    expect(outcome.status === 'failed' && outcome.error.leaderError).toEqual({
      name: 'Error',
      message: 'upstream said 503',
      code: 'UPSTREAM',
    })
    expect(await record(s, 'k')).toBeUndefined()
  })

  it('a change between the read and the watch start is replayed from history (a value put and deleted meanwhile is not missed)', async () => {
    const ks = keyspace(etcd.client)
    const key = uniqueName('gap')
    const put = await ks.txn([], [ks.put(key, 'in-progress')])
    const seen = (await ks.range(key)).kvs[0]
    // Before anyone watches: the final value, then the delete (what a ttl-0 handover does).
    await ks.txn([], [ks.put(key, 'final')])
    await ks.del(key)
    const got = await waitChange(
      ks,
      seen,
      put.revision,
      (c) => (c.kv ? (c.kv.value.toString() === 'final' ? 'saw the put' : undefined) : 'saw only the delete'),
      AbortSignal.timeout(10_000),
    )
    expect(got).toBe('saw the put')
  })

  it('an unchanged key is watched from now: the next change is delivered', async () => {
    const ks = keyspace(etcd.client)
    const key = uniqueName('live')
    const put = await ks.txn([], [ks.put(key, 'a')])
    await ks.txn([], [ks.put(`${key}-unrelated`, 'x')]) // the store moves on, the key does not
    const seen = (await ks.range(key)).kvs[0]
    const waiting = waitChange(ks, seen, put.revision, (c) => c.kv?.value.toString(), AbortSignal.timeout(10_000))
    await new Promise((r) => setTimeout(r, 50))
    await ks.txn([], [ks.put(key, 'b')])
    expect(await waiting).toBe('b')
  })

  it('a waiter whose signal aborts stops waiting and leaves the record alone', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    const dup = await s.begin('k', { session: other })
    if (dup.status !== 'in-progress') throw new Error(dup.status)
    const ac = new AbortController()
    const waiting = dup.wait({ signal: ac.signal })
    ac.abort(new Error('gave up'))
    await expect(waiting).rejects.toThrow('gave up')
    expect((await record(s, 'k')).createRevision).toBe(claim.fence)
    await s.fail(claim)
  })
})

describe('payload checks', () => {
  it('a different payload hash under the same key is IdempotencyKeyMismatchError, in progress or completed', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session, payloadHash: hashPayload({ amount: 10 }) }))
    const err = await s.begin('k', { session: other, payloadHash: hashPayload({ amount: 11 }) }).catch((e) => e)
    expect(err).toBeInstanceOf(IdempotencyKeyMismatchError)
    expect(err.statusCode).toBe(422)
    await s.complete(claim, 'ok', { ttl: 60 })
    await expect(s.begin('k', { session: other, payloadHash: hashPayload({ amount: 11 }) })).rejects.toThrow(IdempotencyKeyMismatchError)
    // The same payload with its keys in another order is the same payload.
    expect(await s.begin('k', { session: other, payloadHash: hashPayload({ amount: 10 }) })).toMatchObject({
      status: 'completed',
      result: 'ok',
    })
  })

  it('hashPayload ignores key order and refuses what JSON cannot express', () => {
    expect(hashPayload({ a: 1, b: { c: 2, d: 3 } })).toBe(hashPayload({ b: { d: 3, c: 2 }, a: 1 }))
    expect(hashPayload([1, 2])).not.toBe(hashPayload([2, 1]))
    expect(hashPayload(null)).not.toBe(hashPayload(undefined))
    expect(() => hashPayload({ n: 10n })).toThrow(InvalidArgumentError)
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect(() => hashPayload(cyclic)).toThrow(InvalidArgumentError)
  })
})

describe('results etcd cannot keep', () => {
  it('over the value limit: a typed error before anything is written; the claim can still be failed', async () => {
    const s = store()
    const claim = owned(await s.begin('big', { session }))
    const err = await s.complete(claim, 'x'.repeat(1_600_000), { ttl: 60 }).catch((e) => e)
    expect(err).toBeInstanceOf(IdempotencyResultNotStorableError)
    expect(err.reason).toBe('too-large')
    expect(err.message).toMatch(/reference/)
    expect((await record(s, 'big')).value.state).toBe('in-progress')
    await s.fail(claim)
    expect(await record(s, 'big')).toBeUndefined()
  })

  it.each([
    ['a Date', { at: new Date(0) }, /result\.at is a Date/],
    ['a BigInt', { n: 1n }, /result\.n is a bigint/],
    ['NaN', [1, NaN], /result\[1\] is NaN/],
    ['a function', { f: () => 1 }, /result\.f is a function/],
    ['a Map', new Map(), /result is a Map/],
    ['undefined in an array', [undefined], /result\[0\] is undefined/],
  ])('not plain JSON (%s): refused, naming where', async (_what, result, mentions) => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    const err = await s.complete(claim, result, { ttl: 60 }).catch((e) => e)
    expect(err).toBeInstanceOf(IdempotencyResultNotStorableError)
    expect(err.reason).toBe('not-json')
    expect(err.message).toMatch(mentions)
    await s.fail(claim)
  })

  it('a value under the prefix that is not a record is a typed error naming the key', async () => {
    const s = store()
    await etcd.client.put(`${s.prefix}/foreign`).value('not json')
    await expect(s.begin('foreign', { session })).rejects.toThrow(/is not an idempotency record/)
  })
})

describe('record lifetimes are etcd leases', () => {
  it('a completed record goes when its ttl lease runs out; the key is free again', async () => {
    const s = store()
    const claim = owned(await s.begin('k', { session }))
    await s.complete(claim, 'short-lived', { ttl: 1 })
    const rec = await record(s, 'k')
    await waitDelete(etcd.client, `${s.prefix}/k`, rec.modRevision + 1n, AbortSignal.timeout(10_000))
    expect((await s.begin('k', { session: other })).status).toBe('owned')
  })
})

describe('properties', () => {
  it('any key and any plain-JSON result round-trip through a record, as the duplicate sees it', async () => {
    const s = store()
    await fc.assert(
      fc.asyncProperty(fc.string({ minLength: 1, maxLength: 40 }), fc.jsonValue(), async (key, result) => {
        const claim = owned(await s.begin(key, { session }))
        await s.complete(claim, result, { ttl: 30 })
        const dup = await s.begin(key, { session: other })
        expect(dup.status).toBe('completed')
        // (JSON has no -0: a stored -0 reads back as 0, as it would from any JSON store)
        expect(dup.status === 'completed' && dup.result).toEqual(JSON.parse(JSON.stringify(result)))
        await keyspace(etcd.client).del(`${s.prefix}/${key}`)
      }),
      { numRuns: 60 },
    )
  })
})
