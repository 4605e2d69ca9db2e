/**
 * Per-request state (middleware/state.ts, middleware/scope.ts): kept on Middy's
 * `request.internal` under keys of our own, per request even when Middy shares one `internal`
 * object between requests (its plugin option `internal`); one middleware instance used twice in
 * a chain, or in two chains, gives back each of its uses; and a short-circuit lets go of every
 * grant of the invocation, on every client.
 */
import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { LockedError, Mutex, Session } from '../../lib/index.js'
import { requestSlot } from '../../middleware/state.js'
import { etcdIdempotency, etcdLock, etcdPlugin, etcdSemaphore, leaderGuard, type EtcdEvent } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

/** Keys under `<name>/`: what an invocation left behind. */
const keysOf = (name: string) => etcd.keysUnder(`${name}/`)

describe('requestSlot', () => {
  it('keeps a value per request on request.internal, under a key no string key can be, and removes it on undefined', () => {
    const slot = requestSlot<number>('test')
    const a = { internal: {} as Record<string, unknown> }
    const b = { internal: {} as Record<string, unknown> }
    slot.set(a, 1)
    slot.set(b, 2)
    expect([slot.get(a), slot.get(b)]).toEqual([1, 2])
    // Invisible to string keys: @middy/util's getInternal(true, request) reads Object.keys.
    expect(Object.keys(a.internal)).toEqual([])
    expect(Object.getOwnPropertySymbols(a.internal)).toHaveLength(1)
    // Another slot is another key.
    const other = requestSlot<number>('test')
    expect(other.get(a)).toBeUndefined()
    slot.set(a, undefined)
    expect(slot.get(a)).toBeUndefined()
    expect(Object.getOwnPropertySymbols(a.internal)).toHaveLength(0)
  })

  it("one `internal` shared by two requests (Middy's plugin option) still gives each request only its own value", () => {
    const slot = requestSlot<string>('shared')
    const shared = {}
    const a = { internal: shared }
    const b = { internal: shared }
    slot.set(a, 'a')
    slot.set(b, 'b')
    expect([slot.get(a), slot.get(b)]).toEqual(['a', 'b'])
    slot.set(a, undefined)
    expect([slot.get(a), slot.get(b)]).toEqual([undefined, 'b'])
    slot.set(b, undefined)
    expect(Object.getOwnPropertySymbols(shared)).toHaveLength(0)
  })

  it('a request without `internal` (made by hand) gets one', () => {
    const slot = requestSlot<number>('bare')
    const r: { internal?: object } = {}
    slot.set(r, 3)
    expect(slot.get(r)).toBe(3)
  })
})

describe('one middleware instance, used more than once', () => {
  it('twice in one chain: each use holds its own lock while the handler runs, and each is released', async () => {
    const base = uniqueName('twice')
    const names = [`${base}-outer`, `${base}-inner`]
    let n = 0
    const events: EtcdEvent[] = []
    const lock = etcdLock({ name: () => names[n++ % 2], client: etcd.client, onEvent: (e) => events.push(e) })
    const handler = middy(async () => [(await keysOf(names[0])).length, (await keysOf(names[1])).length])
      .use(lock)
      .use(lock)
    expect(await handler({}, lambdaContext())).toEqual([1, 1])
    expect(await keysOf(names[0])).toEqual([])
    expect(await keysOf(names[1])).toEqual([])
    // The inner use is released first (Middy runs `after` in reverse).
    expect(events.map((e) => `${e.type} ${e.name}`)).toEqual([
      `acquired ${names[0]}`,
      `acquired ${names[1]}`,
      `released ${names[1]}`,
      `released ${names[0]}`,
    ])
    // The lease went back to the pool with nothing on it: the next invocation takes both locks at once.
    expect(await handler({}, lambdaContext())).toEqual([1, 1])
  })

  it('twice in one chain when the handler throws: onError releases both uses', async () => {
    const base = uniqueName('twice-error')
    let n = 0
    const lock = etcdLock({ name: () => `${base}-${n++ % 2}`, client: etcd.client })
    const handler = middy(async () => {
      throw new Error('handler failed')
    })
      .use(lock)
      .use(lock)
    await expect(handler({}, lambdaContext())).rejects.toThrow('handler failed')
    expect(await keysOf(`${base}-0`)).toEqual([])
    expect(await keysOf(`${base}-1`)).toEqual([])
  })

  it("in two chains, one nested in the other's handler: the inner request's after releases only its own lock", async () => {
    const base = uniqueName('nested')
    const lock = etcdLock<{ name: string }>({ name: (event) => event.name, client: etcd.client })
    const inner = middy(async () => (await keysOf(`${base}-outer`)).length).use(lock)
    const outer = middy(async () => {
      const outerKeysDuringInner = await inner({ name: `${base}-inner` }, lambdaContext())
      return {
        outerKeysDuringInner,
        innerKeysAfter: (await keysOf(`${base}-inner`)).length,
        outerKeysAfter: (await keysOf(`${base}-outer`)).length,
      }
    }).use(lock)
    expect(await outer({ name: `${base}-outer` }, lambdaContext())).toEqual({
      outerKeysDuringInner: 1,
      innerKeysAfter: 0,
      outerKeysAfter: 1,
    })
    expect(await keysOf(`${base}-outer`)).toEqual([])
  })

  it("with one `internal` shared by every request (Middy's plugin option), concurrent invocations never overlap and leave nothing", async () => {
    const name = uniqueName('shared-internal')
    let inside = 0
    let most = 0
    const handler = middy(
      async () => {
        most = Math.max(most, ++inside)
        await sleep(10)
        inside--
      },
      { internal: {} },
    ).use(etcdLock({ name, client: etcd.client }))
    await Promise.all(Array.from({ length: 6 }, () => handler({}, lambdaContext())))
    expect(most).toBe(1)
    expect(await keysOf(name)).toEqual([])
  })
})

describe('a short-circuit lets go of every grant of the invocation', () => {
  it('a try-lock miss inside a lock, a semaphore on a second client and an idempotency claim: all released before the refusal, the key free for the next call', async () => {
    const base = uniqueName('short')
    const [outerLock, sem, held, idem] = [`${base}-lock`, `${base}-sem`, `${base}-held`, `${base}-idem`]
    const other = etcd.client.namespace('') // a second client object: a scope of its own
    const holder = new Mutex(await Session.create(etcd.client, { ttl: 5 }), held)
    await holder.lock()
    const events: EtcdEvent[] = []
    const onEvent = (e: EtcdEvent) => events.push(e)
    let ran = false
    const handler = middy(async () => {
      ran = true
      return 'ran'
    })
      .use(etcdLock({ name: outerLock, client: etcd.client, onEvent }))
      .use(etcdSemaphore({ name: sem, permits: 1, client: other, onEvent }))
      .use(etcdIdempotency({ key: () => idem, prefix: `${base}-records`, client: etcd.client, onEvent }))
      .use(etcdLock({ name: held, acquire: 'try', client: etcd.client, onEvent }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(LockedError)
    expect(ran).toBe(false)
    expect(await keysOf(outerLock)).toEqual([])
    expect(await etcd.keysUnder(`${sem}/holders/`)).toEqual([])
    expect(await keysOf(`${base}-records`)).toEqual([])
    expect(await keysOf(held)).toEqual([holder.key])
    expect(
      events
        .filter((e) => e.type === 'released')
        .map((e) => e.primitive)
        .sort(),
    ).toEqual(['idempotency', 'lock', 'semaphore'])
    // Nothing was left to the leases: the same call runs at once once the lock is free.
    await holder.unlock()
    expect(await handler({}, lambdaContext())).toBe('ran')
  })

  it("a follower's answer inside a lock: the lock is released before the follower answers", async () => {
    const base = uniqueName('short-follower')
    const leader = middy(async () => {
      const follower = middy(async () => 'follower ran', etcdPlugin())
        .use(etcdLock({ name: `${base}-lock`, client: etcd.client }))
        .use(
          leaderGuard({ election: `${base}-election`, client: etcd.client, onFollower: async () => (await keysOf(`${base}-lock`)).length }),
        )
      return follower({}, lambdaContext())
    }).use(leaderGuard({ election: `${base}-election`, client: etcd.client }))
    // The lock's key was gone by the time onFollower ran.
    expect(await leader({}, lambdaContext())).toBe(0)
  })
})
