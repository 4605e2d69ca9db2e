import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { Queue, InvalidArgumentError } from '../../lib/index.js'
import { queueConsumer } from '../../middleware/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
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
    }).use(queueConsumer({ queue, batchSize: 10, maxReceives: 2, deadLetterQueue: dlq, client: etcd.client }))

    await handler({}, lambdaContext())
    expect(seen.sort()).toEqual(['a#1', 'b#1', 'poison#1'])
    expect(await q.size()).toBe(1)
    await handler({}, lambdaContext())
    expect(seen).toContain('poison#2')
    // The third delivery would exceed maxReceives: the message moves to the dead-letter queue.
    const third = await handler({}, lambdaContext())
    expect(third).toEqual({ batchItemFailures: [] })
    expect(await q.size()).toBe(0)
    const dead = await new Queue(etcd.client, dlq).receive({ max: 10, wait: false })
    expect(dead.map((m) => m.value)).toEqual(['poison'])
  })

  it('a throwing handler nacks the whole batch; messages come back', async () => {
    const queue = uniqueName('throwing')
    const q = new Queue(etcd.client, queue)
    await q.enqueue('x')
    const failing = middy(async () => {
      throw new Error('nope')
    }).use(queueConsumer({ queue, client: etcd.client }))
    await expect(failing({}, lambdaContext())).rejects.toThrow('nope')
    const again = await q.receive({ max: 1, wait: false })
    expect(again.map((m) => [m.value, m.receiveCount])).toEqual([['x', 2]])
    await q.ack(again[0])
  })

  it('uses the messages a dispatcher put in the event', async () => {
    const queue = uniqueName('dispatched')
    const q = new Queue(etcd.client, queue)
    await q.enqueue('from-dispatcher')
    const [claimed] = await q.receive({ max: 1, visibilityTimeout: 30 })
    const event = { etcdQueue: { queue, messages: [{ id: claimed.id, key: claimed.key, value: claimed.value, receiveCount: claimed.receiveCount, receipt: claimed.receipt }] } }
    const got: string[] = []
    const handler = middy(async (_e: unknown, context: any) => {
      got.push(...context.etcd.messages.map((m: { value: string }) => m.value))
    }).use(queueConsumer({ queue, client: etcd.client }))
    await handler(JSON.parse(JSON.stringify(event)), lambdaContext())
    expect(got).toEqual(['from-dispatcher'])
    expect(await q.size()).toBe(0)
  })

  it('rejects maxReceives without a dead-letter queue', () => {
    expect(() => queueConsumer({ queue: 'q', maxReceives: 3 })).toThrow(InvalidArgumentError)
    expect(() => queueConsumer({ queue: 'q', batchSize: 0 })).toThrow(/`batchSize`/)
  })
})
