/**
 * etcdSemaphore and etcdRateLimit (issue 14): thin adapters over Semaphore and RateLimiter.
 * The semaphore is released on every path like etcdLock; the rate limit's 'try' answers 429
 * with Retry-After and first releases what outer middlewares hold.
 */
import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { LockedError, LockTimeoutError, RateLimitedError, Semaphore, Session } from '../../lib/index.js'
import { etcdLock, etcdPlugin, etcdRateLimit, etcdSemaphore, type EtcdEvent } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

const keysUnder = (prefix: string) => etcd.client.getAll().prefix(prefix).keys()

describe('etcdSemaphore', () => {
  it('24 concurrent invocations with permits 3: at most 3 handlers at once, each with its grant, all released', async () => {
    const name = uniqueName('mw-sem')
    let running = 0
    let most = 0
    const grants: { key: string; fence: bigint; aborted: boolean }[] = []
    const handler = middy(async (_event: unknown, context: any) => {
      most = Math.max(most, ++running)
      const { key, fence, signal, ownerCompare } = context.etcd.semaphore
      expect(typeof ownerCompare).toBe('function')
      grants.push({ key, fence, aborted: signal.aborted })
      await sleep(20)
      running--
      return 'ok'
    }).use(etcdSemaphore({ name, permits: 3, client: etcd.client }))
    const results = await Promise.all(Array.from({ length: 24 }, () => handler({}, lambdaContext())))
    expect(results).toEqual(Array(24).fill('ok'))
    expect(most).toBeLessThanOrEqual(3)
    expect(new Set(grants.map((g) => g.fence)).size).toBe(24)
    expect(grants.every((g) => g.key.startsWith(`${name}/holders/`) && !g.aborted)).toBe(true)
    expect(await keysUnder(`${name}/`)).toEqual([`${name}/config`])
  })

  it("releases when the handler throws, and on Middy's early timeout", async () => {
    const name = uniqueName('mw-sem-err')
    const throwing = middy(async () => {
      throw new Error('boom')
    }).use(etcdSemaphore({ name, permits: 1, client: etcd.client }))
    await expect(throwing({}, lambdaContext())).rejects.toThrow('boom')
    const slow = middy(async () => sleep(5_000), { timeoutEarlyInMillis: 50 }).use(etcdSemaphore({ name, permits: 1, client: etcd.client }))
    await expect(slow({}, lambdaContext(600))).rejects.toThrow()
    expect(await keysUnder(`${name}/`)).toEqual([`${name}/config`])
  })

  it("acquire 'try' short-circuits with onLocked when every permit is held, releasing an outer lock first", async () => {
    const outer = uniqueName('mw-outer')
    const name = uniqueName('mw-sem-try')
    const holder = new Semaphore(await Session.create(etcd.client, { ttl: 5 }), name, 1)
    await holder.acquire()
    const events: EtcdEvent[] = []
    const handler = middy(async () => 'ran')
      .use(etcdLock({ name: outer, client: etcd.client }))
      .use(etcdSemaphore({ name, permits: 1, acquire: 'try', client: etcd.client, onLocked: () => 'busy', onEvent: (e) => events.push(e) }))
    expect(await handler({}, lambdaContext())).toBe('busy')
    expect(events.map((e) => [e.type, e.primitive])).toEqual([['skipped', 'semaphore']])
    expect(await keysUnder(`${outer}/`)).toEqual([])
    const plain = middy(async () => 'ran').use(etcdSemaphore({ name, permits: 1, acquire: 'try', client: etcd.client }))
    await expect(plain({}, lambdaContext())).rejects.toBeInstanceOf(LockedError)
    await holder.release()
    expect(await plain({}, lambdaContext())).toBe('ran')
    await holder.session.close()
  })

  it('gives up waiting within waitMs with LockTimeoutError naming the semaphore, leaving no queue key', async () => {
    const name = uniqueName('mw-sem-budget')
    const holder = new Semaphore(await Session.create(etcd.client, { ttl: 5 }), name, 1)
    await holder.acquire()
    const handler = middy(async () => 'ran').use(etcdSemaphore({ name, permits: 1, waitMs: 200, client: etcd.client }))
    const err = await handler({}, lambdaContext()).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(LockTimeoutError)
    expect((err as Error).message).toMatch(/semaphore ".*" not acquired within/)
    expect(await keysUnder(`${name}/waiters/`)).toEqual([])
    await holder.release()
    await holder.session.close()
  })

  it('with etcdPlugin, the permit is released even when a later middleware answers early', async () => {
    const name = uniqueName('mw-sem-plugin')
    const handler = middy(async () => 'ran', etcdPlugin())
      .use(etcdSemaphore({ name, permits: 1, client: etcd.client }))
      .use({ before: async () => 'cached' })
    expect(await handler({}, lambdaContext())).toBe('cached')
    expect(await keysUnder(`${name}/holders/`)).toEqual([])
  })
})

describe('etcdRateLimit', () => {
  it("acquire 'try': admits within the bucket, then answers 429 with Retry-After and releases an outer lock", async () => {
    const name = uniqueName('mw-rl')
    const outer = uniqueName('mw-rl-outer')
    const events: EtcdEvent[] = []
    let ran = 0
    const handler = middy(async (_e: unknown, context: any) => {
      ran++
      expect(context.etcd.rateLimit.name).toBe(name)
      return { statusCode: 200 }
    })
      .use(etcdLock({ name: outer, client: etcd.client }))
      .use(etcdRateLimit({ name, rate: 1, per: 60_000, burst: 1, acquire: 'try', client: etcd.client, onEvent: (e) => events.push(e) }))
    expect(await handler({}, lambdaContext())).toEqual({ statusCode: 200 })
    expect(await handler({}, lambdaContext())).toEqual({ statusCode: 200 })
    const limited = (await handler({}, lambdaContext())) as any
    expect(ran).toBe(2)
    expect(limited.statusCode).toBe(429)
    expect(Number(limited.headers['Retry-After'])).toBeGreaterThanOrEqual(1)
    expect(JSON.parse(limited.body).retryAfterMs).toBeGreaterThan(0)
    expect(events.map((e) => e.type)).toEqual(['acquired', 'acquired', 'skipped'])
    expect(await keysUnder(`${outer}/`)).toEqual([])
  })

  it("onLimited shapes the answer; acquire 'wait' queues until the call fits, and gives up within waitMs with RateLimitedError", async () => {
    const name = uniqueName('mw-rl-wait')
    const custom = middy(async () => 'ran').use(
      etcdRateLimit({ name, rate: 10, burst: 0, acquire: 'try', client: etcd.client, onLimited: (_r, ms) => `later:${ms > 0}` }),
    )
    expect(await custom({}, lambdaContext())).toBe('ran')
    expect(await custom({}, lambdaContext())).toBe('later:true')
    const waiting = middy(async (_e: unknown, context: any) => context.etcd.rateLimit.waitedMs).use(
      etcdRateLimit({ name, rate: 10, burst: 0, client: etcd.client }),
    )
    const waited = await waiting({}, lambdaContext())
    expect(waited).toBeGreaterThan(0)
    const slow = middy(async () => 'ran').use(
      etcdRateLimit({ name: uniqueName('mw-rl-slow'), rate: 1, per: 60_000, burst: 0, waitMs: 150, client: etcd.client }),
    )
    expect(await slow({}, lambdaContext())).toBe('ran')
    const err = await slow({}, lambdaContext()).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(RateLimitedError)
    expect((err as RateLimitedError).retryAfterMs).toBe(60_000)
    expect((err as RateLimitedError).statusCode).toBe(429)
  })
})
