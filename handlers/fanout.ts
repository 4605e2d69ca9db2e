// Fan-out: one function invokes FANOUT_WORKERS workers through the Lambda Invoke API; the
// workers meet on a double barrier (etcdDoubleBarrier), so none starts its work before all have
// arrived and none finishes before all are done.
import { randomUUID } from 'node:crypto'
import middy from '@middy/core'
import { etcdDoubleBarrier } from '../middleware/index.js'
import { sharedClient } from '../lib/index.js'
import { httpErrors, json } from './http.js'
import { lambdaClient } from './lambda.js'

const WORKERS = Number(process.env.FANOUT_WORKERS || 3)
const barrierName = (batch: string) => `example/fanout/${batch}`

interface WorkerEvent {
  batch: string
  index: number
}

/** POST /fanout → invokes the workers and returns what each saw. */
export const start = middy(async () => {
  const { InvokeCommand } = await import('@aws-sdk/client-lambda')
  const lambda = await lambdaClient()
  const batch = randomUUID()
  const results = await Promise.all(
    Array.from({ length: WORKERS }, async (_, index) => {
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

/** One worker: runs between the two sides of the batch's double barrier. */
export const worker = middy(async (event: WorkerEvent) => {
  // Every participant has entered: all their waiter keys are there now.
  const participants = await sharedClient().getAll().prefix(`${barrierName(event.batch)}/waiters/`).count()
  return { index: event.index, participants, at: Date.now() }
}).use(etcdDoubleBarrier({ name: (event: WorkerEvent) => barrierName(event.batch), count: WORKERS, waitMs: 30_000 }))
