import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { Barrier, Isolation, Queue, WaitTimeoutError, InvalidArgumentError } from '../lib/index.js'
import { etcdBarrier, etcdDoubleBarrier, queueConsumer, withSTM } from '../middleware/index.js'
import { sleep, uniqueName, useEtcd } from './helpers.js'
import { lambdaContext } from './lambda.js'

const etcd = useEtcd()
const keysUnder = (prefix: string) => etcd.client.getAll().prefix(prefix).keys()

describe('etcdBarrier', () => {
  it('holds the handler until the barrier is released', async () => {
    const name = uniqueName('barrier')
    const barrier = new Barrier(etcd.client, name)
    await barrier.hold()
    let ran = 0
    const handler = middy(async () => {
      ran++
    }).use(etcdBarrier({ name, client: etcd.client }))
    const waiting = Promise.all([handler({}, lambdaContext()), handler({}, lambdaContext())])
    await sleep(200)
    expect(ran).toBe(0)
    await barrier.release()
    await waiting
    expect(ran).toBe(2)
  })

  it('gives up with WaitTimeoutError within waitMs', async () => {
    const name = uniqueName('barrier-timeout')
    await new Barrier(etcd.client, name).hold()
    const handler = middy(async () => 'ran').use(etcdBarrier({ name, waitMs: 200, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(WaitTimeoutError)
  })
})

describe('etcdDoubleBarrier', () => {
  it('three invocations start together and finish together; nothing is left behind', async () => {
    const name = uniqueName('dbarrier')
    const log: string[] = []
    const handler = middy(async (event: { i: number }) => {
      log.push(`start${event.i}`)
      await sleep(event.i * 50)
      log.push(`end${event.i}`)
    }).use(etcdDoubleBarrier({ name, count: 3, client: etcd.client }))
    const first = handler({ i: 0 }, lambdaContext())
    const second = handler({ i: 1 }, lambdaContext())
    await sleep(200)
    expect(log).toEqual([])
    await Promise.all([first, second, handler({ i: 2 }, lambdaContext())])
    expect(log.slice(0, 3).every((s) => s.startsWith('start'))).toBe(true)
    expect(await keysUnder(`${name}/waiters/`)).toEqual([])
  })

  it('an entry that times out leaves no waiter key', async () => {
    const name = uniqueName('dbarrier-timeout')
    const handler = middy(async () => 'ran').use(etcdDoubleBarrier({ name, count: 2, waitMs: 200, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(WaitTimeoutError)
    expect(await keysUnder(`${name}/waiters/`)).toEqual([])
  })

  it('rejects count < 1 at construction', () => {
    expect(() => etcdDoubleBarrier({ name: 'x', count: 0 })).toThrow(/`count` must be an integer in 1/)
    expect(() => etcdDoubleBarrier({ name: 'x' } as any)).toThrow(/`count` is required/)
  })
})

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

describe('withSTM', () => {
  it('keeps the seed bank summed under 10 concurrent transfer invocations', async () => {
    const bank = uniqueName('bank')
    const accounts = Array.from({ length: 5 }, (_, i) => `${bank}/acct${i}`)
    for (const a of accounts) await etcd.client.put(a).value('100')
    const transfer = middy(
      withSTM(
        async (event: { from: number; to: number }, context) => {
          const { stm } = context.etcd
          const from = Number(await stm.get(accounts[event.from]))
          const to = Number(await stm.get(accounts[event.to]))
          const amount = Math.floor(from / 2)
          stm.put(accounts[event.from], String(from - amount))
          stm.put(accounts[event.to], String(to + amount))
          return amount
        },
        { isolation: Isolation.SerializableSnapshot, client: etcd.client },
      ),
    )
    await Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let i = 0; i < 10; i++) {
          const from = (w + i) % 5
          await transfer({ from, to: (from + 1 + (i % 4)) % 5 }, lambdaContext())
        }
      }),
    )
    let sum = 0
    for (const a of accounts) sum += Number(await etcd.client.get(a).string())
    expect(sum).toBe(500)
  })

  it('a handler that throws writes nothing', async () => {
    const key = uniqueName('stm-throw')
    const handler = withSTM(
      async (_e: unknown, context) => {
        context.etcd.stm.put(key, 'written')
        throw new Error('changed my mind')
      },
      { client: etcd.client },
    )
    await expect(handler({}, lambdaContext())).rejects.toThrow('changed my mind')
    expect(await etcd.client.get(key).string()).toBeNull()
  })

  it('rejects bad options', () => {
    expect(() => withSTM(async () => 1, { isolation: 'Snapshot' as any })).toThrow(/`isolation`/)
    expect(() => withSTM(async () => 1, { maxAttempts: 0 })).toThrow(/`maxAttempts`/)
  })
})
