import { describe, expect, it, vi } from 'vitest'
import { InvalidArgumentError, LeaseLostError, Mutex, Session, SessionExpiredError, createClient } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { startEtcd } from '../../testing/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd()

/** Resolves with the signal's reason once it aborts (or rejects after `ms`: "does not hang"). */
function aborted(signal: AbortSignal, ms = 10_000): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`signal not aborted within ${ms} ms`)), ms)
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer)
        resolve(signal.reason)
      },
      { once: true },
    )
  })
}

/** Remaining TTL of a lease on the server (-1 when it does not exist). */
async function serverTtl(id: string): Promise<number> {
  const res = await etcd.client.leaseClient.leaseTimeToLive({ ID: id })
  return Number(res.TTL)
}

/** The ids of every lease on the server. */
async function leaseIds(): Promise<string[]> {
  const res = await etcd.client.leaseClient.leaseLeases({})
  return res.leases.map((l) => String(l.ID))
}

describe('Session', () => {
  it('formats the lease id as Go %x (lowercase, unpadded) and puts lock keys under it', async () => {
    const s = await Session.create(etcd.client, { ttl: 5 })
    expect(s.leaseHex).toBe(BigInt(s.leaseId).toString(16))
    expect(s.leaseHex).toMatch(/^[1-9a-f][0-9a-f]*$/)
    expect(s.active).toBe(true)
    const name = uniqueName('hex')
    const m = new Mutex(s, name)
    await m.lock()
    const kv = (await keyspace(etcd.client).range(m.key)).kvs[0]
    expect(kv.key).toBe(`${name}/${s.leaseHex}`)
    expect(kv.lease).toBe(s.leaseId)
    expect(kv.value.length).toBe(0)
    await s.close()
  })

  it('grants the requested ttl', async () => {
    const s = await Session.create(etcd.client, { ttl: 7 })
    expect(s.ttl).toBe(7)
    const res = await etcd.client.leaseClient.leaseTimeToLive({ ID: s.leaseId })
    expect(Number(res.grantedTTL)).toBe(7)
    expect(Number(res.TTL)).toBeGreaterThan(0)
    expect(Number(res.TTL)).toBeLessThanOrEqual(7)
    await s.close()
  })

  it("defaults to Go's 60 s ttl", async () => {
    const s = await Session.create(etcd.client)
    expect(s.ttl).toBe(60)
    const res = await etcd.client.leaseClient.leaseTimeToLive({ ID: s.leaseId })
    expect(Number(res.grantedTTL)).toBe(60)
    await s.close()
  })

  it('adopts an existing lease without granting one, and learns its ttl from the server', async () => {
    const client = etcd.newClient()
    const granted = await client.leaseClient.leaseGrant({ TTL: 4 })
    const grant = vi.spyOn(client.leaseClient, 'leaseGrant')
    const s = await Session.create(client, { leaseId: granted.ID })
    expect(grant).not.toHaveBeenCalled()
    expect(s.leaseId).toBe(granted.ID)
    expect(s.leaseHex).toBe(BigInt(granted.ID).toString(16))
    // The adopted lease (TTL 4) is kept alive although the ttl option defaulted to 60.
    await sleep(5_000)
    expect(s.active).toBe(true)
    expect(s.ttl).toBe(4)
    expect(await serverTtl(granted.ID)).toBeGreaterThan(0)
    expect(s.aliveUntil).toBeGreaterThan(performance.now())
    await s.close()
    expect(await serverTtl(granted.ID)).toBe(-1)
  })

  it('two sessions on one lease (Go TestElectionOnSessionRestart): orphaning the old one keeps the new one alive', async () => {
    const old = await Session.create(etcd.client, { ttl: 2 })
    const adopted = await Session.create(etcd.client, { leaseId: old.leaseId, ttl: 2, aliveUntil: old.aliveUntil })
    // Known alive from the start: the old session's bound carries over.
    expect(adopted.aliveUntil).toBeGreaterThan(performance.now())
    await sleep(800)
    old.orphan()
    await sleep(4_500) // > 2 x TTL: only the adopted session's keepalives hold the lease
    expect(adopted.active).toBe(true)
    expect(await serverTtl(adopted.leaseId)).toBeGreaterThan(0)
    expect(adopted.aliveUntil).toBeGreaterThan(performance.now())
    await adopted.close()
    expect(await serverTtl(old.leaseId)).toBe(-1)
  })

  it('a lease handed from one session to the next at once stays alive with a sound bound', async () => {
    let s = await Session.create(etcd.client, { ttl: 2 })
    const leaseId = s.leaseId
    for (let i = 0; i < 20; i++) {
      await sleep(150)
      const bound = s.aliveUntil
      s.orphan()
      s = await Session.create(etcd.client, { leaseId, ttl: 2, aliveUntil: bound })
      const remaining = await serverTtl(leaseId)
      expect(remaining).toBeGreaterThan(0)
      expect(s.aliveUntil).toBeLessThanOrEqual(performance.now() + (remaining + 1) * 1000)
    }
    expect(s.active).toBe(true)
    await s.close()
  })

  it('rejects aliveUntil without leaseId, or a non-number one', async () => {
    await expect(Session.create(etcd.client, { aliveUntil: performance.now() + 1000 })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(Session.create(etcd.client, { leaseId: '123', aliveUntil: NaN })).rejects.toBeInstanceOf(InvalidArgumentError)
  })

  it('adopting a lease that does not exist aborts signal with reason expired', async () => {
    const s = await Session.create(etcd.client, { leaseId: '7587862145453925126' })
    const reason = await aborted(s.signal, 5_000)
    expect(reason).toBeInstanceOf(LeaseLostError)
    expect(reason).toBeInstanceOf(SessionExpiredError)
    expect((reason as LeaseLostError).reason).toBe('expired')
    expect((reason as LeaseLostError).leaseId).toBe('7587862145453925126')
    expect(s.active).toBe(false)
    expect(s.aliveUntil).toBe(0)
    // Locking on a dead session fails before writing anything.
    const name = uniqueName('dead')
    await expect(new Mutex(s, name).lock()).rejects.toBeInstanceOf(SessionExpiredError)
    expect((await keyspace(etcd.client).range(`${name}/`, { prefix: true })).kvs).toHaveLength(0)
  })

  it('an external revoke aborts signal with reason revoked, and the lock key is gone', async () => {
    const s = await Session.create(etcd.client, { ttl: 3 })
    const m = new Mutex(s, uniqueName('revoked'))
    await m.lock()
    const other = etcd.newClient()
    await other.leaseClient.leaseRevoke({ ID: s.leaseId })
    const reason = await aborted(s.signal)
    expect(reason).toBeInstanceOf(LeaseLostError)
    expect((reason as LeaseLostError).reason).toBe('revoked')
    expect(s.active).toBe(false)
    expect((await keyspace(etcd.client).range(m.key)).kvs).toHaveLength(0)
    await s.close() // already gone: no error
  })

  it('orphan() stops the keepalive but leaves the lease and its keys until the ttl runs out', async () => {
    const s = await Session.create(etcd.client, { ttl: 2 })
    const m = new Mutex(s, uniqueName('orphan'))
    await m.lock()
    await sleep(1_000) // a few keepalives in
    s.orphan()
    const bound = s.aliveUntil
    const reason = await aborted(s.signal, 100)
    expect((reason as LeaseLostError).reason).toBe('closed')
    expect(s.active).toBe(false)
    expect(await serverTtl(s.leaseId)).toBeGreaterThan(0)
    expect((await keyspace(etcd.client).range(m.key)).kvs).toHaveLength(1)
    // The key goes with the lease, and never before the session's conservative bound.
    for (let i = 0; i < 100 && (await keyspace(etcd.client).range(m.key)).kvs.length > 0; i++) await sleep(100)
    const goneAt = performance.now()
    expect((await keyspace(etcd.client).range(m.key)).kvs).toHaveLength(0)
    expect(goneAt).toBeGreaterThanOrEqual(bound)
  })

  it('close() revokes the lease and deletes its keys', async () => {
    const s = await Session.create(etcd.client, { ttl: 30 })
    const m = new Mutex(s, uniqueName('close'))
    await m.lock()
    await s.close()
    expect(s.active).toBe(false)
    expect((s.signal.reason as LeaseLostError).reason).toBe('closed')
    expect(await serverTtl(s.leaseId)).toBe(-1)
    expect((await keyspace(etcd.client).range(m.key)).kvs).toHaveLength(0)
    await s.close() // twice is fine
  })

  it('keeps a 2 s lease alive for more than 3 x ttl', async () => {
    const s = await Session.create(etcd.client, { ttl: 2 })
    const m = new Mutex(s, uniqueName('keepalive'))
    await m.lock()
    await sleep(7_000)
    expect(s.active).toBe(true)
    expect(await serverTtl(s.leaseId)).toBeGreaterThan(0)
    expect((await keyspace(etcd.client).range(m.key)).kvs).toHaveLength(1)
    await m.unlock()
    await s.close()
  })

  it('aliveUntil is a conservative bound: never later than the server-side expiry', async () => {
    const s = await Session.create(etcd.client, { ttl: 5 })
    for (let i = 0; i < 5; i++) {
      const before = performance.now()
      const remaining = await serverTtl(s.leaseId)
      // The server rounds the remaining TTL down to whole seconds: allow one second for that.
      expect(s.aliveUntil).toBeLessThanOrEqual(before + (remaining + 1) * 1000)
      expect(s.aliveUntil).toBeGreaterThan(before)
      await sleep(600)
    }
    await s.close()
  })

  it('aliveUntil stays conservative when the monotonic clock stalls (a frozen VM) while the wall clock runs on', async () => {
    const s = await Session.create(etcd.client, { ttl: 5 })
    expect(s.aliveUntil).toBeGreaterThan(performance.now())
    // Seen from inside: performance.now() stood still while 60 s of real time passed.
    const realNow = Date.now
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 60_000)
    try {
      expect(s.aliveUntil).toBeLessThan(performance.now())
    } finally {
      clock.mockRestore()
    }
    expect(s.aliveUntil).toBeGreaterThan(performance.now())
    expect(s.active).toBe(true)
    await s.close()
  })

  it('a warm handoff within TTL/3 of the last renewal sends no keepalive, and the bound does not shrink per handoff', async () => {
    const client = etcd.newClient()
    const { keepAliveStream } = await import('../../lib/core/keepalive.js')
    const send = vi.spyOn(keepAliveStream(client), 'send')
    let s = await Session.create(client, { ttl: 9 })
    for (let i = 0; i < 50 && s.aliveUntil === 0; i++) await sleep(20) // first answer in
    const first = s.aliveUntil
    send.mockClear()
    for (let i = 0; i < 20; i++) {
      const bound = s.aliveUntil
      s.orphan()
      s = await Session.create(client, { leaseId: s.leaseId, ttl: 9, aliveUntil: bound })
      // Equal but for the wall clock's whole milliseconds (the bound also follows Date.now()).
      expect(s.aliveUntil).toBeGreaterThan(bound - 1.5)
      expect(s.aliveUntil).toBeLessThanOrEqual(bound)
    }
    expect(s.aliveUntil).toBeGreaterThan(first - 30)
    expect(send).not.toHaveBeenCalled()
    expect(await serverTtl(s.leaseId)).toBeGreaterThan(0)
    // Past TTL/3 since the renewal, the adopted session's tick sends one and the bound moves on.
    await sleep(3_300)
    expect(send).toHaveBeenCalled()
    for (let i = 0; i < 50 && s.aliveUntil <= first + 2_000; i++) await sleep(20)
    expect(s.aliveUntil).toBeGreaterThan(first + 2_000)
    await s.close()
    client.close()
  })

  it('all sessions of a client share one keepalive stream', async () => {
    const client = etcd.newClient()
    const opened = vi.spyOn(client.leaseClient, 'leaseKeepAlive')
    const sessions = await Promise.all(Array.from({ length: 10 }, () => Session.create(client, { ttl: 2 })))
    await sleep(2_500) // several keepalive rounds for every session
    expect(sessions.every((s) => s.active)).toBe(true)
    for (const s of sessions) expect(await serverTtl(s.leaseId)).toBeGreaterThan(0)
    expect(opened).toHaveBeenCalledTimes(1)
    await Promise.all(sessions.map((s) => s.close()))
    // The last session closing closes the stream; the next session opens a fresh one (with its
    // first keepalive, TTL/3 after its grant).
    const next = await Session.create(client, { ttl: 2 })
    await sleep(900)
    expect(opened).toHaveBeenCalledTimes(2)
    await next.close()
  })

  it('ends (reason closed) soon after its client is closed, leaving the lease to expire', async () => {
    const client = createClient({ endpoints: etcd.cluster.endpoints })
    const s = await Session.create(client, { ttl: 3 })
    client.close()
    const reason = await aborted(s.signal, 5_000)
    expect((reason as LeaseLostError).reason).toBe('closed')
    expect(await serverTtl(s.leaseId)).toBeGreaterThan(0) // not revoked: it expires on its own
  })

  it('aborts signal with reason unreachable when etcd stops answering', async () => {
    const cluster = await startEtcd()
    const client = createClient({ endpoints: cluster.endpoints, callTimeoutMs: 1000 })
    try {
      const s = await Session.create(client, { ttl: 2 })
      await cluster.stopMember(0)
      const reason = await aborted(s.signal)
      expect(reason).toBeInstanceOf(LeaseLostError)
      expect((reason as LeaseLostError).reason).toBe('unreachable')
      expect(s.active).toBe(false)
    } finally {
      client.close()
      await cluster.stop()
    }
  })

  it.each([0, -1, 1.5, NaN, Infinity, '5', null])('rejects ttl %s with InvalidArgumentError, granting nothing', async (ttl) => {
    const grant = vi.spyOn(etcd.client.leaseClient, 'leaseGrant')
    const before = await leaseIds()
    await expect(Session.create(etcd.client, { ttl: ttl as number })).rejects.toBeInstanceOf(InvalidArgumentError)
    expect(grant).not.toHaveBeenCalled()
    // No new lease (older ones may expire meanwhile).
    for (const id of await leaseIds()) expect(before).toContain(id)
    grant.mockRestore()
  })

  it.each(['', '0', '-5', 'abc', '0x1f', '9223372036854775808', 42])('rejects leaseId %s with InvalidArgumentError', async (leaseId) => {
    const keepalive = vi.spyOn(etcd.client.leaseClient, 'leaseKeepAlive')
    await expect(Session.create(etcd.client, { leaseId: leaseId as string })).rejects.toBeInstanceOf(InvalidArgumentError)
    expect(keepalive).not.toHaveBeenCalled()
    keepalive.mockRestore()
  })
})
