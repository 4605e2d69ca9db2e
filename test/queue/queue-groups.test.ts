import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, Queue, type Message } from '../../lib/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)

const keysMentioning = async (name: string) => (await etcd.client.getAll().keys()).filter((k) => k.includes(name)).sort()

describe('message groups: enqueue(value, { group })', () => {
  it('one message of a group is under <name>/ at a time; the rest wait, in order, and move in as each is acked', async () => {
    const name = uniqueName('grp')
    const q = new Queue(etcd.client, name)
    const a1 = await q.enqueue('a1', { group: 'a' })
    const a2 = await q.enqueue('a2', { group: 'a' })
    await q.enqueue('b1', { group: 'b' })
    await q.enqueue('a3', { group: 'a' })
    await q.enqueue('plain')
    expect(a1.key.startsWith(`${name}/`)).toBe(true)
    expect(a2.key.startsWith(`__groups/${name}/a/`)).toBe(true)
    expect(await q.size()).toBe(3) // a1, b1, plain

    // Parallel across groups, one per group.
    const first = await q.receive({ max: 10, visibilityTimeout: 30 })
    expect(first.map((m) => [m.value, m.group])).toEqual([
      ['a1', 'a'],
      ['b1', 'b'],
      ['plain', undefined],
    ])
    expect(first[0].id).toBe(a1.id)
    expect(await new Queue(etcd.newClient(), name).receive({ wait: false })).toEqual([])

    // Acking a1 moves a2 in, in the same Txn; its id is the one enqueue returned.
    await q.ack(first[0])
    const [second] = await q.receive({ wait: false })
    expect(second).toMatchObject({ value: 'a2', group: 'a', id: a2.id, receiveCount: 1 })
    await q.ackMany([second, first[1], first[2]])
    const [third] = await q.receive({ wait: false })
    expect(third.value).toBe('a3')
    await q.ack(third)
    // The group's head marker went with its last message: nothing is left.
    expect(await keysMentioning(name)).toEqual([])
  })

  it('a failed message blocks its group until it succeeds', async () => {
    const name = uniqueName('block')
    const q = new Queue(etcd.client, name)
    for (const v of ['x1', 'x2']) await q.enqueue(v, { group: 'x' })
    await q.enqueue('y1', { group: 'y' })
    const [x1, y1] = await q.receive({ max: 10 })
    await q.nack(x1, { delay: 0 })
    await q.ack(y1)
    const again = await q.receive({ max: 10, wait: false })
    expect(again.map((m) => [m.value, m.receiveCount])).toEqual([['x1', 2]])
    await q.ack(again[0])
    expect((await q.receive({ max: 10, wait: false })).map((m) => m.value)).toEqual(['x2'])
  })

  it('…or until it is dead-lettered: then the next one of its group moves in at once; a redrive puts it back in its group', async () => {
    const name = uniqueName('dlgrp')
    const dlq = `dlq/${name}`
    const q = new Queue(etcd.client, name, { maxReceives: 2, deadLetterQueue: dlq, retryDelay: 0 })
    const p1 = await q.enqueue('poison', { group: 'g' })
    await q.enqueue('next', { group: 'g' })
    await q.nack((await q.receive())[0])
    await q.nack((await q.receive())[0]) // its second failure: dead-lettered, and 'next' moves in
    const [next] = await q.receive({ wait: false })
    expect(next).toMatchObject({ value: 'next', group: 'g', receiveCount: 1 })
    expect(await new Queue(etcd.client, dlq).size()).toBe(1)
    // While 'next' is in flight, the redriven message waits behind it in its group.
    expect(await q.redrive({ from: dlq })).toEqual({ moved: 1, skipped: 0 })
    expect(await q.receive({ wait: false })).toEqual([])
    await q.ack(next)
    const [back] = await q.receive({ wait: false })
    expect(back).toMatchObject({ value: 'poison', group: 'g', id: p1.id, receiveCount: 1 })
    await q.ack(back)
    expect(await keysMentioning(name)).toEqual([])
  })

  it('dequeue (destructive) passes the turn on too; group names with "/" and "." are kept apart', async () => {
    const name = uniqueName('dqgrp')
    const q = new Queue(etcd.client, name)
    await q.enqueue('1', { group: 'a/b' })
    await q.enqueue('2', { group: 'a/b' })
    await q.enqueue('3', { group: 'a' })
    await q.enqueue('4', { group: 'a.b' })
    const got = [await q.dequeue(), await q.dequeue(), await q.dequeue(), await q.dequeue()]
    expect(got).toEqual(['1', '3', '4', '2'])
    expect(await keysMentioning(name)).toEqual([])
  })

  it('25 groups x 20 messages, 4 consumers with random failures: never two of a group in flight, each group in enqueue order, all acked once', async () => {
    const name = uniqueName('load')
    const producer = new Queue(etcd.client, name)
    const groups = 25
    const perGroup = 20
    for (let i = 0; i < perGroup; i++)
      await Promise.all(Array.from({ length: groups }, (_, g) => producer.enqueue(`${g}:${i}`, { group: `g${g}` })))
    const inFlight = new Map<string, string>()
    const violations: string[] = []
    const acked = new Map<string, number[]>()
    let concurrentGroups = 0
    const consumer = async () => {
      const q = new Queue(etcd.newClient(), name, { retryDelay: 0 })
      let idle = 0
      while (idle < 3) {
        const batch = await q.receive({ max: 10, visibilityTimeout: 30, wait: false })
        if (batch.length === 0) {
          idle++
          await sleep(100)
          continue
        }
        idle = 0
        for (const m of batch) {
          if (inFlight.has(m.group!)) violations.push(`${m.value} delivered while ${inFlight.get(m.group!)} of its group was in flight`)
          inFlight.set(m.group!, m.value)
        }
        concurrentGroups = Math.max(concurrentGroups, inFlight.size)
        await sleep(5)
        await Promise.all(
          batch.map(async (m) => {
            inFlight.delete(m.group!)
            if (Math.random() < 0.1) return q.nack(m)
            const [g, i] = m.value.split(':').map(Number)
            acked.set(`g${g}`, [...(acked.get(`g${g}`) ?? []), i])
            await q.ack(m)
          }),
        )
      }
    }
    await Promise.all([consumer(), consumer(), consumer(), consumer()])
    expect(violations).toEqual([])
    expect(acked.size).toBe(groups)
    for (const order of acked.values()) expect(order).toEqual(Array.from({ length: perGroup }, (_, i) => i))
    expect(concurrentGroups).toBeGreaterThan(1)
    expect(await keysMentioning(name)).toEqual([])
  })

  it('a consumer SIGKILLed with group heads claimed: their groups wait for the visibility timeout, then resume in order', async () => {
    const name = uniqueName('kill')
    const q = new Queue(etcd.client, name)
    for (let i = 0; i < 3; i++) for (const g of ['a', 'b', 'c']) await q.enqueue(`${g}${i}`, { group: g })
    await q.enqueue('d0', { group: 'd' })
    const w = await Worker.start(etcd.cluster.endpoints)
    const took = await w.request({ op: 'receive', queue: name, max: 3, visibilityTimeout: 2 }, 'received')
    expect(took.messages.map((m: { value: string }) => m.value)).toEqual(['a0', 'b0', 'c0'])
    await w.kill()
    // Only group d proceeds while a, b, c wait for their claims to expire.
    const [d0] = await q.receive({ max: 10, wait: false })
    expect(d0.value).toBe('d0')
    await q.ack(d0)
    const order: string[] = []
    const counts: number[] = []
    while (order.length < 9) {
      const batch: Message[] = await q.receive({ max: 10, visibilityTimeout: 30, signal: AbortSignal.timeout(20_000) })
      expect(new Set(batch.map((m) => m.group)).size).toBe(batch.length)
      for (const m of batch) {
        order.push(m.value)
        counts.push(m.receiveCount)
      }
      await q.ackMany(batch)
    }
    for (const g of ['a', 'b', 'c']) expect(order.filter((v) => v.startsWith(g))).toEqual([`${g}0`, `${g}1`, `${g}2`])
    // The killed consumer's heads came back as second deliveries; the rest are first ones.
    expect(
      order
        .map((v, i) => [v, counts[i]])
        .filter(([, c]) => c === 2)
        .map(([v]) => v)
        .sort(),
    ).toEqual(['a0', 'b0', 'c0'])
    expect(await keysMentioning(name)).toEqual([])
  })

  it('a delayed message joins its group when it comes due (behind what the group received meanwhile)', async () => {
    const name = uniqueName('dlgroup')
    const q = new Queue(etcd.client, name)
    await q.enqueue('g1', { group: 'g' })
    const late = await q.enqueue('g2 delayed', { group: 'g', delayMs: 1000 })
    await q.enqueue('g3', { group: 'g' })
    const order: string[] = []
    while (order.length < 3) {
      const [m] = await q.receive({ signal: AbortSignal.timeout(20_000) })
      order.push(m.value)
      if (m.value === 'g2 delayed') expect(m.id).toBe(late.id)
      await q.ack(m)
    }
    expect(order).toEqual(['g1', 'g3', 'g2 delayed'])
    expect(await keysMentioning(name)).toEqual([])
  })

  it('rejects bad group names before writing anything', async () => {
    const name = uniqueName('badgrp')
    const q = new Queue(etcd.client, name)
    for (const group of ['', 42, null, 'x'.repeat(129), '\ud800']) {
      await expect(q.enqueue('v', { group: group as string })).rejects.toBeInstanceOf(InvalidArgumentError)
    }
    expect(await keysMentioning(name)).toEqual([])
  })
})
