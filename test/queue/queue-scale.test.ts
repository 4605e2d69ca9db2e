import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createClient,
  EtcdUnavailableError,
  PriorityQueue,
  Queue,
  ResponseTooLargeError,
  type EtcdClient,
  type Message,
} from '../../lib/index.js'
import { unixNano } from '../../lib/core/keys.js'
import { keyspace } from '../../lib/core/kv.js'
import { RESPONSE_BUDGET_BYTES } from '../../lib/limits.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { measuredClient, type AnswerSizes, type Measured } from '../support/answer-sizes.js'

/**
 * Queues at production size (issue 22): messages up to etcd's request limit, large batches,
 * hundreds and 100,000 in flight. Every answer etcd sends is measured (serialized again with
 * etcd3's own protobuf definitions): none may pass the 16 MiB the primitives plan their reads
 * to fit, and a receive, a nack, a redrive read about the bytes of the messages they move —
 * not of what else is in flight. Before, each receive read every claim marker and a window of
 * values: 1.4 MB messages and batches of 220 KB could not be received at all, and past ~70
 * in flight (50 KB) or ~61,000 (1 byte) every receive failed with RESOURCE_EXHAUSTED.
 */

const etcd = useEtcd(1)
let client: EtcdClient
let sizes: AnswerSizes

beforeAll(() => {
  ;({ client, sizes } = measuredClient(etcd.cluster.endpoints))
})
afterAll(() => client?.close())

const keysMentioning = async (name: string) => (await etcd.client.getAll().keys()).filter((k) => k.includes(name)).sort()

/** Bytes an answer may carry beside the messages it moves: keys, revisions, counters, framing. */
const PER_MESSAGE = 2048
/** And per call: a scan's window of keys, its counts. */
const PER_CALL = 512 * 1024

/** The largest answer of the running test, and its bytes received per message moved (printed by {@link report}). */
let seen = { largest: 0, bytes: 0, messages: 0 }

/** Prints what the test received, for docs/RELIABILITY.md. */
function report(what: string) {
  console.log(
    `${what}: largest answer ${seen.largest} bytes (budget ${RESPONSE_BUDGET_BYTES}); ${(seen.bytes / Math.max(1, seen.messages)).toFixed(0)} bytes received per message moved`,
  )
  seen = { largest: 0, bytes: 0, messages: 0 }
}

/** Runs `work` and checks what it received: no answer over the budget, and bytes for `messages` of `size`, not for the queue. */
async function bounded<T>(
  what: string,
  messages: number,
  size: number,
  work: () => Promise<T>,
): Promise<{ result: T; measured: Measured }> {
  sizes.reset()
  const result = await work()
  const measured = sizes.snapshot()
  seen = { largest: Math.max(seen.largest, measured.largest), bytes: seen.bytes + measured.bytes, messages: seen.messages + messages }
  expect(measured.largest, `${what}: largest answer (${measured.largestMethod})`).toBeLessThanOrEqual(RESPONSE_BUDGET_BYTES)
  expect(measured.bytes, `${what}: bytes received for ${messages} messages of ${size} bytes`).toBeLessThanOrEqual(
    messages * (size + PER_MESSAGE) + PER_CALL,
  )
  return { result, measured }
}

/** A payload of `size` bytes that names message `i`. */
const payload = (i: number, size: number) => `${String(i).padStart(8, '0')}:`.padEnd(size, 'x')

/**
 * Writes `n` items of `size` bytes into queue `name` as a Go producer does (`<name>/<unixNano>`,
 * the bare payload), in Txns of as many puts as etcd takes (128 ops, 1.5 MiB a request).
 */
async function fill(name: string, n: number, size: number, first = 0): Promise<void> {
  const ks = keyspace(etcd.client)
  const perTxn = Math.max(1, Math.min(128, Math.floor(1_200_000 / (size + 64))))
  const txns: Promise<unknown>[] = []
  for (let i = 0; i < n; i += perTxn) {
    txns.push(
      ks.txn(
        [],
        Array.from({ length: Math.min(perTxn, n - i) }, (_, j) => ks.put(`${name}/${unixNano()}`, payload(first + i + j, size))),
      ),
    )
    if (txns.length >= 8) await Promise.all(txns.splice(0))
  }
  await Promise.all(txns)
}

/** Receives until `n` messages are held (batches of `max`), checking each receive's answers; returns them in order. */
async function receiveAll(q: Queue, n: number, max: number, size: number, what: string): Promise<Message[]> {
  const got: Message[] = []
  while (got.length < n) {
    const want = Math.min(max, n - got.length)
    const { result } = await bounded(`${what}: receive ${got.length}..`, want, size, () =>
      q.receive({ max: want, visibilityTimeout: 300, wait: false }),
    )
    expect(result.length, `${what}: a receive with ${got.length} of ${n} in flight found nothing`).toBeGreaterThan(0)
    for (const m of result) expect(m.raw.length).toBe(size)
    got.push(...result)
  }
  return got
}

/**
 * Every message of `name` (`n` of `size`): received in batches of `max`, nacked into the
 * dead-letter queue, redriven, received again and acked — each step's answers bounded by what
 * it moves. `alone`: nothing else is in the queue, so nothing of it may be left after.
 */
async function cycle(name: string, n: number, size: number, max: number, alone = true): Promise<void> {
  const dlq = `dlq/${name}`
  const q = new Queue(client, name, { maxReceives: 1, deadLetterQueue: dlq })
  const first = await receiveAll(q, n, max, size, 'first receive')
  expect(new Set(first.map((m) => m.value.slice(0, 8))).size).toBe(n)
  for (const m of first) await bounded('nack into the dead-letter queue', 1, size, () => q.nack(m))
  expect(await new Queue(client, dlq).size()).toBe(n)
  const { result: redriven } = await bounded('redrive', n, size, () => q.redrive({ from: dlq }))
  expect(redriven).toEqual({ moved: n, skipped: 0 })
  const again = await receiveAll(q, n, max, size, 'receive after redrive')
  expect(again.map((m) => m.receiveCount)).toEqual(again.map(() => 1))
  expect(new Set(again.map((m) => m.value)).size).toBe(n)
  for (let i = 0; i < again.length; i += 100) {
    const outcomes = await bounded('ackMany', 0, 0, () => q.ackMany(again.slice(i, i + 100)))
    expect(outcomes.result.filter((o) => o !== undefined)).toEqual([])
  }
  if (alone) expect(await keysMentioning(name)).toEqual([])
}

describe('queues at production size: every answer bounded, bytes by what moves', () => {
  it("1.4 MB messages (near etcd's 1.5 MiB request limit): received one at a time and three at once, nacked into the dead-letter queue, redriven, acked", async () => {
    const name = uniqueName('big')
    const q = new Queue(client, name)
    for (let i = 0; i < 3; i++) await q.enqueue(payload(i, 1_400_000))
    await cycle(name, 3, 1_400_000, 1)
    for (let i = 0; i < 3; i++) await q.enqueue(payload(i, 1_400_000))
    await cycle(name, 3, 1_400_000, 3)
    report('1.4 MB messages')
  }, 120_000)

  it("220 KB messages in batches of 10 (queueConsumer's default batch), a delayed one among them", async () => {
    const name = uniqueName('batch')
    const q = new Queue(client, name)
    for (let i = 0; i < 19; i++) await q.enqueue(payload(i, 220_000))
    // A due delayed message is moved in with its payload: the move's Txns stay within etcd's request limit.
    await q.enqueue(payload(19, 220_000), { delayMs: 1 })
    await new Promise((r) => setTimeout(r, 1600))
    await cycle(name, 20, 220_000, 10)
    report('220 KB messages, batches of 10')
  }, 120_000)

  it('50 KB messages with 500 in flight: each further receive reads the messages it claims, not the 500', async () => {
    const name = uniqueName('inflight')
    await fill(name, 520, 50_000)
    await cycle(name, 520, 50_000, 100)
    // The same with the 500 held by another consumer while 20 more go round in batches of 10.
    await fill(name, 520, 50_000)
    const holder = new Queue(client, name)
    const held = await receiveAll(holder, 500, 100, 50_000, 'hold 500')
    await cycle(name, 20, 50_000, 10, false)
    for (let i = 0; i < held.length; i += 100) await holder.ackMany(held.slice(i, i + 100))
    expect(await keysMentioning(name)).toEqual([])
    report('50 KB messages, 500 in flight')
  }, 180_000)

  it('100,000 small messages in flight: a receive still reads O(batch); every message received and acked, a batch nacked into the dead-letter queue and redriven', async () => {
    const name = uniqueName('huge')
    const started = performance.now()
    await fill(name, 100_000, 16)
    const q = new Queue(client, name)
    const held = await receiveAll(q, 100_000, 1000, 16, 'hold 100,000')
    const filled = performance.now()
    // With 100,000 claimed ahead of them, 40 more go round in batches of 10.
    await fill(name, 40, 16, 100_000)
    const cost: Measured[] = []
    const other = new Queue(client, name, { maxReceives: 1, deadLetterQueue: `dlq/${name}` })
    for (let i = 0; i < 4; i++) {
      const { result, measured } = await bounded('receive behind 100,000 in flight', 10, 16, () =>
        other.receive({ max: 10, visibilityTimeout: 300, wait: false }),
      )
      expect(result).toHaveLength(10)
      cost.push(measured)
      if (i < 3) await other.ackMany(result)
      else for (const m of result) await bounded('nack into the dead-letter queue', 1, 16, () => other.nack(m))
    }
    expect((await bounded('redrive', 10, 16, () => other.redrive({ from: `dlq/${name}` }))).result).toEqual({ moved: 10, skipped: 0 })
    const back = await other.receive({ max: 10, visibilityTimeout: 300, wait: false })
    expect(back).toHaveLength(10)
    await other.ackMany(back)
    // Requests per receive of 10 stay a handful, however much is in flight: the first of a new
    // consumer object finds the hint by count rounds (and sweeps a step); the next ones scan,
    // grant a lease and claim — plus a count round and a read while the window's width adapts.
    expect(cost[0].requests).toBeLessThanOrEqual(16)
    for (const c of cost.slice(1)) expect(c.requests).toBeLessThanOrEqual(6)
    for (let i = 0; i < held.length; i += 800)
      await Promise.all(Array.from({ length: 8 }, (_, j) => q.ackMany(held.slice(i + 100 * j, i + 100 * (j + 1)))))
    expect(await q.size()).toBe(0)
    report('100,000 small messages in flight')
    console.log(
      `100,000 in flight: filled and claimed in ${((filled - started) / 1000).toFixed(1)} s, whole test ${((performance.now() - started) / 1000).toFixed(1)} s; ` +
        `a receive of 10 behind them: ${cost.map((c) => `${c.requests} requests, ${c.bytes} bytes`).join('; ')}`,
    )
  }, 300_000)
})

describe('a message that turns visible behind more claimed ones than a scan counts every time (> 4,096)', () => {
  it('is received before a receive returns nothing, and at once by a receive waiting for it', async () => {
    const name = uniqueName('behind')
    await fill(name, 5000, 16)
    const holder = new Queue(client, name)
    const held = await receiveAll(holder, 5000, 1000, 16, 'hold 5,000')
    await fill(name, 4, 16, 5000)
    // Another consumer object reads past the 5,000: its hint is beyond them now, and it has
    // counted them (so it counts them again only once a second, or when it finds nothing).
    const other = new Queue(client, name)
    const firstTwo = [
      ...(await other.receive({ max: 1, visibilityTimeout: 300, wait: false })),
      ...(await other.receive({ max: 1, visibilityTimeout: 300, wait: false })),
    ]
    expect(firstTwo.map((m) => m.value.slice(0, 8))).toEqual(['00005000', '00005001'])
    await holder.nack(held[10], { delay: 0 })
    // The two ahead of the hint and the one behind it, in whichever order the counts allow;
    // then nothing: the one behind is found before a receive returns empty-handed.
    const next: Message[] = []
    for (let i = 0; i < 3; i++) next.push(...(await other.receive({ max: 1, visibilityTimeout: 300, wait: false })))
    expect(next.map((m) => m.value.slice(0, 8)).sort()).toEqual(['00000010', '00005002', '00005003'])
    expect(next.find((m) => m.id === held[10].id)?.receiveCount).toBe(2)
    expect(await other.receive({ max: 1, wait: false })).toEqual([])
    // A receive waiting on the queue hears the next claim end and looks behind its hint at once.
    const waiting = other.receive({ max: 1, visibilityTimeout: 300, signal: AbortSignal.timeout(20_000) })
    await new Promise((r) => setTimeout(r, 300))
    await holder.nack(held[20], { delay: 0 })
    expect(await waiting).toMatchObject([{ id: held[20].id, receiveCount: 2 }])
    for (let i = 0; i < held.length; i += 100) await holder.ackMany(held.slice(i, i + 100))
    // Left: the four after the 5,000 and the two received again, all claimed by `other`.
    expect(await holder.size()).toBe(6)
  }, 120_000)

  it('PriorityQueue: a more urgent message arriving behind the hint of a waiting receive is delivered at once', async () => {
    const name = uniqueName('urgent')
    const pq = new PriorityQueue(client, name)
    const ks = keyspace(etcd.client)
    // 5,000 at priority 5 (Go's layout: <prio>/<seq>), claimed.
    for (let i = 0; i < 5000; i += 125) {
      await ks.txn(
        [],
        Array.from({ length: 125 }, (_, j) => ks.put(`${name}/00005/${String(i + j).padStart(16, '0')}`, 'low')),
      )
    }
    let held = 0
    while (held < 5000) held += (await pq.receive({ max: 1000, visibilityTimeout: 300, wait: false })).length
    const waiting = pq.receive({ max: 1, visibilityTimeout: 300, signal: AbortSignal.timeout(20_000) })
    await new Promise((r) => setTimeout(r, 300))
    await new PriorityQueue(client, name).enqueue('urgent', 0)
    expect(await waiting).toMatchObject([{ value: 'urgent', priority: 0 }])
  }, 120_000)
})

describe('an answer larger than the client accepts', () => {
  it('is a ResponseTooLargeError with its size and the limit, sent once, never an EtcdUnavailableError; the client works on', async () => {
    const name = uniqueName('toolarge')
    await fill(name, 14, 1_400_000)
    const { client: small, sizes: sent } = measuredClient(etcd.cluster.endpoints, { maxResponseBytes: 16 * 1024 * 1024 })
    try {
      const ks = keyspace(small)
      const err = await ks.range(`${name}/`, { prefix: true }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ResponseTooLargeError)
      expect(err).not.toBeInstanceOf(EtcdUnavailableError)
      expect(err).toMatchObject({ code: 'RESPONSE_TOO_LARGE', limit: 16 * 1024 * 1024 })
      expect((err as ResponseTooLargeError).size).toBeGreaterThan(14 * 1_400_000)
      expect((err as Error).message).toMatch(/maxResponseBytes|ETCD_MAX_RESPONSE_BYTES/)
      // One request: the same request would get the same answer.
      expect(sent.requests).toBe(1)
      expect((await ks.range(`${name}/`, { prefix: true, countOnly: true })).count).toBe(14n)
      // The primitives' own reads fit the smallest limit allowed: a receive of all 14 works.
      const q = new Queue(small, name)
      const got = await q.receive({ max: 14, wait: false })
      expect(got).toHaveLength(14)
      await q.ackMany(got)
    } finally {
      small.close()
    }
  }, 60_000)

  it('the default client takes an answer of 20 MB (gRPC alone stops at 4 MiB)', async () => {
    const name = uniqueName('default')
    await fill(name, 14, 1_400_000)
    const plain = createClient({ endpoints: etcd.cluster.endpoints, env: {} })
    try {
      const all = await keyspace(plain).range(`${name}/`, { prefix: true })
      expect(all.kvs).toHaveLength(14)
      await keyspace(plain).del(`${name}/`, { prefix: true })
    } finally {
      plain.close()
    }
  }, 60_000)
})
