// Fan-out: one function invokes FANOUT_WORKERS workers through the Lambda Invoke API; the
// workers meet on a double barrier (etcdDoubleBarrier), so none starts its work before all have
// arrived and none finishes before all are done.
import { randomUUID } from 'node:crypto'
import middy, { type MiddlewareObj } from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdDoubleBarrier } from '../middleware/index.js'
import { httpErrors, json } from './http.js'
import { lambdaClient } from './lambda.js'

const WORKERS = Number(process.env.FANOUT_WORKERS || 3)
const STAGGER_MS = 200
const barrierName = (batch: string) => `example/fanout/${batch}`

interface WorkerEvent {
  batch: string
  index: number
}

/** POST /fanout → invokes the workers, 200 ms apart, and returns what each saw. */
export const start = middy(async () => {
  const { InvokeCommand } = await import('@aws-sdk/client-lambda')
  const lambda = await lambdaClient()
  const batch = randomUUID()
  const results = await Promise.all(
    Array.from({ length: WORKERS }, async (_, index) => {
      // Staggered on purpose: the early workers must wait at the barrier for the late ones.
      await new Promise((r) => setTimeout(r, index * STAGGER_MS))
      const res = await lambda.send(
        new InvokeCommand({
          FunctionName: process.env.FANOUT_WORKER_FUNCTION,
          InvocationType: 'RequestResponse',
          Payload: Buffer.from(JSON.stringify({ batch, index } satisfies WorkerEvent)),
        }),
      )
      const text = res.Payload ? Buffer.from(res.Payload).toString('utf8') : 'null'
      return res.FunctionError ? { index, error: text } : JSON.parse(text)
    }),
  )
  return json(200, { batch, workers: WORKERS, results })
}).use(httpErrors())

/** What a worker reports: when it arrived, ran and left (ms since the epoch). */
interface WorkerTimes {
  index: number
  arrivedAt: number
  startedAt: number
  finishedAt: number
  leftAt?: number
}

/** Stamps arrival before the barrier's entry and departure after its exit (it wraps the barrier). */
const stamps: MiddlewareObj<WorkerEvent, WorkerTimes, Error, any> = {
  before: (request) => {
    request.context.arrivedAt = Date.now()
  },
  after: (request) => {
    request.response = { ...request.response!, leftAt: Date.now() }
  },
}

/** One worker: its body runs between the two sides of the batch's double barrier. */
export const worker = middy(async (event: WorkerEvent, context: Context & { arrivedAt?: number }): Promise<WorkerTimes> => {
  const startedAt = Date.now()
  await new Promise((r) => setTimeout(r, 100 * (WORKERS - event.index))) // the "work", longest for the first
  return { index: event.index, arrivedAt: context.arrivedAt!, startedAt, finishedAt: Date.now() }
})
  .use(stamps)
  .use(etcdDoubleBarrier({ name: (event: WorkerEvent) => barrierName(event.batch), count: WORKERS, waitMs: 30_000 }))
