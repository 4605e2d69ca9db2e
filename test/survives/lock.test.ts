/**
 * "What survives", lock rows (issue 29): the same scenario against ours (Mutex on etcd) and
 * theirs (redlock 5.0.0-beta.2, redis-semaphore 5.8.0 on one local Redis 7), each test asserting
 * our guarantee and the peer's outcome as observed here.
 *  (a) a holder frozen (SIGSTOP) past its TTL while another takes the lock, then resumed: its late
 *      write to PostgreSQL. Ours carries the grant's fence and the store refuses it; redlock gives
 *      no fencing token, so the store has nothing to check and the late write lands.
 *  (b) a holder releasing after its lock expired and was taken by another: ours deletes only its
 *      own key; redlock and redis-semaphore compare the value (their release does not delete the
 *      other's lock); the seeds' naive SET NX + DEL does delete it.
 */
import { Redis } from 'ioredis'
import Redlock, { type Lock } from 'redlock'
import { Mutex as RedisMutex } from 'redis-semaphore'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fencedUpsert, Mutex, Session } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { freeze, sleep, uniqueName, useEtcd } from '../helpers.js'
import { startPostgres, type PgServer } from '../support/postgres.js'
import { startRedis, type RedisServer } from '../support/redis.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)
let pg: PgServer
let redis: RedisServer
let rc: Redis
const workers: Worker[] = []
const sessions: Session[] = []

beforeAll(async () => {
  ;[pg, redis] = await Promise.all([startPostgres(), startRedis()])
  rc = new Redis(redis.url)
  await pg.admin.query('CREATE TABLE survives (id text PRIMARY KEY, value text NOT NULL, fence bigint NOT NULL)')
}, 60_000)
afterEach(async () => {
  for (const w of workers.splice(0)) {
    w.signal('SIGCONT')
    await w.kill()
  }
  for (const s of sessions.splice(0)) await s.close().catch(() => {})
})
afterAll(async () => {
  rc?.disconnect()
  await Promise.all([pg?.stop(), redis?.stop()])
})

async function worker() {
  const w = await Worker.start(etcd.cluster.endpoints, '', { script: 'redis-worker.ts', env: { REDIS_URL: redis.url } })
  workers.push(w)
  return w
}
const target = (row: string) => ({ host: '127.0.0.1', port: pg.port, user: pg.user, database: pg.database, table: 'survives', row })
const rowValue = async (row: string) => (await pg.admin.query('SELECT value FROM survives WHERE id = $1', [row])).rows[0]?.value

describe('(a) a holder frozen past its TTL, then resumed: does its late write reach a fenced store?', () => {
  it('ours: the late write carries the old fence and PostgreSQL refuses it; the new holder’s value stays', async () => {
    const name = uniqueName('survive-freeze')
    const row = uniqueName('row')
    const a = await worker()
    const held = await a.request({ op: 'etcdLock', name, ttl: 1 }, 'locked')
    expect((await a.request({ op: 'pgWrite', pg: target(row), value: 'a', fenced: true }, 'pgWrite')).applied).toBe(true)
    await freeze(a.pid)
    const session = await Session.create(etcd.client, { ttl: 10 })
    sessions.push(session)
    const b = new Mutex(session, name)
    await b.lock({ signal: AbortSignal.timeout(30_000) }) // once A's lease has expired
    expect(b.fence).toBeGreaterThan(BigInt(held.fence))
    const res = await pg.admin.query(fencedUpsert({ table: 'survives', key: { id: row }, set: { value: 'b' }, fence: b.fence }))
    expect(res.rowCount).toBe(1)
    a.send({ op: 'pgWrite', pg: target(row), value: 'late', fenced: true })
    a.signal('SIGCONT')
    const late = await a.next('pgWrite')
    console.log(`[survives] freeze, ours: late write applied=${late.applied}; row holds ${await rowValue(row)}`)
    expect(late.applied).toBe(false)
    expect(await rowValue(row)).toBe('b')
    await b.unlock()
  })

  it('redlock: no fencing token to send, so the store cannot tell the late write from the new holder’s: it lands', async () => {
    const resource = uniqueName('survive-freeze-redlock')
    const row = uniqueName('row')
    const a = await worker()
    const held = await a.request({ op: 'redlock', resource, ttlMs: 1000 }, 'locked')
    expect(held.fence).toBeNull() // a redlock Lock has a random value and an expiry, nothing ordered
    expect((await a.request({ op: 'pgWrite', pg: target(row), value: 'a', fenced: false }, 'pgWrite')).applied).toBe(true)
    await freeze(a.pid)
    const redlock = new Redlock([rc], { retryCount: 100, retryDelay: 100 })
    const b = await redlock.acquire([resource], 10_000) // once A's key has expired
    expect(b.value).not.toBe(held.value)
    await pg.admin.query('UPDATE survives SET value = $2 WHERE id = $1', [row, 'b'])
    a.send({ op: 'pgWrite', pg: target(row), value: 'late', fenced: false })
    a.signal('SIGCONT')
    const late = await a.next('pgWrite')
    console.log(`[survives] freeze, redlock: late write applied=${late.applied}; row holds ${await rowValue(row)}`)
    // Observed: the frozen holder's write overwrites the new holder's, while B still holds the lock.
    expect(late.applied).toBe(true)
    expect(await rowValue(row)).toBe('late')
    expect(await rc.get(resource)).toBe(b.value)
    await b.release()
  })
})

describe('(b) a release after the lock expired and was taken by another: is the other’s lock deleted?', () => {
  it('ours: the resumed holder’s unlock deletes only its own key; the new holder still owns the lock', async () => {
    const name = uniqueName('survive-release')
    const a = await worker()
    const held = await a.request({ op: 'etcdLock', name, ttl: 1 }, 'locked')
    await freeze(a.pid)
    const session = await Session.create(etcd.client, { ttl: 10 })
    sessions.push(session)
    const b = new Mutex(session, name)
    await b.lock({ signal: AbortSignal.timeout(30_000) })
    a.signal('SIGCONT')
    await a.request({ op: 'etcdUnlock' }, 'unlocked')
    const keys = await etcd.keysUnder(`${name}/`)
    expect(keys).toEqual([b.key])
    expect(keys).not.toContain(held.key)
    // B's guarded writes still land: it still holds the lock.
    const ks = keyspace(etcd.client)
    expect((await ks.txn([b.ownerCompare()], [ks.put(`${name}-data`, 'b')])).succeeded).toBe(true)
    await b.unlock()
  })

  it('redlock and redis-semaphore compare the value: the late release leaves the other’s lock in place', async () => {
    const resource = uniqueName('survive-release-redlock')
    const redlock = new Redlock([rc], { retryCount: 5, retryDelay: 50 })
    const a: Lock = await redlock.acquire([resource], 300)
    await sleep(500) // A's key expires (no extension outside redlock.using)
    const b = await redlock.acquire([resource], 10_000)
    const release = await a.release().then(
      () => 'resolved',
      (err: Error) => `${err.name}: ${err.message}`,
    )
    console.log(`[survives] late release, redlock: ${release}; B's key ${(await rc.get(resource)) === b.value ? 'kept' : 'deleted'}`)
    // Observed: the release script finds another value, deletes nothing, and redlock reports it as a
    // failure to reach quorum after its retries.
    expect(release).toMatch(/^ExecutionError: .*quorum/)
    expect(await rc.get(resource)).toBe(b.value)
    await b.release()

    const name = uniqueName('survive-release-rsem')
    const ma = new RedisMutex(rc, name, { lockTimeout: 300, refreshInterval: 0 })
    await ma.acquire()
    await sleep(500)
    const mb = new RedisMutex(rc, name, { lockTimeout: 10_000, refreshInterval: 0 })
    await mb.acquire()
    await ma.release()
    const kept = await rc.get(`mutex:${name}`)
    console.log(`[survives] late release, redis-semaphore: B's key ${kept === mb.identifier ? 'kept' : 'deleted'}`)
    expect(kept).toBe(mb.identifier)
    await mb.release()
  })

  it('the seeds’ naive SET NX PX + DEL: the late release deletes the other’s lock (a third holder can enter)', async () => {
    const key = uniqueName('survive-release-naive')
    expect(await rc.set(key, 'a', 'PX', 300, 'NX')).toBe('OK')
    await sleep(500)
    expect(await rc.set(key, 'b', 'PX', 10_000, 'NX')).toBe('OK')
    expect(await rc.del(key)).toBe(1) // A's unlock
    console.log(`[survives] late release, naive SET NX/DEL: B's key ${(await rc.get(key)) === null ? 'deleted' : 'kept'}`)
    expect(await rc.get(key)).toBeNull()
    expect(await rc.set(key, 'c', 'PX', 10_000, 'NX')).toBe('OK') // a third holder while B believes it holds
  })
})
