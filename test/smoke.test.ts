import { describe, expect, it } from 'vitest'
import { Mutex, Session, LockedError } from '../lib/index.js'
import { uniqueName, useEtcd } from './helpers.js'

const etcd = useEtcd()

describe('smoke', () => {
  it('locks and try-locks', async () => {
    const name = uniqueName('smoke')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    const m1 = new Mutex(s1, name)
    await m1.lock()
    expect(m1.key).toBe(`${name}/${s1.leaseHex}`)
    await expect(new Mutex(s2, name).tryLock()).rejects.toBeInstanceOf(LockedError)
    const m2 = new Mutex(s2, name)
    const p = m2.lock()
    await new Promise((r) => setTimeout(r, 200))
    expect(m2.held).toBe(false)
    await m1.unlock()
    await p
    expect(m2.fence).toBeGreaterThan(0n)
    await m2.unlock()
    await s1.close(); await s2.close()
  })
})
