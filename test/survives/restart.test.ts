/**
 * "What survives", store-restart row (issue 29): what a store crash loses. Ours: one member of
 * three etcd members (the raft leader) SIGKILLed and started again; every write acknowledged before
 * the kill was committed by a majority and fsynced, so the lock is still held (another session
 * is refused), the queue still holds its messages and the key its value. Theirs: one Redis 7
 * without AOF (as the benchmarks and most quick starts run it: `--save '' --appendonly no`)
 * SIGKILLed and started again: the redlock key, the BullMQ jobs and the key are gone, and a second
 * holder gets the lock the first still believes it holds. Also shown: the same Redis with AOF on
 * (appendfsync everysec, the default) keeps them across a process kill — the write() reached the
 * kernel; a machine crash could still lose up to a second of them, which this test does not show.
 */
import { Queue as BullQueue } from 'bullmq'
import { Redis } from 'ioredis'
import Redlock from 'redlock'
import { afterAll, describe, expect, it } from 'vitest'
import { LockedError, Mutex, Queue, Session } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { until, uniqueName, useEtcd } from '../helpers.js'
import { leaderIndex } from '../support/faults.js'
import { startRedis, type RedisServer } from '../support/redis.js'

const etcd = useEtcd(3)
const servers: RedisServer[] = []
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()))
})

describe('(e) the store restarted: what is lost?', () => {
  it('ours, one etcd member of three (the leader) SIGKILLed and restarted: the lock, the queue and the key survive', async () => {
    const name = uniqueName('survive-restart')
    const ks = keyspace(etcd.client)
    const session = await Session.create(etcd.client, { ttl: 15 })
    const holder = new Mutex(session, `${name}/lock`)
    await holder.lock()
    const queue = new Queue(etcd.client, `${name}/queue`)
    for (let i = 0; i < 3; i++) await queue.enqueue(`job-${i}`)
    await ks.txn([], [ks.put(`${name}/key`, 'v')])

    const leader = (await until('a raft leader', 20_000, () => leaderIndex(etcd.cluster).then((i) => (i === undefined ? false : { i })))).i
    const pid = etcd.cluster.pids()[leader]!
    process.kill(pid, 'SIGKILL')
    await etcd.cluster.stopMember(leader) // already dead: forgets the process, keeps its data
    await etcd.cluster.startMember(leader)

    const other = new Mutex(await Session.create(etcd.client, { ttl: 5 }), `${name}/lock`)
    const tried = await other.tryLock().then(
      () => 'acquired',
      (err: Error) => err,
    )
    expect(tried).toBeInstanceOf(LockedError)
    expect(session.signal.aborted).toBe(false)
    expect((await ks.txn([holder.ownerCompare()], [ks.put(`${name}/guarded`, 'ok')])).succeeded).toBe(true)
    expect(await queue.size()).toBe(3)
    expect((await ks.range(`${name}/key`)).kvs[0].value.toString()).toBe('v')
    console.log(`[survives] store restart, ours: member ${leader} (leader) killed and restarted; lock held, queue 3, key kept`)
    await holder.unlock()
    await other.session.close()
    await session.close()
  })

  async function redisRound(appendonly: boolean) {
    const server = await startRedis({ appendonly })
    servers.push(server)
    const before = new Redis(server.url, { maxRetriesPerRequest: null })
    const lock = await new Redlock([before], { retryCount: 0 }).acquire(['survive-lock'], 30_000)
    const bull = new BullQueue('survive-jobs', { connection: before })
    for (let i = 0; i < 3; i++) await bull.add('job', { i })
    await before.set('survive-key', 'v')
    await bull.close()
    before.disconnect()

    await server.restart() // SIGKILL, start again on the same port and directory

    const after = new Redis(server.url, { maxRetriesPerRequest: null })
    try {
      const bullAfter = new BullQueue('survive-jobs', { connection: after })
      const waiting = await bullAfter.getWaitingCount()
      await bullAfter.close()
      const lockValue = await after.get('survive-lock')
      const key = await after.get('survive-key')
      const second = await new Redlock([after], { retryCount: 0 }).acquire(['survive-lock'], 30_000).then(
        (l) => l,
        () => undefined,
      )
      const observed = { lockKept: lockValue === lock.value, waiting, key, secondHolder: second !== undefined }
      console.log(`[survives] store restart, Redis appendonly=${appendonly ? 'yes' : 'no'}: ${JSON.stringify(observed)}`)
      await second?.release()
      return observed
    } finally {
      after.disconnect()
    }
  }

  it('Redis without AOF, SIGKILLed and restarted: the lock, the jobs and the key are gone; a second holder gets the lock', async () => {
    expect(await redisRound(false)).toEqual({ lockKept: false, waiting: 0, key: null, secondHolder: true })
  })

  it('Redis with AOF (everysec), SIGKILLed and restarted: all kept across a process kill', async () => {
    expect(await redisRound(true)).toEqual({ lockKept: true, waiting: 3, key: 'v', secondHolder: false })
  })
})
