import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Context } from 'aws-lambda'
import middy from '@middy/core'
import { Queue, type EtcdClient, type QueueDispatchEvent } from '../../lib/index.js'
import { queueConsumer } from '../../middleware/index.js'
import { dispatcherHandler, lambdaInvoker } from '../../dispatch/index.js'
import { lambdaContext } from '../../testing/index.js'
import { scheduleRuns, seededJitter, type ScheduledRun } from '../../test/support/scheduled-runs.js'
import { entry, type Scenario } from '../util/types.js'
import { pct, sleep } from '../util/stats.js'

/** The schedule's rate: a fifth of the recommended `rate(1 minute)`, so a run has several boundaries. */
const EVERY_MS = 12_000
/** The function's timeout: twice the rate, as recommended (120 s for `rate(1 minute)`). */
const TIMEOUT_MS = 24_000
/** The shipped default ETCD_DISPATCH_TAIL_MS. */
const TAIL_MS = 10_000
/** How late a scheduled run may start (EventBridge's delivery plus the function's start). */
const JITTER_MS = 1_000
/** One message every … ms, without waiting for the previous enqueue (an open-loop producer). */
const SEND_EVERY_MS = 50
/** Messages sent this close to a run's start count as "at a boundary". */
const BOUNDARY_MS = 1_000

const CONSUMER = 'bench-consumer'
const ROW = 'cloud-shape enqueue→invoke latency across run boundaries'

/**
 * A stand-in for the Lambda Invoke API that runs a `queueConsumer` function on each dispatched
 * batch, as a deployed consumer would (it acks what its handler finished); `seen` is called
 * with each message's value as the handler gets it.
 */
async function fakeLambda(client: EtcdClient, queue: string, seen: (value: string) => void): Promise<{ server: Server; endpoint: string }> {
  const consumer = middy(async (_event: unknown, context: Context & { etcd: { messages: { value: string }[] } }) => {
    for (const m of context.etcd.messages) seen(m.value)
    return { batchItemFailures: [] }
  }).use(queueConsumer({ queue, client }))
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      consumer(JSON.parse(body) as QueueDispatchEvent, lambdaContext(30_000, CONSUMER)).then(
        (result) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result)),
        (err: Error) =>
          res
            .writeHead(200, { 'X-Amz-Function-Error': 'Unhandled' })
            .end(JSON.stringify({ errorMessage: err.message, errorType: err.name })),
      )
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return { server, endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

/** p`p` of each of `parts` consecutive slices of `samples` (in time order): a latency's internal repeats. */
function perPart(samples: number[], p: number, parts = 3): number[] {
  const size = Math.floor(samples.length / parts)
  return Array.from({ length: parts }, (_, i) => pct(samples.slice(i * size, (i + 1) * size), p))
}

/**
 * The deployable dispatcher as it runs in the cloud: handler runs started on a schedule (rate
 * 12 s, each up to 1 s late), each with a Lambda context counting down from a 24 s timeout and
 * the default 10 s tail, invoking a `queueConsumer` function through the Invoke API
 * (lambdaInvoker against a local stand-in); a producer enqueues a message every 50 ms. Measures
 * enqueue → consumer invocation latency over every run boundary, and the run time the schedule
 * costs per second of dispatching.
 */
export const dispatcherHandover: Scenario = {
  name: 'dispatcher-handover',
  async run(ctx) {
    const runs = Math.max(3, Math.round(6 * ctx.scale))
    const queue = ctx.prefix('handover')
    const election = ctx.prefix('dispatcher-election')
    const producer = new Queue(ctx.newClient(), queue)
    const sentAt = new Map<string, number>()
    const latency = new Map<string, number>()
    const { server, endpoint } = await fakeLambda(ctx.newClient(), queue, (value) => {
      if (!latency.has(value)) latency.set(value, performance.now() - sentAt.get(value)!)
    })
    // Two execution environments, as Lambda keeps for runs that overlap: runs alternate between them.
    const environments = [ctx.newClient(), ctx.newClient()].map((client) =>
      dispatcherHandler({
        client,
        election,
        tailMs: TAIL_MS,
        subscriptions: [{ function: CONSUMER, queue, batchSize: 10 }],
        invoke: lambdaInvoker({ endpoint, env: {} }),
      }),
    )
    let started = 0
    const sends: Promise<unknown>[] = []
    let producing = true
    const t0 = performance.now()
    const produceLoop = async () => {
      for (let i = 0; producing; i++) {
        const value = `m${i}`
        sentAt.set(value, performance.now())
        sends.push(producer.enqueue(value))
        await sleep(SEND_EVERY_MS)
      }
    }
    let produce: Promise<void> = Promise.resolve()
    let done: ScheduledRun<Awaited<ReturnType<(typeof environments)[0]>>>[]
    try {
      done = await scheduleRuns((event, context) => environments[started++ % 2](event, context), {
        runs,
        everyMs: EVERY_MS,
        timeoutMs: TIMEOUT_MS,
        jitter: seededJitter(JITTER_MS),
        // Messages from the first run's start (a dispatcher that runs 24/7 has no first run);
        // the last run has no successor: stop sending 2 s into it, then let it claim to its tail.
        onStart: (i) => {
          if (i === 0) produce = produceLoop()
          if (i === runs - 1) setTimeout(() => (producing = false), 2_000)
        },
      })
      await produce
      await Promise.all(sends)
    } finally {
      producing = false
      server.close()
    }
    const failed = done.filter((r) => r.error !== undefined || r.endedAt > r.deadline)
    if (failed.length)
      throw new Error(`${failed.length} dispatcher runs failed or overran their timeout: ${String(failed[0].error ?? 'overran')}`)
    const lost = [...sentAt.keys()].filter((v) => !latency.has(v))
    if (lost.length) throw new Error(`${lost.length} of ${sentAt.size} messages were never invoked`)
    // In send order, so each third of the samples is a third of the schedule.
    const ordered = [...sentAt.entries()].sort((a, b) => a[1] - b[1])
    const samples = ordered.map(([v]) => latency.get(v)!)
    const boundaries = done.slice(1).map((r) => r.startedAt)
    const atBoundary = ordered.filter(([, at]) => boundaries.some((b) => Math.abs(at - b) <= BOUNDARY_MS)).map(([v]) => latency.get(v)!)
    const p = (xs: number[], q: number) => Number(pct(xs, q).toFixed(1))
    // Every run but the last handed over to the next; their time is what the schedule costs.
    const handedOver = done.slice(0, -1)
    const runSeconds = handedOver.reduce((s, r) => s + (r.endedAt - r.startedAt), 0) / 1000
    const perScheduleSecond = runSeconds / ((handedOver.length * EVERY_MS) / 1000)
    const led = done.filter((r) => r.result?.leader).length
    const seconds = (performance.now() - t0) / 1000
    return {
      entries: [
        entry(ROW, 'p50 ms', perPart(samples, 0.5), '—', null, { kind: 'none' }),
        entry(ROW, 'p99 ms', perPart(samples, 0.99), 'target p99 (issue 22)', 2000, { kind: 'max-ratio', ratio: 1 }),
        entry('cloud-shape dispatcher: invocation-seconds per second of schedule', 'ratio', perScheduleSecond, '—', null, { kind: 'none' }),
      ],
      notes: [
        `${runs} dispatcher runs started every ${EVERY_MS / 1000} s (each 0–${JITTER_MS} ms late, seeded), each with a Lambda context counting down from ${TIMEOUT_MS / 1000} s and tailMs ${TAIL_MS / 1000} s; ` +
          `the consumer a queueConsumer function behind a local Invoke API stand-in (RequestResponse through lambdaInvoker); a message enqueued every ${SEND_EVERY_MS} ms (open loop) for ${seconds.toFixed(0)} s. ` +
          `${sentAt.size} messages, every one invoked; ${led} of ${runs} runs led, each returning before its timeout. ` +
          `Enqueue (before the call) → the consumer's handler: p50 ${p(samples, 0.5)} ms, p99 ${p(samples, 0.99)} ms, max ${p(samples, 1)} ms (p99 of each third: ${perPart(
            samples,
            0.99,
          )
            .map((x) => x.toFixed(1))
            .join(', ')} ms); ` +
          `the ${atBoundary.length} messages sent within ${BOUNDARY_MS} ms of one of the ${boundaries.length} run boundaries: p50 ${p(atBoundary, 0.5)} ms, p99 ${p(atBoundary, 0.99)} ms, max ${p(atBoundary, 1)} ms. ` +
          `Runs that handed over lasted ${(runSeconds / handedOver.length).toFixed(2)} s on average for a ${EVERY_MS / 1000} s period: ${perScheduleSecond.toFixed(3)} invocation-seconds per second of schedule (×3600 for an hour).`,
      ],
      details: {
        runs: done.map((r) => ({ startedAt: r.startedAt - t0, ms: r.endedAt - r.startedAt, result: r.result })),
        slowest: ordered
          .map(([v, at]) => ({ sentAt: at - t0, ms: latency.get(v)! }))
          .sort((a, b) => b.ms - a.ms)
          .slice(0, 10),
        messages: sentAt.size,
        p50: pct(samples, 0.5),
        p99: pct(samples, 0.99),
        max: pct(samples, 1),
        boundary: { n: atBoundary.length, p99: pct(atBoundary, 0.99), max: pct(atBoundary, 1) },
        perScheduleSecond,
      },
    }
  },
}
