import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, PriorityQueue, Queue } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)

const keysMentioning = async (name: string) => (await etcd.client.getAll().keys()).filter((k) => k.includes(name)).sort()

/** Fills `name`'s dead-letter queue with `n` messages `m0..` the way consumers do: received, failed, dead-lettered. */
async function deadLetters(name: string, n: number) {
  const dlq = `dlq/${name}`
  const q = new Queue(etcd.client, name, { maxReceives: 1, deadLetterQueue: dlq })
  const ids = new Map<string, string>()
  for (let i = 0; i < n; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, n - i) }, async (_, j) => ids.set((await q.enqueue(`m${i + j}`)).id, `m${i + j}`)))
  }
  for (;;) {
    const batch = await q.receive({ max: 100, visibilityTimeout: 30, wait: false })
    if (batch.length === 0) break
    await Promise.all(batch.map((m) => q.nack(m))) // the first failure reaches maxReceives 1: dead-lettered
  }
  expect(await new Queue(etcd.client, dlq).size()).toBe(n)
  return { q, dlq, ids }
}

/** Every payload in `queue` (items, claimed or not), with how often it occurs. */
async function payloads(queue: string) {
  const all = await etcd.client.getAll().prefix(`${queue}/`).strings()
  const counts = new Map<string, number>()
  for (const v of Object.values(all)) counts.set(v, (counts.get(v) ?? 0) + 1)
  return counts
}

describe('redrive: dead letters back into the queue', () => {
  it('moves every dead letter back, oldest first (in key order: when each was dead-lettered), keeping its id, with its receive count reset', async () => {
    const name = uniqueName('rd')
    const { q, dlq, ids } = await deadLetters(name, 5)
    // Key order, as consumers serve a queue: a Range sorted by mod revision reads every value.
    const deadOrder = await etcd.client.getAll().prefix(`${dlq}/`).sort('Key', 'Ascend').strings()
    expect(await q.redrive({ from: dlq })).toEqual({ moved: 5, skipped: 0 })
    expect(await new Queue(etcd.client, dlq).size()).toBe(0)
    const back = await q.receive({ max: 10, wait: false })
    expect(back.map((m) => m.value)).toEqual(Object.values(deadOrder))
    for (const m of back) {
      expect(m.receiveCount).toBe(1)
      expect(ids.get(m.id)).toBe(m.value)
    }
    await q.ackMany(back)
    expect(await keysMentioning(name)).toEqual([])
  })

  it('moves at most max, and leaves dead letters a consumer of the dead-letter queue has claimed', async () => {
    const name = uniqueName('rdmax')
    const { q, dlq } = await deadLetters(name, 6)
    const dead = new Queue(etcd.client, dlq)
    const [held] = await dead.receive({ visibilityTimeout: 30 }) // the oldest dead letter
    expect(await q.redrive({ from: dlq, max: 2 })).toEqual({ moved: 2, skipped: 1 })
    expect(await q.redrive({ from: dlq })).toEqual({ moved: 3, skipped: 1 })
    expect(await dead.size()).toBe(1)
    await dead.ack(held)
    expect(await q.size()).toBe(5)
  })

  it('PriorityQueue: a dead letter goes back to its priority', async () => {
    const name = uniqueName('rdprio')
    const dlq = `dlq/${name}`
    const q = new PriorityQueue(etcd.client, name, { maxReceives: 1, deadLetterQueue: dlq })
    await q.enqueue('p7', 7)
    await q.enqueue('p3', 3)
    for (const m of await q.receive({ max: 10 })) await q.nack(m)
    expect(await q.redrive({ from: dlq })).toEqual({ moved: 2, skipped: 0 })
    const back = await q.receive({ max: 10, wait: false })
    expect(back.map((m) => [m.value, m.priority])).toEqual([
      ['p3', 3],
      ['p7', 7],
    ])
  })

  it('interrupted midway (aborted; then a redriving process SIGKILLed): nothing lost, nothing doubled, a second run moves the rest', async () => {
    const name = uniqueName('rdint')
    const { q, dlq } = await deadLetters(name, 600)
    // Both queues read at one revision: a Txn of the killed process may land just after it died.
    const snapshot = async () => {
      const ks = keyspace(etcd.client)
      const res = await ks.txn([], [ks.get(`${name}/`, { prefix: true }), ks.get(`${dlq}/`, { prefix: true })])
      const [queued, dead] = [res.results[0].range!.kvs, res.results[1].range!.kvs]
      const all = new Map<string, number>()
      for (const kv of [...queued, ...dead]) all.set(kv.value.toString(), (all.get(kv.value.toString()) ?? 0) + 1)
      return { queued: queued.length, dead: dead.length, all }
    }

    // 1. Aborted in this process after some moved.
    const stop = new AbortController()
    const aborted = q.redrive({ from: dlq, signal: stop.signal })
    while ((await q.size()) < 50) await sleep(5)
    stop.abort(new Error('operator pressed ^C'))
    await expect(aborted).rejects.toThrow('^C')
    const afterAbort = await snapshot()
    expect(afterAbort.queued).toBeGreaterThanOrEqual(50)
    expect([afterAbort.all.size, afterAbort.queued + afterAbort.dead]).toEqual([600, 600])
    // 2. A redrive in another process, SIGKILLed midway.
    const w = await Worker.start(etcd.cluster.endpoints)
    w.send({ op: 'redrive', from: dlq, to: name })
    const before = await q.size()
    while ((await q.size()) < before + 100) await sleep(5)
    await w.kill()
    const { queued: moved, dead, all } = await snapshot()
    expect(moved).toBeGreaterThanOrEqual(150)
    expect(moved).toBeLessThan(600)
    expect(all.size).toBe(600)
    expect([...all.values()].every((n) => n === 1)).toBe(true)
    expect(moved + dead).toBe(600)

    // 3. Running it again moves exactly the rest.
    expect(await q.redrive({ from: dlq })).toEqual({ moved: dead, skipped: 0 })
    const after = await payloads(name)
    expect(after.size).toBe(600)
    expect([...after.values()].every((n) => n === 1)).toBe(true)
    expect(await keysMentioning(dlq)).toEqual([])
  })

  it('rejects bad options before moving anything', async () => {
    const name = uniqueName('rdbad')
    const q = new Queue(etcd.client, name)
    for (const bad of [
      undefined,
      null,
      {},
      { from: '' },
      { from: name },
      { from: `${name}/dead` },
      { from: 'd', max: 0 },
      { from: 'd', max: 1.5 },
    ]) {
      await expect(q.redrive(bad as never)).rejects.toBeInstanceOf(InvalidArgumentError)
    }
  })
})
