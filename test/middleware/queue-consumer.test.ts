import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { describe, expect, it } from 'vitest'
import { Queue, InvalidArgumentError, QueueMismatchError, PriorityQueue } from '../../lib/index.js'
import { queueConsumer, type JsonMessage } from '../../middleware/index.js'
import { runDispatcher } from '../../dispatch/dispatcher.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

describe('queueConsumer', () => {
  it('acks the successes of a partial batch and redelivers the failure, then dead-letters it after maxReceives', async () => {
    const queue = uniqueName('jobs')
    const dlq = `${queue}-dead`
    const q = new Queue(etcd.client, queue)
    for (const v of ['a', 'poison', 'b']) await q.enqueue(v)
    const seen: string[] = []
    const handler = middy(async (_e: unknown, context: any) => {
      const failures = []
      for (const m of context.etcd.messages) {
        seen.push(`${m.value}#${m.receiveCount}`)
        if (m.value === 'poison') failures.push({ itemIdentifier: m.id })
      }
      return { batchItemFailures: failures }
    }).use(queueConsumer({ queue, batchSize: 10, maxReceives: 2, deadLetterQueue: dlq, retryDelay: 0, client: etcd.client }))

    await handler({}, lambdaContext())
    expect(seen.sort()).toEqual(['a#1', 'b#1', 'poison#1'])
    expect(await q.size()).toBe(1)
    await handler({}, lambdaContext())
    expect(seen).toContain('poison#2')
    // Its second failure reached maxReceives: the nack moved it to the dead-letter queue.
    const third = await handler({}, lambdaContext())
    expect(third).toEqual({ batchItemFailures: [] })
    expect(await q.size()).toBe(0)
    const dead = await new Queue(etcd.client, dlq).receive({ max: 10, wait: false })
    expect(dead.map((m) => m.value)).toEqual(['poison'])
  })

  it('a throwing handler nacks the whole batch; messages come back after the default retry delay', async () => {
    const queue = uniqueName('throwing')
    const q = new Queue(etcd.client, queue)
    await q.enqueue('x')
    const failing = middy(async () => {
      throw new Error('nope')
    }).use(queueConsumer({ queue, client: etcd.client }))
    await expect(failing({}, lambdaContext())).rejects.toThrow('nope')
    const failedAt = performance.now()
    // Not at once: the default retry delay (1 s after a first delivery) holds it back.
    expect(await q.receive({ max: 1, wait: false })).toEqual([])
    const again = await q.receive({ max: 1, signal: AbortSignal.timeout(15_000) })
    expect(performance.now() - failedAt).toBeGreaterThanOrEqual(900)
    expect(again.map((m) => [m.value, m.receiveCount])).toEqual([['x', 2]])
    await q.ack(again[0])
  })

  it('uses the messages a dispatcher put in the event', async () => {
    const queue = uniqueName('dispatched')
    const q = new Queue(etcd.client, queue)
    await q.enqueue('from-dispatcher')
    const [claimed] = await q.receive({ max: 1, visibilityTimeout: 30 })
    const event = {
      etcdQueue: {
        queue,
        messages: [
          { id: claimed.id, key: claimed.key, value: claimed.value, receiveCount: claimed.receiveCount, receipt: claimed.receipt },
        ],
      },
    }
    const got: string[] = []
    const handler = middy(async (_e: unknown, context: any) => {
      got.push(...context.etcd.messages.map((m: { value: string }) => m.value))
    }).use(queueConsumer({ queue, client: etcd.client }))
    await handler(JSON.parse(JSON.stringify(event)), lambdaContext())
    expect(got).toEqual(['from-dispatcher'])
    expect(await q.size()).toBe(0)
  })

  it('rejects bad options when built', () => {
    expect(() => queueConsumer({ queue: 'q', maxReceives: 0 })).toThrow(InvalidArgumentError)
    expect(() => queueConsumer({ queue: 'q', batchSize: 0 })).toThrow(/`batchSize`/)
    expect(() => queueConsumer({ queue: 'q', retryDelay: -1 })).toThrow(/`retryDelay`/)
    expect(() => queueConsumer({ queue: 'q', retryDelay: 10, maxRetryDelay: 5 })).toThrow(/maxRetryDelay \(5\) must be at least retryDelay/)
  })

  it('a poison message with the defaults: 5 deliveries with growing retry delays, then it sits in dlq/<queue> and nothing more runs', async () => {
    const queue = uniqueName('poison')
    const q = new Queue(etcd.client, queue)
    const deliveries: { receiveCount: number; at: number }[] = []
    let invocations = 0
    // The example worker's shape: JSON.parse of every message, failures reported per message.
    const worker = middy(async (_e: unknown, context: Context & { etcd: { messages: JsonMessage[] } }) => {
      invocations++
      const failures = []
      for (const m of context.etcd.messages) {
        deliveries.push({ receiveCount: m.receiveCount, at: performance.now() })
        try {
          JSON.parse(m.value)
        } catch {
          failures.push({ itemIdentifier: m.id })
        }
      }
      return { batchItemFailures: failures }
    }).use(queueConsumer({ queue, client: etcd.client }))
    await q.enqueue('not json')
    const stop = new AbortController()
    const dispatching = runDispatcher({
      client: etcd.client,
      subscriptions: [{ function: 'worker', queue }],
      signal: stop.signal,
      invoke: async (_fn, event) => {
        const res = (await worker(event, lambdaContext())) as { batchItemFailures: { itemIdentifier: string }[] }
        return { ok: true, failedIds: res.batchItemFailures.map((f) => f.itemIdentifier) }
      },
    })
    const dlq = new Queue(etcd.client, `dlq/${queue}`)
    const deadline = performance.now() + 45_000
    while ((await dlq.size()) === 0 && performance.now() < deadline) await sleep(200)
    await sleep(3000) // long enough for a sixth delivery, had there been one
    stop.abort()
    await dispatching
    expect(await dlq.size()).toBe(1)
    expect(await q.size()).toBe(0)
    expect(deliveries.map((d) => d.receiveCount)).toEqual([1, 2, 3, 4, 5])
    expect(invocations).toBe(5)
    // Each retry waited at least the lower end of its jittered delay (1, 1, 2, 4 s: half of 1, 2, 4, 8 rounded up).
    const gaps = deliveries.slice(1).map((d, i) => d.at - deliveries[i].at)
    console.log(
      `poison message: ${invocations} invocations, retry gaps ${gaps.map((g) => (g / 1000).toFixed(1)).join(', ')} s; dead-lettered by the 5th failure, ${((deliveries[4].at - deliveries[0].at) / 1000).toFixed(1)} s after the first delivery`,
    )
    ;[1, 1, 2, 4].forEach((low, i) => expect(gaps[i]).toBeGreaterThanOrEqual(low * 1000 - 100))
    const [dead] = await dlq.receive({ wait: false })
    expect(dead.value).toBe('not json')
  })

  it('a dispatch for another queue fails loudly, naming both, and claims or settles nothing', async () => {
    const queue = uniqueName('invoice')
    const other = `${queue}s`
    const q = new Queue(etcd.client, other)
    await q.enqueue('x')
    const [claimed] = await q.receive({ visibilityTimeout: 30 })
    const ran: string[] = []
    const handler = middy(async () => {
      ran.push('handler')
    }).use(queueConsumer({ queue, client: etcd.client }))
    const event = {
      etcdQueue: {
        queue: other,
        messages: [{ id: claimed.id, key: claimed.key, value: claimed.value, receiveCount: 1, receipt: claimed.receipt }],
      },
    }
    const err = await handler(event, lambdaContext()).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(QueueMismatchError)
    expect(err).toMatchObject({ configured: queue, dispatched: other, code: 'QUEUE_MISMATCH' })
    expect((err as Error).message).toContain(JSON.stringify(queue))
    expect((err as Error).message).toContain(JSON.stringify(other))
    expect(ran).toEqual([])
    // The dispatched message is still claimed by the dispatcher (not acked, not nacked).
    expect(await q.receive({ wait: false })).toEqual([])
    await q.ack(claimed)
    // A PriorityQueue dispatch to a Queue consumer of the same name is a mismatch too.
    const pq = middy(async () => {}).use(queueConsumer({ queue, priority: true, client: etcd.client }))
    await expect(pq({ etcdQueue: { queue, messages: [] } }, lambdaContext())).rejects.toBeInstanceOf(QueueMismatchError)
    expect(await new PriorityQueue(etcd.client, queue).size()).toBe(0)
  })
})
