import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { LockedError, LockTimeoutError, InvalidArgumentError, Mutex, Session } from '../../lib/index.js'
import { etcdLock, type EtcdEvent } from '../../middleware/index.js'
import { uniqueName, useEtcd, sleep } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

describe('etcdLock', () => {
  it('50 concurrent invocations doing read-modify-write count exactly 50 with increasing fences', async () => {
    const name = uniqueName('counter')
    const counterKey = `${name}-value`
    const fences: bigint[] = []
    const handler = middy(async (_event: unknown, context: any) => {
      const current = Number((await etcd.client.get(counterKey).string()) ?? '0')
      await sleep(1)
      await etcd.client.put(counterKey).value(String(current + 1))
      fences.push(context.etcd.lock.fence)
      return current + 1
    }).use(etcdLock({ name, client: etcd.client }))
    await Promise.all(Array.from({ length: 50 }, () => handler({}, lambdaContext())))
    expect(await etcd.client.get(counterKey).string()).toBe('50')
    for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1])
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
  })

  it('releases when the handler throws', async () => {
    const name = uniqueName('throws')
    const handler = middy(async () => {
      throw new Error('boom')
    }).use(etcdLock({ name, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toThrow('boom')
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
  })

  it("releases on Middy's early timeout", async () => {
    const name = uniqueName('timeout')
    const handler = middy(
      async () => {
        await sleep(5_000)
      },
      { timeoutEarlyInMillis: 50 },
    ).use(etcdLock({ name, client: etcd.client }))
    await expect(handler({}, lambdaContext(600))).rejects.toThrow()
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
  })

  it("mode 'try' short-circuits with onLocked and releases an outer lock", async () => {
    const outer = uniqueName('outer')
    const inner = uniqueName('inner')
    const holder = new Mutex(await Session.create(etcd.client, { ttl: 5 }), inner)
    await holder.lock()
    const events: EtcdEvent[] = []
    let ran = false
    const handler = middy(async () => {
      ran = true
      return 'ran'
    })
      .use(etcdLock({ name: outer, client: etcd.client }))
      .use(etcdLock({ name: inner, acquire: 'try', client: etcd.client, onLocked: () => 'busy', onEvent: (e) => events.push(e) }))
    expect(await handler({}, lambdaContext())).toBe('busy')
    expect(ran).toBe(false)
    expect(events.map((e) => e.type)).toEqual(['skipped'])
    expect(await etcd.keysUnder(`${outer}/`)).toEqual([])
    await holder.unlock()
  })

  it("mode 'try' throws LockedError by default", async () => {
    const name = uniqueName('try')
    const holder = new Mutex(await Session.create(etcd.client, { ttl: 5 }), name)
    await holder.lock()
    const handler = middy(async () => 'ran').use(etcdLock({ name, acquire: 'try', client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(LockedError)
    await holder.unlock()
    expect(await handler({}, lambdaContext())).toBe('ran')
  })

  it('gives up waiting within the wait budget', async () => {
    const name = uniqueName('budget')
    const holder = new Mutex(await Session.create(etcd.client, { ttl: 5 }), name)
    await holder.lock()
    const handler = middy(async () => 'ran').use(etcdLock({ name, waitMs: 300, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(LockTimeoutError)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([holder.key])
    await holder.unlock()
  })

  it('reuses the lease on a warm invocation shortly after, and grants a new one after an idle gap > TTL', async () => {
    const name = uniqueName('warm')
    const keys: string[] = []
    const handler = middy(async (_e: unknown, context: any) => {
      keys.push(context.etcd.lock.key)
    }).use(etcdLock({ name, ttl: 2, client: etcd.client }))
    await handler({}, lambdaContext())
    await sleep(100)
    await handler({}, lambdaContext())
    expect(keys[1]).toBe(keys[0])
    await sleep(2_600)
    await handler({}, lambdaContext())
    expect(keys[2]).not.toBe(keys[0])
  })

  it("emits 'waiting' when it has to queue, then 'acquired' with the time waited", async () => {
    const name = uniqueName('waiting')
    const holder = new Mutex(await Session.create(etcd.client, { ttl: 5 }), name)
    await holder.lock()
    const events: EtcdEvent[] = []
    const handler = middy(async () => 'ran').use(etcdLock({ name, client: etcd.client, onEvent: (e) => events.push(e) }))
    const running = handler({}, lambdaContext())
    await sleep(200)
    expect(events.map((e) => e.type)).toEqual(['waiting'])
    await holder.unlock()
    await running
    expect(events.map((e) => e.type)).toEqual(['waiting', 'acquired', 'released'])
    expect(events[1].waitedMs).toBeGreaterThanOrEqual(150)
  })

  it('rejects bad options at construction, naming the option', () => {
    expect(() => etcdLock({} as any)).toThrow(/`name` is required/)
    expect(() => etcdLock({ name: 'x', waitMs: -1 })).toThrow(/`waitMs`/)
    expect(() => etcdLock({ name: 'x', acquire: 'maybe' as any })).toThrow(/`acquire`/)
    expect(() => etcdLock({ name: 'x', ttl: 0 })).toThrow(InvalidArgumentError)
    expect(() => etcdLock({ name: 'x', bogus: 1 } as any)).toThrow(/unknown option `bogus`/)
  })
})
