import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { InvalidArgumentError, PriorityQueue, Queue } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { buildGoPeer } from '../gopeer.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

// Go's Many* queue tests run on 3 members; so do these, each client on one member.
const etcd = useEtcd(3)

/** A client on member i (Go's clus.Client(i)). */

/** Every key in etcd that contains `name`. */
const keysMentioning = async (name: string) => (await etcd.client.getAll().keys()).filter((k) => k.includes(name)).sort()

/** Go's testReadersWriters: m writers enqueue 2 items each; n readers dequeue them all. */
async function readersWriters(name: string, readers: number, writers: number) {
  const perWriter = 2
  const total = writers * perWriter
  const writes = Array.from({ length: writers }, async (_, w) => {
    const q = new Queue(etcd.memberClient(w), name)
    for (let j = 0; j < perWriter; j++) await q.enqueue(`${w}-${j}`)
  })
  let reads = 0
  const got: string[] = []
  const reading = Array.from({ length: readers }, async (_, r) => {
    const q = new Queue(etcd.memberClient(r + 1), name)
    while (++reads <= total) got.push(await q.dequeue({ signal: AbortSignal.timeout(20_000) }))
  })
  await Promise.all([...writes, ...reading])
  const expected = Array.from({ length: writers }, (_, w) => Array.from({ length: perWriter }, (_, j) => `${w}-${j}`)).flat()
  expect(got.sort()).toEqual(expected.sort())
  expect(await new Queue(etcd.client, name).size()).toBe(0)
}

describe('Queue (Go recipe ports)', () => {
  it('TestQueueOneReaderOneWriter: FIFO while a writer enqueues concurrently', async () => {
    const name = uniqueName('testq')
    const writer = (async () => {
      const q = new Queue(etcd.memberClient(0), name)
      for (let i = 0; i < 5; i++) await q.enqueue(String(i))
    })()
    const q = new Queue(etcd.memberClient(1), name)
    const got: string[] = []
    for (let i = 0; i < 5; i++) got.push(await q.dequeue({ signal: AbortSignal.timeout(20_000) }))
    await writer
    expect(got).toEqual(['0', '1', '2', '3', '4'])
  })

  it('TestQueueManyReaderOneWriter', () => readersWriters(uniqueName('q'), 3, 1))
  it('TestQueueOneReaderManyWriter', () => readersWriters(uniqueName('q'), 1, 3))
  it('TestQueueManyReaderManyWriter', () => readersWriters(uniqueName('q'), 3, 3))
})

describe('Queue layout and prefixes', () => {
  it('enqueue writes Go layout <name>/<19-digit unixNano>, no lease, value as given', async () => {
    const name = uniqueName('layout')
    const before = BigInt(Date.now()) * 1_000_000n
    const { key, id } = await new Queue(etcd.client, name).enqueue(Buffer.from([0, 1, 2, 255]))
    const after = BigInt(Date.now() + 1) * 1_000_000n
    expect(key).toMatch(new RegExp(`^${name}/[0-9]{19}$`))
    const nano = BigInt(key.slice(name.length + 1))
    expect(nano >= before - 50_000_000n && nano <= after).toBe(true)
    const stored = await keyspace(etcd.client).range(key)
    expect(stored.kvs[0].value).toEqual(Buffer.from([0, 1, 2, 255]))
    expect(stored.kvs[0].lease).toBe('0')
    expect(String(stored.kvs[0].createRevision)).toBe(id)
    // nothing else was written anywhere under the names the queue uses
    expect(await keysMentioning(name)).toEqual([key])
  })

  it('enqueue keys strictly increase within a process', async () => {
    const q = new Queue(etcd.client, uniqueName('inc'))
    const keys = await Promise.all(Array.from({ length: 20 }, (_, i) => q.enqueue(String(i)).then((r) => r.key)))
    expect(new Set(keys).size).toBe(20)
    const again = (await q.enqueue('x')).key
    expect(keys.every((k) => k < again)).toBe(true)
  })

  it('dequeue of q is not woken by, and never takes, items of sibling q2', async () => {
    const name = uniqueName('sib')
    const q = new Queue(etcd.client, name)
    const q2 = new Queue(etcd.client, `${name}2`)
    const quux = new Queue(etcd.client, `${name}ux`)
    let settled = false
    const pending = q.dequeue({ signal: AbortSignal.timeout(20_000) }).finally(() => (settled = true))
    await sleep(100)
    for (let i = 0; i < 3; i++) await q2.enqueue(`q2-${i}`)
    await quux.enqueue('quux')
    await sleep(300)
    expect(settled).toBe(false)
    expect(await q2.size()).toBe(3)
    expect(await quux.size()).toBe(1)
    await q.enqueue('mine')
    expect(await pending).toBe('mine')
    expect(await q2.size()).toBe(3)
    expect(await q.size()).toBe(0)
  })

  it('dequeue takes an item a Go producer put with a raw client', async () => {
    const name = uniqueName('goput')
    const nano = `${BigInt(Date.now()) * 1_000_000n}`
    await etcd.client.put(`${name}/${nano}`).value('from-go')
    expect(await new Queue(etcd.client, name).dequeue()).toBe('from-go')
  })

  it('dequeue aborted while waiting rejects with the reason and writes nothing', async () => {
    const name = uniqueName('abort')
    const ac = new AbortController()
    const p = new Queue(etcd.client, name).dequeue({ signal: ac.signal })
    await sleep(100)
    ac.abort(new Error('stop'))
    await expect(p).rejects.toThrow('stop')
    expect(await keysMentioning(name)).toEqual([])
  })
})

describe('Queue input validation (nothing written)', () => {
  it('rejects bad names and values before any write', async () => {
    expect(() => new Queue(etcd.client, '')).toThrow(InvalidArgumentError)
    expect(() => new Queue(etcd.client, 42 as unknown as string)).toThrow(InvalidArgumentError)
    const name = uniqueName('bad')
    const q = new Queue(etcd.client, name)
    await expect(q.enqueue(Buffer.alloc(1_600_000))).rejects.toThrow(/1\.5 MiB/)
    await expect(q.enqueue(Buffer.alloc(1_600_000))).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(q.enqueue(undefined as unknown as string)).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(q.enqueue({} as unknown as string)).rejects.toBeInstanceOf(InvalidArgumentError)
    expect(await q.size()).toBe(0)
  })
})

describe('Go peer interop (contrib/recipes of etcd 3.4, built from interop/go)', () => {
  const run = promisify(execFile)
  let bin: string
  // Needs go + golang-etcd-server-dev; the binary is cached by source hash, so only the first run builds.
  beforeAll(async () => {
    bin = await buildGoPeer()
  }, 250_000)
  const peer = async (scenario: string, name: string, args: string[] = [], n = 0) => {
    const { stdout } = await run(
      bin,
      ['-endpoints', etcd.cluster.endpoints[0], '-scenario', scenario, '-prefix', name, '-n', String(n), ...args],
      { timeout: 20_000 },
    )
    return stdout
      .trim()
      .split('\n')
      .filter((l) => l !== '')
  }

  it('Go Dequeue takes our items in order; we receive Go-enqueued items in order', async () => {
    const name = uniqueName('goq')
    const q = new Queue(etcd.client, name)
    for (const v of ['a', 'b', 'c']) await q.enqueue(v)
    expect(await peer('dequeue', name, [], 3)).toEqual(['a', 'b', 'c'])
    await peer('enqueue', name, ['x', 'y', 'z'])
    const got = await q.receive({ max: 10, visibilityTimeout: 10, wait: false })
    expect(got.map((m) => m.value)).toEqual(['x', 'y', 'z'])
    for (const m of got) await q.ack(m)
    expect(await keysMentioning(name)).toEqual([])
  })

  it("a Go Dequeue may take a claimed item (documented): the receiver's ack then reports gone", async () => {
    const name = uniqueName('goclaim')
    const q = new Queue(etcd.client, name)
    await q.enqueue('claimed')
    const [m] = await q.receive({ visibilityTimeout: 10 })
    expect(await peer('dequeue', name, [], 1)).toEqual(['claimed'])
    await expect(q.ack(m)).rejects.toMatchObject({ reason: 'gone' })
  })

  it('PriorityQueue: Go and TS producers share buckets; both consumers serve lowest priority first', async () => {
    const name = uniqueName('gopq')
    const pq = new PriorityQueue(etcd.client, name)
    await peer('penqueue', name, ['g2', '2', 'g0', '0'])
    await pq.enqueue('t1', 1)
    await pq.enqueue('t2', 2) // after Go's g2 in the same bucket: sequence 1
    expect(await keysMentioning(`${name}/00002/`)).toEqual([`${name}/00002/0000000000000000`, `${name}/00002/0000000000000001`])
    expect([await pq.dequeue(), await pq.dequeue()]).toEqual(['g0', 't1'])
    expect(await peer('pdequeue', name, [], 2)).toEqual(['g2', 't2'])
  })
})
