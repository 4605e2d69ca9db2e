import middy from '@middy/core'
import { describe, expect, it, vi } from 'vitest'
import { EtcdUnavailableError, LockTimeoutError, Mutex, Session, createClient, type EtcdClient } from '../../lib/index.js'
import { etcdLock, type EtcdEvent } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'
import { tcpProxy } from '../support/tcp-proxy.js'

// The middleware lease pool lends a finished invocation's lease to the next warm invocation of
// the process. It must never lend one that is dead, or one that still carries a key nobody
// could delete: warm traffic would keep that key alive for as long as it lasts.

const etcd = useEtcd()

/** A handler holding lock `name` (through `client`), reporting the lease of each hold. */
function lockHandler(client: EtcdClient, name: string, options: { ttl?: number; waitMs?: number } = {}) {
  const leases: string[] = []
  const handler = middy(async () => 'ran').use(
    etcdLock({
      name,
      client,
      ttl: options.ttl ?? 10,
      waitMs: options.waitMs,
      onEvent: (e: EtcdEvent) => {
        if (e.type === 'acquired') leases.push(e.key!.split('/').pop()!)
      },
    }),
  )
  return { handler, leases }
}

describe('lease pool', () => {
  it('a waiter key whose clean-up failed is never kept alive by warm invocations: a new contender gets the lock within one TTL of its release', async () => {
    const ttl = 6
    const L = uniqueName('ghost-L')
    const M = uniqueName('ghost-M')
    const proxy = await tcpProxy(etcd.cluster.endpoints[0])
    const fnClient = createClient({ endpoints: [proxy.endpoint], callTimeoutMs: 300 })
    try {
      const holder = new Mutex(await Session.create(etcd.client, { ttl: 10 }), L)
      await holder.lock()
      // An invocation waits for L; etcd becomes unreachable for it, the wait gives up during the
      // outage and the delete of its waiter key cannot be sent.
      const waiting = lockHandler(fnClient, L, { ttl, waitMs: 1_000 }).handler({}, lambdaContext())
      const outcome = waiting.then(
        () => 'acquired',
        (err: unknown) => err,
      )
      for (let i = 0; i < 100 && (await etcd.keysUnder(`${L}/`)).length < 2; i++) await sleep(20) // it is queued
      proxy.cut()
      await sleep(1_500)
      proxy.heal()
      // Whichever comes first ends the wait: its budget (LockTimeoutError) or a call that could
      // not reach etcd (EtcdUnavailableError). Either way the waiter key could not be deleted.
      const failure = await outcome
      expect(
        [LockTimeoutError, EtcdUnavailableError].some((type) => failure instanceof type),
        `the wait ended with ${String(failure)}`,
      ).toBe(true)
      // Warm traffic on another lock goes on through the same client (and its lease pool).
      const warm = lockHandler(fnClient, M, { ttl })
      let stop = false
      let warmRuns = 0
      const traffic = (async () => {
        while (!stop) {
          // Right after the outage the client may still be reconnecting: such a call fails fast.
          if ((await warm.handler({}, lambdaContext()).catch(() => 'failed')) === 'ran') warmRuns++
          await sleep(100)
        }
      })()
      await sleep(500)
      await holder.unlock()
      const releasedAt = performance.now()
      const contender = new Mutex(await Session.create(etcd.client, { ttl: 10 }), L)
      let grantedAt: number | undefined
      while (grantedAt === undefined && performance.now() - releasedAt < (ttl + 5) * 1000) {
        try {
          await contender.tryLock()
          grantedAt = performance.now()
        } catch {
          await sleep(100)
        }
      }
      stop = true
      await traffic
      console.log(
        `[lease-pool] the wait ended with ${(failure as Error).name}; contender granted ${grantedAt === undefined ? 'never' : `${(grantedAt - releasedAt).toFixed(0)} ms`} after the release; ${warmRuns} warm invocations meanwhile`,
      )
      expect(warmRuns).toBeGreaterThan(5)
      expect(grantedAt, 'the ghost waiter key outlived its lease while warm traffic ran').toBeDefined()
      // One TTL: the stranded lease is left to expire (etcd checks expiries every 500 ms; slack for a loaded machine).
      expect(grantedAt! - releasedAt).toBeLessThan(ttl * 1000 + 2_000)
      await contender.unlock()
    } finally {
      fnClient.close()
      await proxy.close()
    }
  }, 40_000)

  it('a pooled lease revoked by an operator fails no invocation, and is never lent again', async () => {
    const client = etcd.newClient()
    const name = uniqueName('revoked')
    const { handler, leases } = lockHandler(client, name)
    expect(await handler({}, lambdaContext())).toBe('ran')
    const revoked = leases[0]
    await etcd.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${revoked}`).toString() })
    const failures: unknown[] = []
    for (let i = 0; i < 30; i++) await handler({}, lambdaContext()).catch((err: unknown) => failures.push(err))
    expect(failures).toEqual([])
    expect(leases.slice(1).filter((l) => l === revoked)).toEqual([])
    // After the retry on a fresh lease, warm invocations reuse that one again.
    expect(new Set(leases.slice(1)).size).toBe(1)
  })

  it('a lease revoked while concurrent invocations start: none fails', async () => {
    const client = etcd.newClient()
    const name = uniqueName('revoked-concurrent')
    const { handler, leases } = lockHandler(client, name, { waitMs: 5_000 })
    await Promise.all(Array.from({ length: 4 }, () => handler({}, lambdaContext())))
    for (const lease of new Set(leases)) await etcd.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${lease}`).toString() })
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => handler({}, lambdaContext())))
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([])
  })

  it('lends no lease with less than a third of its TTL left: the invocation gets a new grant instead of failing when the renewal is late', async () => {
    const client = etcd.newClient()
    const name = uniqueName('late')
    const ttl = 3
    const { handler, leases } = lockHandler(client, name, { ttl })
    await handler({}, lambdaContext())
    await handler({}, lambdaContext())
    expect(leases[1]).toBe(leases[0]) // warm reuse, renewed
    // Its bound is ~2.5 s past that renewal (TTL less the 0.5 s margin): 1.8 s later ~0.7 s is
    // left, under a third of the TTL (1 s) but not gone.
    await sleep(1_800)
    expect(await handler({}, lambdaContext())).toBe('ran')
    expect(leases[2]).not.toBe(leases[1])
  })

  it('judges a pooled lease by both clocks: after a freeze that stalled the monotonic clock, it grants a new lease', async () => {
    const client = etcd.newClient()
    const name = uniqueName('frozen')
    const ttl = 5
    const { handler, leases } = lockHandler(client, name, { ttl })
    await handler({}, lambdaContext())
    await handler({}, lambdaContext())
    expect(leases[1]).toBe(leases[0]) // warm reuse
    // Seen from inside a frozen VM: performance.now() stood still while a whole TTL passed.
    const realNow = Date.now
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ttl * 1000)
    try {
      await handler({}, lambdaContext())
    } finally {
      clock.mockRestore()
    }
    expect(leases[2]).not.toBe(leases[0])
  })
})
