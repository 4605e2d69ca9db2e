/**
 * "What survives", queue row (issue 29): a consumer SIGKILLed mid-job. Ours (Queue on etcd): the
 * claim's lease ends with the process's keepalives and the message is redelivered to the next
 * receiver within the visibility timeout, receive count 2, and acked once. Theirs (BullMQ 6.7.6 on
 * one local Redis 7): the job's lock expires after lockDuration and a live worker's stalled-job
 * checker (every stalledInterval) moves it back to wait; it is processed again and completed
 * once. Each side runs with a 2 s claim (visibility timeout / lockDuration); the time from the
 * kill to the redelivery is printed (observed, not asserted: speed lives in the bench).
 */
import { Queue as BullQueue, Worker as BullWorker, type Job } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Queue } from '../../lib/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { startRedis, type RedisServer } from '../support/redis.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)
const CLAIM_S = 2
/** A hang-bound only (claim + generous slack on a loaded 2-core machine), not a timing assertion. */
const BOUND_MS = CLAIM_S * 1000 + 15_000
let redis: RedisServer
let connection: Redis
const workers: Worker[] = []

beforeAll(async () => {
  redis = await startRedis()
  connection = new Redis(redis.url, { maxRetriesPerRequest: null })
}, 30_000)
afterEach(async () => {
  for (const w of workers.splice(0)) await w.kill()
})
afterAll(async () => {
  connection?.disconnect()
  await redis?.stop()
})

async function worker() {
  const w = await Worker.start(etcd.cluster.endpoints, '', { script: 'redis-worker.ts', env: { REDIS_URL: redis.url } })
  workers.push(w)
  return w
}

describe('(d) a consumer SIGKILLed mid-job: redelivered, how soon, acked once?', () => {
  it('ours: redelivered once the claim lapses, receive count 2, acked exactly once', async () => {
    const name = uniqueName('survive-queue')
    const queue = new Queue(etcd.client, name)
    const sent = await queue.enqueue('job-1')
    const w = await worker()
    const got = await w.request({ op: 'receive', queue: name, visibilityTimeout: CLAIM_S }, 'received')
    expect(got.ids).toEqual([sent.id])
    expect(await queue.receive({ max: 1, wait: false })).toEqual([]) // claimed while the consumer lives
    await w.kill()
    const killedAt = performance.now()
    const again = await queue.receive({ max: 1, visibilityTimeout: 30, signal: AbortSignal.timeout(BOUND_MS) })
    const afterMs = performance.now() - killedAt
    console.log(
      `[survives] SIGKILLed consumer, ours: redelivered ${afterMs.toFixed(0)} ms after the kill, receive count ${again[0]?.receiveCount}`,
    )
    expect(again.map((m) => m.id)).toEqual([sent.id])
    expect(again[0].receiveCount).toBe(2)
    await queue.ack(again[0])
    expect(await queue.size()).toBe(0)
    expect(await queue.receive({ max: 1, wait: false })).toEqual([])
  })

  it('BullMQ: the stalled-job checker moves the job back; processed again and completed once', async () => {
    const name = uniqueName('survive-bull')
    const bull = new BullQueue(name, { connection })
    const job = await bull.add('job', { n: 1 })
    const w = await worker()
    await w.request({ op: 'bullWork', queue: name, lockDuration: CLAIM_S * 1000, stalledInterval: 1000 }, 'working')
    const first = await w.next('job')
    expect(first.id).toBe(job.id)
    await w.kill()
    const killedAt = performance.now()

    const processed: { id?: string; attemptsStarted: number; afterMs: number }[] = []
    const stalled: string[] = []
    const completed: string[] = []
    const live = new BullWorker(
      name,
      async (j: Job) => {
        processed.push({ id: j.id, attemptsStarted: j.attemptsStarted, afterMs: performance.now() - killedAt })
        return 'done'
      },
      { connection: new Redis(redis.url, { maxRetriesPerRequest: null }), lockDuration: CLAIM_S * 1000, stalledInterval: 1000 },
    )
    live.on('stalled', (id) => stalled.push(id))
    live.on('completed', (j) => completed.push(j.id!))
    try {
      const deadline = performance.now() + BOUND_MS
      while (completed.length === 0 && performance.now() < deadline) await sleep(50)
      await sleep(1500) // one more stalled check: nothing is redelivered twice
      console.log(
        `[survives] SIGKILLed consumer, BullMQ: stalled events ${JSON.stringify(stalled)}, reprocessed ${processed[0]?.afterMs.toFixed(0)} ms after the kill (attemptsStarted ${processed[0]?.attemptsStarted}), completed ${completed.length}x`,
      )
      expect(stalled).toEqual([job.id])
      expect(processed.map((p) => p.id)).toEqual([job.id])
      expect(processed[0].attemptsStarted).toBe(2)
      expect(completed).toEqual([job.id])
      expect(await bull.getJobState(job.id!)).toBe('completed')
      const done = await bull.getJob(job.id!)
      expect(done!.returnvalue).toBe('done')
    } finally {
      await live.close()
      await bull.close()
    }
  })
})
