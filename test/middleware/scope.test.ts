import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { LockTimeoutError, Mutex, Session } from '../../lib/index.js'
import { etcdLock, type EtcdEvent } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

/** Keys under `prefix` attached to a lease: what an invocation could have left locked. */
async function leasedKeys(prefix: string) {
  const res = await etcd.client.kv.range({
    key: Buffer.from(prefix),
    range_end: Buffer.from(prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)),
  })
  return res.kvs.filter((kv) => kv.lease !== '0').map((kv) => kv.key.toString())
}

describe('cleanup in every path', () => {
  it('an onError of an inner middleware that throws does not keep the outer lock: the lease expiry frees it', async () => {
    const name = uniqueName('onerror-throws')
    const handler = middy(async () => {
      throw new Error('handler failed')
    })
      .use(etcdLock({ name, ttl: 1, client: etcd.client }))
      .use({
        onError: () => {
          throw new Error('another onError failed')
        },
      })
    // Remaining time 1 s: past it, the invocation stops its keepalive and the lease runs out.
    await expect(handler({}, lambdaContext(1_000))).rejects.toThrow('another onError failed')
    let keys = await etcd.keysUnder(`${name}/`)
    for (let i = 0; i < 60 && keys.length > 0; i++) {
      await sleep(100)
      keys = await etcd.keysUnder(`${name}/`)
    }
    expect(keys).toEqual([])
  })

  it('an onError that throws after ours ran leaves nothing locked', async () => {
    const name = uniqueName('onerror-outer-throws')
    const handler = middy(async () => {
      throw new Error('handler failed')
    })
      .use({
        onError: () => {
          throw new Error('outer onError failed')
        },
      })
      .use(etcdLock({ name, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toThrow('outer onError failed')
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
  })

  it("a request whose own acquire failed does not release someone else's lock", async () => {
    const name = uniqueName('not-mine')
    const holder = new Mutex(await Session.create(etcd.client, { ttl: 5 }), name)
    await holder.lock()
    const handler = middy(async () => 'ran').use(etcdLock({ name, waitMs: 100, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(LockTimeoutError)
    // The holder's key is untouched and still the lock's owner.
    expect(await etcd.keysUnder(`${name}/`)).toEqual([holder.key])
    const owned = await etcd.client.kv.txn({ compare: [holder.ownerCompare()], success: [], failure: [] })
    expect(owned.succeeded).toBe(true)
    await holder.unlock()
  })

  it('two invocations in one process never overlap on one lock name', async () => {
    const name = uniqueName('overlap')
    let inside = 0
    let maxInside = 0
    const handler = middy(async () => {
      inside++
      maxInside = Math.max(maxInside, inside)
      await sleep(20)
      inside--
    }).use(etcdLock({ name, client: etcd.client }))
    await Promise.all(Array.from({ length: 8 }, () => handler({}, lambdaContext())))
    expect(maxInside).toBe(1)
  })

  it('after every path, no lease of ours holds a key under the lock', async () => {
    const name = uniqueName('sweep')
    const events: EtcdEvent[] = []
    const ok = middy(async () => 'ok').use(etcdLock({ name, client: etcd.client, onEvent: (e) => events.push(e) }))
    const fails = middy(async () => {
      throw new Error('x')
    }).use(etcdLock({ name, client: etcd.client, onEvent: (e) => events.push(e) }))
    await ok({}, lambdaContext())
    await expect(fails({}, lambdaContext())).rejects.toThrow('x')
    await ok({}, lambdaContext())
    expect(await leasedKeys(`${name}/`)).toEqual([])
    expect(events.map((e) => e.type)).toEqual(['acquired', 'released', 'acquired', 'released', 'acquired', 'released'])
    // Fences increase and are JSON-safe strings in events.
    const fences = events.filter((e) => e.type === 'acquired').map((e) => BigInt(e.fence!))
    expect(fences[1]).toBeGreaterThan(fences[0])
    expect(fences[2]).toBeGreaterThan(fences[1])
  })
})
