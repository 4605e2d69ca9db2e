// A job producer and an `etcdQueue` worker. The producer enqueues; the dispatcher (the offline
// plugin locally, the `dispatcher` function in the cloud) claims batches and invokes the
// worker with them; `queueConsumer` acks what the worker finished and nacks what failed, so a
// job is redelivered until done. The worker counts deliveries per job, which shows
// exactly-once processing in the normal case.
import { randomUUID } from 'node:crypto'
import middy from '@middy/core'
import { queueConsumer, type QueueMessage } from '../middleware/index.js'
import { InvalidArgumentError, Queue, runSTM, sharedClient } from '../lib/index.js'
import { body, httpErrors, json, param, type HttpEvent } from './http.js'

/** The queue name; serverless.yml passes the same value to the etcdQueue event. */
const JOBS_QUEUE = process.env.JOBS_QUEUE || 'example/jobs'
const doneKey = (id: string) => `example/jobs-done/${id}`

interface Job {
  id: string
  task: string
}

/** POST /jobs { task } → 202 { id } */
export const submit = middy(async (event: HttpEvent) => {
  const { task } = body<{ task?: string }>(event)
  if (typeof task !== 'string' || task === '') throw new InvalidArgumentError('body must be { task: string }')
  const job: Job = { id: randomUUID(), task }
  const { id: messageId } = await new Queue(sharedClient(), JOBS_QUEUE).enqueue(JSON.stringify(job))
  return json(202, { id: job.id, messageId })
}).use(httpErrors())

/** GET /jobs/{id} → { id, deliveries, result } (deliveries 0 while pending). */
export const status = middy(async (event: HttpEvent) => {
  const id = param(event, 'id')
  const raw = await sharedClient().get(doneKey(id)).string()
  const record = raw ? (JSON.parse(raw) as { deliveries: number; result: string }) : { deliveries: 0, result: null }
  return json(200, { id, ...record })
}).use(httpErrors())

/** GET /jobs → { pending } (items still in the queue, claimed ones included). */
export const pending = middy(async () => json(200, { pending: await new Queue(sharedClient(), JOBS_QUEUE).size() })).use(httpErrors())

/** The etcdQueue worker: processes each job, records it, reports the ones that failed. */
export const worker = middy(async (_event: unknown, context: { etcd: { messages: QueueMessage[] } }) => {
  const failures: { itemIdentifier: string }[] = []
  for (const message of context.etcd.messages) {
    try {
      const job = JSON.parse(message.value) as Job
      const result = job.task.split('').reverse().join('') // the "work"
      // Count deliveries in one STM transaction: exact even if two deliveries overlapped.
      await runSTM(sharedClient(), async (stm) => {
        const before = await stm.get(doneKey(job.id))
        const deliveries = before ? (JSON.parse(before) as { deliveries: number }).deliveries + 1 : 1
        stm.put(doneKey(job.id), JSON.stringify({ deliveries, result, messageId: message.id, receiveCount: message.receiveCount }))
      })
    } catch (err) {
      console.error(`job message ${message.id} failed:`, err)
      failures.push({ itemIdentifier: message.id })
    }
  }
  return { batchItemFailures: failures }
}).use(queueConsumer({ queue: JOBS_QUEUE, batchSize: 5, visibilityTimeout: 30 }))
