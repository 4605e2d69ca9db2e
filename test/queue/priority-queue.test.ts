import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, PriorityQueue } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd(3)

const keysMentioning = async (name: string) => (await etcd.client.getAll().keys()).filter((k) => k.includes(name))
const randomInt = (n: number) => Math.floor(Math.random() * n)

describe('PriorityQueue (Go recipe ports)', () => {
  it('TestPrQueueOneReaderOneWriter: dequeued priorities never decrease', async () => {
    const q = new PriorityQueue(etcd.memberClient(0), uniqueName('testprq'))
    const priorities = Array.from({ length: 5 }, () => randomInt(3))
    for (const p of priorities) await q.enqueue(String(p), p)
    const got: number[] = []
    for (let i = 0; i < 5; i++) got.push(Number(await q.dequeue({ signal: AbortSignal.timeout(20_000) })))
    expect(got).toEqual([...priorities].sort((a, b) => a - b))
  })

  it('TestPrQueueManyReaderManyWriter: 3 writers x 2 items, 3 readers take them all', async () => {
    const name = uniqueName('prq')
    const writes = Array.from({ length: 3 }, async (_, w) => {
      const q = new PriorityQueue(etcd.memberClient(w), name)
      for (let j = 0; j < 2; j++) await q.enqueue(`${w}-${j}`, randomInt(2))
    })
    let reads = 0
    const got: string[] = []
    const readers = Array.from({ length: 3 }, async (_, r) => {
      const q = new PriorityQueue(etcd.memberClient(r + 1), name)
      while (++reads <= 6) got.push(await q.dequeue({ signal: AbortSignal.timeout(20_000) }))
    })
    await Promise.all([...writes, ...readers])
    expect(got.sort()).toEqual(['0-0', '0-1', '1-0', '1-1', '2-0', '2-1'])
    expect(await new PriorityQueue(etcd.client, name).size()).toBe(0)
  })

  it('items of priorities 0..9 pushed concurrently come out 0..9', async () => {
    const name = uniqueName('prio')
    const order = Array.from({ length: 10 }, (_, i) => i).sort(() => Math.random() - 0.5)
    await Promise.all(order.map((p, i) => new PriorityQueue(etcd.memberClient(i), name).enqueue(`p${p}`, p)))
    const q = new PriorityQueue(etcd.memberClient(2), name)
    const got: string[] = []
    for (let i = 0; i < 10; i++) got.push(await q.dequeue())
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`))
  })

  it('concurrent producers of one priority get consecutive sequence numbers, FIFO', async () => {
    const name = uniqueName('seq')
    const written = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        new PriorityQueue(etcd.memberClient(i), name).enqueue(`v${i}`, 7).then((r) => ({ key: r.key, value: `v${i}` })),
      ),
    )
    written.sort((a, b) => (a.key < b.key ? -1 : 1))
    expect(written.map((w) => w.key)).toEqual(Array.from({ length: 6 }, (_, i) => `${name}/00007/${String(i).padStart(16, '0')}`))
    const q = new PriorityQueue(etcd.client, name)
    const values = []
    for (let i = 0; i < 6; i++) values.push(await q.dequeue())
    // FIFO within a priority: the value written under sequence i comes out i-th.
    expect(values).toEqual(written.map((w) => w.value))
  })
})

describe('PriorityQueue layout', () => {
  it('enqueue writes <name>/<%05d prio>/<%016d seq> and the __<name>/<%05d prio> bookkeeping key', async () => {
    const name = uniqueName('layout')
    const q = new PriorityQueue(etcd.client, name)
    expect((await q.enqueue('a', 2)).key).toBe(`${name}/00002/0000000000000000`)
    expect((await q.enqueue('b', 2)).key).toBe(`${name}/00002/0000000000000001`)
    expect((await q.enqueue('c', 65535)).key).toBe(`${name}/65535/0000000000000000`)
    expect((await keysMentioning(name)).sort()).toEqual(
      [
        `__${name}/00002`,
        `__${name}/65535`,
        `${name}/00002/0000000000000000`,
        `${name}/00002/0000000000000001`,
        `${name}/65535/0000000000000000`,
      ].sort(),
    )
    const ks = keyspace(etcd.client)
    expect((await ks.range(`${name}/00002/0000000000000001`)).kvs[0].value.toString()).toBe('b')
  })

  it("continues the sequence after a Go producer's last key, and dequeues Go-layout items", async () => {
    const name = uniqueName('gopq')
    await etcd.client.put(`${name}/00001/0000000000000041`).value('go-41')
    const q = new PriorityQueue(etcd.client, name)
    expect((await q.enqueue('ts', 1)).key).toBe(`${name}/00001/0000000000000042`)
    await etcd.client.put(`${name}/00000/0000000000000000`).value('go-urgent')
    expect([await q.dequeue(), await q.dequeue(), await q.dequeue()]).toEqual(['go-urgent', 'go-41', 'ts'])
  })
})

describe('PriorityQueue input validation (nothing written)', () => {
  it('rejects out-of-range or non-integer priorities, empty names and oversized values', async () => {
    expect(() => new PriorityQueue(etcd.client, '')).toThrow(InvalidArgumentError)
    const name = uniqueName('bad')
    const q = new PriorityQueue(etcd.client, name)
    for (const p of [-1, 65536, 1.5, Number.NaN, '1' as unknown as number, undefined as unknown as number]) {
      await expect(q.enqueue('x', p)).rejects.toBeInstanceOf(InvalidArgumentError)
    }
    await expect(q.enqueue('x', 1.5)).rejects.toThrow(/0 \(served first\) to 65535/)
    await expect(q.enqueue(Buffer.alloc(1_600_000), 1)).rejects.toBeInstanceOf(InvalidArgumentError)
    expect(await keysMentioning(name)).toEqual([])
  })
})
