import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  createClient,
  InvalidArgumentError,
  LockedError,
  LockReleasedError,
  RWMutex,
  Session,
  SessionExpiredError,
  type EtcdClient,
  type RWMode,
} from '../../lib/index.js'
import { buildGoPeer, killGoPeers, startGoPeer } from '../gopeer.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd(3)

/** Settles-or-not probe: true if `p` settled within `ms`. */
async function settledWithin(p: Promise<unknown>, ms: number) {
  let settled = false
  p.then(
    () => (settled = true),
    () => (settled = true),
  )
  await sleep(ms)
  return settled
}

/**
 * Go's TestRWMutex{SingleNode,MultiNode}: 5 sessions randomly rLock or lock, hold briefly and
 * release. Checked: a writer never overlaps any other holder; readers never overlap a writer.
 */
async function rwMutexScenario(clients: EtcdClient[]) {
  const name = uniqueName('test-rwmutex')
  const rounds = 4
  let readers = 0
  let writers = 0
  const violations: string[] = []
  const intervals: { mode: RWMode; start: number; end: number }[] = []
  const workers = Array.from({ length: 5 }, async (_, i) => {
    const session = await Session.create(clients[i % clients.length], { ttl: 10 })
    const rw = new RWMutex(session, name)
    for (let r = 0; r < rounds; r++) {
      const mode: RWMode = Math.random() < 0.5 ? 'read' : 'write'
      if (mode === 'read') {
        await rw.rLock()
        if (writers > 0) violations.push(`reader ${i} acquired while a writer holds`)
        readers++
      } else {
        await rw.lock()
        if (writers > 0 || readers > 0) violations.push(`writer ${i} acquired while ${writers} writers / ${readers} readers hold`)
        writers++
      }
      const start = performance.now()
      await sleep(5 + Math.random() * 20)
      if (mode === 'read') readers--
      else writers--
      intervals.push({ mode, start, end: performance.now() })
      if (mode === 'read') await rw.rUnlock()
      else await rw.unlock()
    }
    await session.close()
  })
  await Promise.all(workers)
  expect(violations).toEqual([])
  expect(intervals).toHaveLength(20)
  for (const w of intervals.filter((x) => x.mode === 'write')) {
    for (const o of intervals) {
      if (o !== w) expect(o.end <= w.start || o.start >= w.end).toBe(true)
    }
  }
  expect(await etcd.keysUnder(`${name}/`)).toEqual([])
}

describe('RWMutex (Go v3_lock_test.go)', () => {
  it('TestRWMutexSingleNode: readers share, writers exclude', async () => {
    await rwMutexScenario([etcd.client])
  })

  it('TestRWMutexMultiNode: the same with sessions on different members', async () => {
    await rwMutexScenario(etcd.cluster.endpoints.map((e) => etcd.newClient([e])))
  })
})

describe('RWMutex', () => {
  it('uses Go key layouts, an empty value, the session lease; fence and ownerCompare guard writes', async () => {
    const name = uniqueName('rw-layout')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    const r = new RWMutex(s1, name)
    await r.rLock()
    expect(r.key).toMatch(new RegExp(`^${name}/read/\\d{19}$`))
    expect(r.mode).toBe('read')
    const stored = await etcd.client.kv.range({ key: Buffer.from(r.key) })
    expect(stored.kvs[0].value.toString()).toBe('')
    expect(stored.kvs[0].lease).toBe(s1.leaseId)
    expect(r.fence).toBe(BigInt(stored.kvs[0].create_revision))
    // The nanosecond timestamp is close to now.
    const nano = BigInt(r.key.split('/').pop()!)
    expect(Number(nano / 1_000_000n - BigInt(Date.now()))).toBeLessThan(60_000)
    expect(Number(BigInt(Date.now()) - nano / 1_000_000n)).toBeLessThan(60_000)
    const readFence = r.fence
    await r.rUnlock()

    const w = new RWMutex(s2, name)
    await w.lock()
    expect(w.key).toMatch(new RegExp(`^${name}/write/\\d{19}$`))
    expect(w.fence > readFence).toBe(true)
    const ok = await w
      .fenced()
      .then(etcd.client.put(`${name}-data`).value('1'))
      .commit()
    expect(ok.succeeded).toBe(true)
    const guard = w.ownerCompare()
    await w.unlock()
    expect(w.held).toBe(false)
    expect(() => w.fence).toThrow(LockReleasedError)
    const stale = await etcd.client.kv.txn({
      compare: [guard],
      success: [{ request_put: { key: Buffer.from(`${name}-data`), value: Buffer.from('2') } }],
    })
    expect(stale.succeeded).toBe(false)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
    await s1.close()
    await s2.close()
  })

  it('a waiting writer holds back later readers, then readers share again (no writer starvation)', async () => {
    const name = uniqueName('rw-starve')
    const sessions = await Promise.all([0, 1, 2, 3].map(() => Session.create(etcd.client, { ttl: 5 })))
    const [r1, w, r2, r3] = sessions.map((s) => new RWMutex(s, name))
    await r1.rLock()
    const writer = w.lock()
    await sleep(100)
    const reader2 = r2.rLock()
    expect(await settledWithin(writer, 300)).toBe(false)
    expect(await settledWithin(reader2, 0)).toBe(false)
    await expect(r3.tryRLock()).rejects.toBeInstanceOf(LockedError)
    await expect(r3.tryLock()).rejects.toBeInstanceOf(LockedError)
    await r1.rUnlock()
    await writer
    expect(w.held).toBe(true)
    expect(await settledWithin(reader2, 200)).toBe(false)
    await w.unlock()
    await reader2
    await r3.rLock() // readers share
    expect(r2.held && r3.held).toBe(true)
    await r2.rUnlock()
    await r3.rUnlock()
    for (const s of sessions) await s.close()
  })

  it('a writer gets in while a stream of overlapping readers keeps the lock read-held', async () => {
    const name = uniqueName('rw-stream')
    const sessions = await Promise.all([0, 1, 2, 3].map(() => Session.create(etcd.client, { ttl: 10 })))
    let stop = false
    let readHolds = 0
    const readerLoops = sessions.slice(0, 3).map(async (s, i) => {
      const rw = new RWMutex(s, name)
      await sleep(i * 15)
      while (!stop) {
        await rw.rLock()
        readHolds++
        await sleep(40) // overlaps the other readers' holds: the lock is never free of readers
        await rw.rUnlock()
      }
    })
    await sleep(150)
    const w = new RWMutex(sessions[3], name)
    await w.lock({ signal: AbortSignal.timeout(10_000) }) // generous bound: proves it does not starve
    const readsAtWrite = readHolds
    await sleep(100)
    expect(readHolds).toBe(readsAtWrite) // no reader got in while the writer held
    await w.unlock()
    await sleep(100)
    stop = true
    await Promise.all(readerLoops)
    expect(readHolds).toBeGreaterThan(readsAtWrite)
    for (const s of sessions) await s.close()
  })

  it('tryRLock and tryLock take a free lock and leave no key when they fail', async () => {
    const name = uniqueName('rw-try')
    const sessions = await Promise.all([0, 1, 2].map(() => Session.create(etcd.client, { ttl: 5 })))
    const [a, b, c] = sessions.map((s) => new RWMutex(s, name))
    await a.tryLock()
    expect(a.mode).toBe('write')
    await expect(b.tryRLock()).rejects.toBeInstanceOf(LockedError)
    await expect(b.tryLock()).rejects.toBeInstanceOf(LockedError)
    expect(b.key).toBe('')
    expect(await etcd.keysUnder(`${name}/`)).toEqual([a.key])
    await a.unlock()
    await b.tryRLock()
    await c.tryRLock()
    await expect(a.tryLock()).rejects.toBeInstanceOf(LockedError)
    expect((await etcd.keysUnder(`${name}/`)).sort()).toEqual([b.key, c.key].sort())
    await b.rUnlock()
    await c.rUnlock()
    await a.tryRLock()
    await a.rUnlock()
    for (const s of sessions) await s.close()
  })

  it('session closed while waiting → SessionExpiredError', async () => {
    const name = uniqueName('rw-closed')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    const holder = new RWMutex(s1, name)
    await holder.lock()
    const waiter = new RWMutex(s2, name)
    const waiting = waiter.rLock()
    waiting.catch(() => {})
    await sleep(150)
    await s2.close()
    await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError)
    expect(waiter.held).toBe(false)
    await holder.unlock()
    await s1.close()
  })

  it('lease revoked elsewhere while waiting → SessionExpiredError without waiting for the holder (etcd #16221)', async () => {
    const name = uniqueName('rw-revoked')
    const s1 = await Session.create(etcd.client, { ttl: 10 })
    const s2 = await Session.create(etcd.newClient(), { ttl: 10 })
    const holder = new RWMutex(s1, name)
    await holder.rLock()
    const waiter = new RWMutex(s2, name)
    const waiting = waiter.lock()
    waiting.catch(() => {})
    await sleep(150)
    await etcd.client.leaseClient.leaseRevoke({ ID: s2.leaseId })
    await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError)
    expect(holder.held).toBe(true)
    await holder.rUnlock()
    await s1.close()
    await s2.close()
  })

  it('a session whose lease expires (orphaned, ttl 1) fails the wait with SessionExpiredError', async () => {
    const name = uniqueName('rw-expire')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.newClient(), { ttl: 1 })
    const holder = new RWMutex(s1, name)
    await holder.lock()
    const waiting = new RWMutex(s2, name).lock()
    waiting.catch(() => {})
    await sleep(100)
    s2.orphan()
    await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError)
    await holder.unlock()
    // The orphaned lease runs out on its own and takes its waiter key with it.
    for (let i = 0; i < 40 && (await etcd.keysUnder(`${name}/`)).length > 0; i++) await sleep(100)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
    await s1.close()
  })

  it('aborting a wait rejects with the reason and removes the waiter key', async () => {
    const name = uniqueName('rw-abort')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    const holder = new RWMutex(s1, name)
    await holder.lock()
    const ac = new AbortController()
    const waiter = new RWMutex(s2, name)
    const waiting = waiter.rLock({ signal: ac.signal })
    waiting.catch(() => {})
    await sleep(150)
    expect(await etcd.keysUnder(`${name}/read/`)).toHaveLength(1)
    const reason = new Error('gave up')
    ac.abort(reason)
    await expect(waiting).rejects.toBe(reason)
    expect(await etcd.keysUnder(`${name}/read/`)).toEqual([])
    expect(waiter.key).toBe('')
    await expect(waiter.lock({ signal: ac.signal })).rejects.toBe(reason)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([holder.key])
    await holder.unlock()
    await s1.close()
    await s2.close()
  })

  it('works inside a client namespace (try-lock range compares included)', async () => {
    const ns = `${uniqueName('ns')}/`
    const client = createClient({ endpoints: etcd.cluster.endpoints, namespace: ns })
    try {
      const name = uniqueName('rw-ns')
      const s1 = await Session.create(client, { ttl: 5 })
      const s2 = await Session.create(client, { ttl: 5 })
      const a = new RWMutex(s1, name)
      const b = new RWMutex(s2, name)
      await a.tryLock()
      expect(a.key.startsWith(`${name}/write/`)).toBe(true)
      expect(await etcd.keysUnder(`${ns}${name}/write/`)).toEqual([`${ns}${a.key}`])
      await expect(b.tryRLock()).rejects.toBeInstanceOf(LockedError)
      const reading = b.rLock()
      await sleep(100)
      await a.unlock()
      await reading
      await expect(a.tryLock()).rejects.toBeInstanceOf(LockedError)
      await a.tryRLock()
      await a.rUnlock()
      await b.rUnlock()
      expect(await etcd.keysUnder(`${ns}${name}/`)).toEqual([])
      await s1.close()
      await s2.close()
    } finally {
      client.close()
    }
  })

  it('rejects bad input and misuse', async () => {
    const s = await Session.create(etcd.client, { ttl: 5 })
    expect(() => new RWMutex(s, '')).toThrow(InvalidArgumentError)
    expect(() => new RWMutex(s, 7 as unknown as string)).toThrow(InvalidArgumentError)
    expect(() => new RWMutex(s, null as unknown as string)).toThrow(InvalidArgumentError)
    const name = uniqueName('rw-bad')
    const rw = new RWMutex(s, name)
    await expect(rw.unlock()).rejects.toBeInstanceOf(LockReleasedError)
    await expect(rw.rUnlock()).rejects.toBeInstanceOf(LockReleasedError)
    await rw.lock()
    await expect(rw.rUnlock()).rejects.toBeInstanceOf(LockReleasedError)
    await expect(rw.lock()).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(rw.tryRLock()).rejects.toBeInstanceOf(InvalidArgumentError)
    await rw.unlock()
    await expect(rw.unlock()).rejects.toBeInstanceOf(LockReleasedError)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
    await s.close()
  })
})

describe('Go peer interop (recipe.RWMutex of etcd 3.4, built from interop/go)', () => {
  let bin: string
  // Needs go + golang-etcd-server-dev; the binary is cached by source hash, so only the first run builds.
  beforeAll(async () => {
    bin = await buildGoPeer()
  }, 250_000)

  afterEach(killGoPeers)

  /** Starts the Go peer taking `<name>` for reading or writing and holding it `holdMs`. */
  const goPeer = (mode: 'rlock' | 'wlock', name: string, holdMs: number) => startGoPeer(bin, etcd.cluster.endpoints[0], mode, name, holdMs)

  it('a Go writer holds back our reader; our read hold shares with a Go reader and holds back a Go writer', async () => {
    const name = uniqueName('gorw')
    const s = await Session.create(etcd.client, { ttl: 10 })
    const rw = new RWMutex(s, name)

    const goWriter = goPeer('wlock', name, 800)
    expect(await goWriter.saw('locked')).toBe(true)
    expect((await etcd.keysUnder(`${name}/write/`))[0]).toMatch(new RegExp(`^${name}/write/\\d{19}$`))
    const reading = rw.rLock()
    expect(await settledWithin(reading, 300)).toBe(false)
    await reading
    expect(await goWriter.exited).toBe(0)
    expect(goWriter.lines).toEqual(['locked', 'unlocked'])

    // We read-hold: a Go reader shares, a Go writer waits for us.
    const goReader = goPeer('rlock', name, 0)
    expect(await goReader.saw('locked')).toBe(true)
    expect(await goReader.exited).toBe(0)
    const goWriter2 = goPeer('wlock', name, 0)
    await sleep(500)
    expect(goWriter2.lines).toEqual([])
    await rw.rUnlock()
    expect(await goWriter2.saw('unlocked')).toBe(true)
    expect(await goWriter2.exited).toBe(0)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
    await s.close()
  })
})
