// Wait and hold spans of every primitive but the Mutex (test/telemetry/locks.test.ts), their
// outcomes and metrics, and the STM's span, with the OTel SDK registered.
import { describe, expect, it } from 'vitest'
import {
  Barrier,
  DoubleBarrier,
  Election,
  IdempotencyStore,
  LockedError,
  RateLimiter,
  RWMutex,
  runSTM,
  Semaphore,
  Session,
  TELEMETRY_ATTRIBUTES as A,
} from '../../lib/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { useOtelSdk } from './otel-sdk.js'

const etcd = useEtcd()
const otel = await useOtelSdk()

const outcomes = (span: string, name: string) =>
  otel
    .spansOf(span, { [A.name]: name })
    .map((s) => s.attributes[A.outcome])
    .sort()

describe('primitive telemetry', () => {
  it('RWMutex: read and write waits and holds, a writer’s try-miss `locked`', async () => {
    const name = uniqueName('rw')
    const [a, b] = [await Session.create(etcd.client), await Session.create(etcd.client)]
    const reader = new RWMutex(a, name)
    await reader.rLock()
    await expect(new RWMutex(b, name).tryLock()).rejects.toBeInstanceOf(LockedError)
    await reader.rUnlock()
    const writer = new RWMutex(b, name)
    await writer.lock()
    await writer.unlock()
    expect(outcomes('wait rwlock.read', name)).toEqual(['acquired'])
    expect(outcomes('wait rwlock.write', name)).toEqual(['acquired', 'locked'])
    expect(outcomes('hold rwlock.read', name)).toEqual(['released'])
    expect(outcomes('hold rwlock.write', name)).toEqual(['released'])
    const [writeHold] = otel.spansOf('hold rwlock.write', { [A.name]: name })
    expect(writeHold.attributes[A.fence]).toBe(
      otel.spansOf('wait rwlock.write', { [A.name]: name, [A.outcome]: 'acquired' })[0].attributes[A.fence],
    )
    expect(await otel.recorded('middy_etcd.wait.duration', { [A.primitive]: 'rwlock.write', [A.outcome]: 'locked' })).toBeGreaterThan(0)
    await Promise.all([a.close(), b.close()])
  })

  it('Election: a campaign is a wait, the term a hold ending at resign; a lost campaignOnce is `locked`', async () => {
    const name = uniqueName('elect')
    const [a, b] = [await Session.create(etcd.client), await Session.create(etcd.client)]
    const leader = new Election(a, name)
    await leader.campaign('a')
    expect((await new Election(b, name).campaignOnce('b')).elected).toBe(false)
    await leader.resign()
    expect(outcomes('wait election', name)).toEqual(['acquired', 'locked'])
    const [term] = otel.spansOf('hold election', { [A.name]: name })
    expect(term.attributes[A.outcome]).toBe('released')
    expect(term.attributes[A.fence]).toBe(otel.spansOf('wait election', { [A.name]: name, [A.outcome]: 'acquired' })[0].attributes[A.fence])
    await Promise.all([a.close(), b.close()])
  })

  it('Semaphore: acquire and release, a full try `locked`; an aborted wait `aborted`', async () => {
    const name = uniqueName('sem')
    const [a, b] = [await Session.create(etcd.client), await Session.create(etcd.client)]
    const holder = new Semaphore(a, name, 1)
    await holder.acquire()
    await expect(new Semaphore(b, name, 1).tryAcquire()).rejects.toBeInstanceOf(LockedError)
    const stop = new AbortController()
    const waiting = new Semaphore(b, name, 1).acquire({ signal: stop.signal, onWaiting: () => stop.abort() })
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' })
    await holder.release()
    expect(outcomes('wait semaphore', name)).toEqual(['aborted', 'acquired', 'locked'])
    expect(outcomes('hold semaphore', name)).toEqual(['released'])
    expect(typeof otel.spansOf('hold semaphore', { [A.name]: name })[0].attributes[A.fence]).toBe('number')
    await Promise.all([a.close(), b.close()])
  })

  it('RateLimiter: an admitted acquire and decide, a refused decide `rejected`, admissions and rejections counted', async () => {
    const name = uniqueName('rate')
    const limiter = new RateLimiter(etcd.client, name, { rate: 1, per: 60_000, burst: 1 })
    const admissions = await otel.counted('middy_etcd.rate_limit.admissions')
    const rejections = await otel.counted('middy_etcd.rate_limit.rejections')
    await limiter.acquire()
    expect((await limiter.decide()).admitted).toBe(true)
    expect((await limiter.decide()).admitted).toBe(false)
    expect(outcomes('wait rate_limit', name)).toEqual(['acquired', 'acquired', 'rejected'])
    expect(await otel.counted('middy_etcd.rate_limit.admissions')).toBe(admissions + 2)
    expect(await otel.counted('middy_etcd.rate_limit.rejections')).toBe(rejections + 1)
    await limiter.close()
  })

  it('Barrier and DoubleBarrier: the wait for the barrier to go, enter and leave', async () => {
    const name = uniqueName('barrier')
    const barrier = new Barrier(etcd.client, name)
    await barrier.hold()
    const waiting = new Barrier(etcd.client, name).wait()
    await barrier.release()
    await waiting
    expect(outcomes('wait barrier', name)).toEqual(['acquired'])

    const double = uniqueName('double')
    const session = await Session.create(etcd.client)
    const only = new DoubleBarrier(session, double, 1)
    await only.enter()
    await only.leave()
    expect(outcomes('wait double_barrier.enter', double)).toEqual(['acquired'])
    expect(outcomes('wait double_barrier.leave', double)).toEqual(['acquired'])
    await session.close()
  })

  it('IdempotencyStore: the owner `acquired` with its fence, a second caller `in_progress` then `duplicate`', async () => {
    const store = new IdempotencyStore(etcd.client, uniqueName('idem'))
    const key = uniqueName('order')
    const first = await store.begin(key)
    if (first.status !== 'owned') throw new Error(`expected to own ${key}`)
    const second = await store.begin(key)
    if (second.status !== 'in-progress') throw new Error(`expected ${key} in progress`)
    const waited = second.wait()
    await store.complete(first.claim, { ok: true }, { ttl: 60 })
    expect((await waited).status).toBe('completed')
    expect((await store.begin(key)).status).toBe('completed')
    expect(outcomes('wait idempotency', key)).toEqual(['acquired', 'duplicate', 'duplicate', 'in_progress'])
    const [owner] = otel.spansOf('wait idempotency', { [A.name]: key, [A.outcome]: 'acquired' })
    expect(owner.attributes[A.fence]).toBe(Number(first.claim.fence))
  })

  it('runSTM: one span with its attempts and conflicts; conflicts counted', async () => {
    const key = uniqueName('stm')
    const before = await otel.counted('middy_etcd.stm.conflicts')
    let runs = 0
    await runSTM(etcd.client, async (stm) => {
      const n = Number((await stm.get(key)) || '0')
      // The first run is overtaken by a write of the key it read: its commit conflicts.
      if (runs++ === 0) await etcd.client.put(key).value('10')
      stm.put(key, String(n + 1))
    })
    expect(await etcd.client.get(key).string()).toBe('11')
    const [span] = otel.spansOf('stm').filter((s) => s.attributes[A.attempts] === 2)
    expect(span.attributes[A.conflicts]).toBe(1)
    expect(await otel.counted('middy_etcd.stm.conflicts')).toBe(before + 1)
  })
})
