// A job producer and an `etcdQueue` worker. The producer enqueues (optionally delayed, or in a
// group whose jobs run one at a time, in order); the dispatcher (the offline plugin locally,
// the `dispatcher` function in the cloud) claims batches and invokes the worker with them;
// `queueConsumer` acks what the worker finished and nacks what failed, so a job is redelivered
// after a growing retry delay, and after 5 deliveries moves to the dead-letter queue
// `dlq/example/jobs` (`middy-etcd queue redrive dlq/example/jobs` brings it back). The worker
// counts deliveries per job, which shows exactly-once processing in the normal case.
import { randomUUID } from 'node:crypto'
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { queueConsumer, type JsonMessage } from '../middleware/index.js'
import { Queue, runSTM, sharedClient } from '../lib/index.js'
import { body, httpErrors, intField, json, param, stringField, type HttpEvent } from './http.js'

/** The queue name; serverless.yml passes the same value to the etcdQueue event. */
const JOBS_QUEUE = process.env.JOBS_QUEUE || 'example/jobs'
/** Where a job goes after failing 5 times (the etcdQueue event in serverless.yml says the same). */
const JOBS_DEAD_LETTERS = `dlq/${JOBS_QUEUE}`
const JOB = '{ task: string, delayMs?: number, group?: string }'
/** Longest delay a job may ask for (15 minutes, as SQS). */
const MAX_JOB_DELAY_MS = 900_000
const doneKey = (id: string) => `example/jobs-done/${id}`

interface Job {
  id: string
  task: string
}

/** POST /jobs { task, delayMs?, group? } → 202 { id, messageId } */
export const submit = middy(async (event: HttpEvent) => {
  const input = body(event)
  const job: Job = { id: randomUUID(), task: stringField(input, 'task', JOB) }
  const delayMs = intField(input, 'delayMs', JOB, { min: 0, max: MAX_JOB_DELAY_MS }, 0)
  const group = input.group === undefined ? undefined : stringField(input, 'group', JOB)
  const { id: messageId } = await new Queue(sharedClient(), JOBS_QUEUE).enqueue(JSON.stringify(job), {
    delayMs,
    ...(group === undefined ? {} : { group }),
  })
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
export const worker = middy(async (_event: unknown, context: Context & { etcd: { messages: JsonMessage[] } }) => {
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
}).use(queueConsumer({ queue: JOBS_QUEUE, batchSize: 5, visibilityTimeout: 30, maxReceives: 5, deadLetterQueue: JOBS_DEAD_LETTERS }))
