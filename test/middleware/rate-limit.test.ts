/**
 * etcdRateLimit's limiters, kept per client between invocations (middleware/rate-limit.ts): a
 * name function can make any number of them, so idle ones are closed past 100 — and only idle
 * ones, since closing a limiter rejects the calls queued on it (issue 23, item 3).
 */
import middy from '@middy/core'
import type { Etcd3 } from 'etcd3'
import { describe, expect, it } from 'vitest'
import { etcdRateLimit, type EtcdEvent } from '../../middleware/index.js'
import { uniqueName, until, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

interface TenantEvent {
  t: string
}

/** The IDs of the leases etcd holds now. */
async function leaseIds(): Promise<Set<string>> {
  return new Set((await (etcd.client as unknown as Etcd3).leaseClient.leaseLeases()).leases.map((l) => String(l.ID)))
}

describe('etcdRateLimit with a name per tenant', () => {
  it('a call queued on one tenant is admitted although 100 other tenants called meanwhile', async () => {
    const prefix = uniqueName('tenant')
    const events: EtcdEvent[] = []
    const handler = middy(async (e: TenantEvent) => e.t).use(
      // One admission per 4 s: the second call of a tenant queues that long.
      etcdRateLimit<TenantEvent>({
        name: (e) => `${prefix}/${e.t}`,
        rate: 1,
        per: 4_000,
        client: etcd.newClient(),
        onEvent: (e) => events.push(e),
      }),
    )
    expect(await handler({ t: 'first' }, lambdaContext())).toBe('first')
    const queued = handler({ t: 'first' }, lambdaContext(30_000))
    await until('the second call of tenant "first" to queue', 5_000, () => events.some((e) => e.type === 'waiting'), 10)
    // 100 more names while it waits: before the fix, the 101st closed the limiter of "first",
    // and its queued call failed with "InvalidArgumentError: RateLimiter … was closed".
    const others = await Promise.all(Array.from({ length: 100 }, (_, i) => handler({ t: `t${i}` }, lambdaContext())))
    expect(others).toEqual(Array.from({ length: 100 }, (_, i) => `t${i}`))
    expect(events.filter((e) => e.type === 'waiting').length).toBe(1) // still queued when the others were done
    expect(await queued).toBe('first')
  }, 60_000)

  it('idle limiters are still closed past 100: 110 tenants, one after another, keep at most 100 leases', async () => {
    const prefix = uniqueName('tenant-idle')
    // Counted as leases granted since `before`: the previous test's limiters (one admission per
    // 4 s) still end their leases during this one, so a plain count difference came out at 99.
    const before = await leaseIds()
    const granted = async () => [...(await leaseIds())].filter((id) => !before.has(id)).length
    // 1000 per second: a token is refilled within ms, so a closed limiter revokes its lease at once.
    const handler = middy(async (e: TenantEvent) => e.t).use(
      etcdRateLimit<TenantEvent>({ name: (e) => `${prefix}/${e.t}`, rate: 1000, per: 1000, client: etcd.newClient() }),
    )
    for (let i = 0; i < 110; i++) expect(await handler({ t: `t${i}` }, lambdaContext())).toBe(`t${i}`)
    await until('the 10 least recently used limiters to end their leases', 10_000, async () => (await granted()) <= 100)
    expect(await granted()).toBe(100)
  }, 60_000)
})
