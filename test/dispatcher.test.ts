// The queue dispatcher (middy-etcd/dispatcher) against a real etcd: the claim loop invoking a
// stand-in function, the Invoke API client, the subscriptions it reads, and the deployable
// handler that lets one of several overlapping runs dispatch.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import {
  checkQueueSettings,
  ConfigurationError,
  Election,
  InvalidArgumentError,
  PriorityQueue,
  Queue,
  QueueMismatchError,
  Session,
  type QueueDispatchEvent as DispatchEvent,
} from '../lib/index.js'
import { queueConsumer } from '../middleware/index.js'
import {
  dispatcherHandler,
  lambdaInvoker,
  runDispatcher,
  subscriptionsFromEnv,
  watchDeadLetters,
  type DeadLetter,
  type DispatcherOptions,
  type QueueSubscription,
} from '../dispatch/index.js'
import { lambdaContext } from '../testing/index.js'
import { sleep, uniqueName, useEtcd, until } from './helpers.js'
import { scheduleRuns } from './support/scheduled-runs.js'

describe('runDispatcher (the dispatcher core, against etcd, invoking a stand-in function)', () => {
  const etcd = useEtcd(1)

  /** Runs a dispatcher until `done` resolves (or 15 s), then stops it. */
  async function dispatchUntil(options: Omit<DispatcherOptions, 'client' | 'signal'>, done: Promise<unknown>) {
    const abort = new AbortController()
    const running = runDispatcher({ ...options, client: etcd.client, signal: abort.signal })
    try {
      await Promise.race([done, sleep(15_000).then(() => Promise.reject(new Error('dispatcher test timed out')))])
    } finally {
      abort.abort()
      await running
    }
  }

  it('invokes the subscribed function with JSON-safe messages that it can ack in another "process"', async () => {
    const name = uniqueName('dq')
    const q = new Queue(etcd.client, name)
    for (const v of ['a', 'b', 'c']) await q.enqueue(v)
    const events: DispatchEvent[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        subscriptions: [{ function: 'svc-dev-worker', queue: name, batchSize: 10 }],
        invoke: async (fn, event) => {
          expect(fn).toBe('svc-dev-worker')
          // The event survives JSON, as it does through the Invoke API.
          const parsed = JSON.parse(JSON.stringify(event)) as DispatchEvent
          events.push(parsed)
          const consumer = new Queue(etcd.newClient(), name)
          for (const m of parsed.etcdQueue.messages as { receipt: string }[]) await consumer.ack(m.receipt)
          if (events.flatMap((e) => e.etcdQueue.messages).length === 3) resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    const messages = events.flatMap((e) => e.etcdQueue.messages) as { value: string; receiveCount: number; id: string }[]
    expect(messages.map((m) => m.value)).toEqual(['a', 'b', 'c'])
    expect(messages.every((m) => m.receiveCount === 1)).toBe(true)
    expect(events[0].etcdQueue).toMatchObject({ queue: name, priority: false })
    expect(await q.size()).toBe(0)
  })

  it('nacks the batch of a failed invocation with its retry back-off, so it is redelivered before the visibility timeout', async () => {
    const name = uniqueName('dq')
    await new Queue(etcd.client, name).enqueue('job')
    const deliveries: number[] = []
    const at: number[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        // A long visibility timeout: only the nack can bring the message back within the test.
        subscriptions: [{ function: 'f', queue: name, visibilityTimeout: 60 }],
        invoke: async (_fn, event) => {
          const [m] = event.etcdQueue.messages as { receiveCount: number; receipt: string }[]
          deliveries.push(m.receiveCount)
          at.push(performance.now())
          if (m.receiveCount < 3) return { ok: false, error: 'boom' }
          await new Queue(etcd.client, name).ack(m.receipt)
          resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    expect(deliveries).toEqual([1, 2, 3])
    // Not at once: the default back-off held each retry for at least 1 s (1, then 1–2 s).
    expect(at[1] - at[0]).toBeGreaterThanOrEqual(900)
    expect(at[2] - at[1]).toBeGreaterThanOrEqual(900)
  })

  it('with the defaults, a message whose invocations keep failing is dead-lettered to dlq/<queue> after 5', async () => {
    const name = uniqueName('dqdef')
    await new Queue(etcd.client, name).enqueue('crashes its consumer')
    let invocations = 0
    const dead = new Queue(etcd.client, `dlq/${name}`)
    const abort = new AbortController()
    const running = runDispatcher({
      client: etcd.client,
      subscriptions: [{ function: 'f', queue: name, retryDelay: 0 }],
      signal: abort.signal,
      invoke: async () => {
        invocations++
        return { ok: false, error: 'always fails' }
      },
    })
    await until('the default dead-letter queue to get the message', 20_000, async () => (await dead.size()) === 1)
    abort.abort()
    await running
    expect(invocations).toBe(5)
    expect(await new Queue(etcd.client, name).size()).toBe(0)
  })

  it('a consumer that refuses its batch as meant for another queue stops the subscription; the batch comes back later, not failed', async () => {
    const name = uniqueName('dqmis')
    const q = new Queue(etcd.client, name)
    await q.enqueue('m1')
    await q.enqueue('m2')
    const consumer = middy(async () => ({ batchItemFailures: [] })).use(queueConsumer({ queue: `${name}-typo`, client: etcd.client }))
    const errors: unknown[] = []
    let invocations = 0
    const abort = new AbortController()
    const running = runDispatcher({
      client: etcd.client,
      subscriptions: [{ function: 'f', functionKey: 'worker', queue: name, batchSize: 1, visibilityTimeout: 2 }],
      signal: abort.signal,
      onError: (_sub, err) => errors.push(err),
      // What the Invoke API reports for a handler that threw: its message and error type.
      invoke: async (_fn, event) => {
        invocations++
        try {
          await consumer(JSON.parse(JSON.stringify(event)), lambdaContext(5_000))
          return { ok: true }
        } catch (err) {
          return { ok: false, error: (err as Error).message, errorType: (err as Error).name }
        }
      },
    })
    await until('the subscription to stop', 10_000, () => errors.length > 0)
    await sleep(500)
    abort.abort()
    await running
    expect(invocations).toBe(1)
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(QueueMismatchError)
    expect((errors[0] as Error).message).toMatch(
      new RegExp(`function worker refused its etcdQueue batch for queue "${name}".*"${name}-typo"`),
    )
    // The refused message was not failed: it comes back with its visibility timeout, not dead-lettered.
    const back: string[] = []
    while (!back.includes('m1')) {
      const got = await q.receive({ max: 10, signal: AbortSignal.timeout(10_000) })
      back.push(...got.map((m) => `${m.value}`))
      await q.ackMany(got)
    }
    expect(back.sort()).toEqual(['m1', 'm2'])
    expect(await new Queue(etcd.client, `dlq/${name}`).size()).toBe(0)
  })

  it('redelivers a message the function did not settle once its visibility timeout ends', async () => {
    const name = uniqueName('dq')
    await new Queue(etcd.client, name).enqueue('slow')
    const seen: { count: number; at: number }[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        subscriptions: [{ function: 'f', queue: name, visibilityTimeout: 1 }],
        invoke: async (_fn, event) => {
          const [m] = event.etcdQueue.messages as { receiveCount: number; receipt: string }[]
          seen.push({ count: m.receiveCount, at: performance.now() })
          if (m.receiveCount === 1) return { ok: true } // "succeeded" but never acked (crashed before ack)
          await new Queue(etcd.client, name).ack(m.receipt)
          resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    expect(seen.map((s) => s.count)).toEqual([1, 2])
  })

  it('moves a message to the dead-letter queue after maxReceives deliveries', async () => {
    const name = uniqueName('dq')
    const dlq = uniqueName('dlq')
    await new Queue(etcd.client, name).enqueue('poison')
    let invocations = 0
    const dead = new Queue(etcd.client, dlq)
    await dispatchUntil(
      {
        subscriptions: [{ function: 'f', queue: name, maxReceives: 2, deadLetterQueue: dlq }],
        invoke: async () => {
          invocations++
          return { ok: false, error: 'always fails' }
        },
      },
      until('the dead-letter queue to get the message', 10_000, async () => (await dead.size()) === 1),
    )
    expect(invocations).toBe(2)
    expect(await dead.dequeue()).toBe('poison')
    expect(await new Queue(etcd.client, name).size()).toBe(0)
  })

  it('serves a PriorityQueue subscription most urgent first, with priorities in the messages', async () => {
    const name = uniqueName('dpq')
    const pq = new PriorityQueue(etcd.client, name)
    await pq.enqueue('low', 9)
    await pq.enqueue('high', 0)
    await pq.enqueue('mid', 4)
    const got: { value: string; priority?: number }[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        subscriptions: [{ function: 'f', queue: name, priority: true, batchSize: 1 }],
        invoke: async (_fn, event) => {
          expect(event.etcdQueue.priority).toBe(true)
          for (const m of event.etcdQueue.messages as { value: string; priority: number; receipt: string }[]) {
            got.push({ value: m.value, priority: m.priority })
            await pq.ack(m.receipt)
          }
          if (got.length === 3) resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    expect(got).toEqual([
      { value: 'high', priority: 0 },
      { value: 'mid', priority: 4 },
      { value: 'low', priority: 9 },
    ])
  })

  it('stops promptly when its signal aborts while waiting for messages', async () => {
    const abort = new AbortController()
    const running = runDispatcher({
      client: etcd.client,
      subscriptions: [{ function: 'f', queue: uniqueName('idle') }],
      invoke: async () => ({ ok: true }),
      signal: abort.signal,
    })
    await sleep(300)
    abort.abort()
    await expect(Promise.race([running.then(() => 'stopped'), sleep(5_000).then(() => 'hung')])).resolves.toBe('stopped')
  })

  it('lambdaInvoker speaks the Invoke API: RequestResponse outcomes, function errors, Event', async () => {
    const seen: { path: string; type?: string; body: unknown }[] = []
    const server = createServer((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        seen.push({ path: req.url!, type: req.headers['x-amz-invocation-type'] as string | undefined, body: JSON.parse(body) })
        const fn = decodeURIComponent(req.url!.split('/')[3])
        if (req.headers['x-amz-invocation-type'] === 'Event') return res.writeHead(202).end()
        if (fn === 'broken')
          return res
            .writeHead(200, { 'X-Amz-Function-Error': 'Unhandled' })
            .end(JSON.stringify({ errorMessage: 'kaput', errorType: 'Error' }))
        res.writeHead(200).end(JSON.stringify({ batchItemFailures: [{ itemIdentifier: '42' }] }))
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const event: DispatchEvent = {
        etcdQueue: { queue: 'q', priority: false, messages: [{ id: '42', key: 'q/1', value: 'v', receiveCount: 1, receipt: 'r' }] },
      }
      const sync = lambdaInvoker({ endpoint, region: 'eu-west-1', env: {} })
      expect(await sync('svc-dev-worker', event)).toEqual({ ok: true, failedIds: ['42'] })
      expect(await sync('broken', event)).toEqual({ ok: false, error: 'kaput', errorType: 'Error' })
      expect(await lambdaInvoker({ endpoint, invocationType: 'Event', env: {} })('svc-dev-worker', event)).toEqual({ ok: true })
      expect(seen.map((s) => s.type)).toEqual(['RequestResponse', 'RequestResponse', 'Event'])
      expect(seen[0].path).toBe('/2015-03-31/functions/svc-dev-worker/invocations')
      expect(seen[0].body).toEqual(event)
    } finally {
      server.close()
    }
    expect(() => lambdaInvoker({ invocationType: 'Later' as never })).toThrow(InvalidArgumentError)
  })

  it('rejects bad subscriptions before claiming anything', async () => {
    const run = (sub: unknown) =>
      runDispatcher({
        client: etcd.client,
        subscriptions: [sub as QueueSubscription],
        invoke: async () => ({ ok: true }),
        signal: AbortSignal.abort(),
      })
    await expect(run({ queue: 'q' })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(run({ function: 'f', queue: 'q', batchSize: 0 })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(run({ function: 'f', queue: 'q', retryDelay: 5, maxRetryDelay: 2 })).rejects.toThrow(/maxRetryDelay/)
    expect(() => subscriptionsFromEnv({})).toThrow(ConfigurationError)
    expect(() => subscriptionsFromEnv({ ETCD_QUEUE_SUBSCRIPTIONS: '{nope' })).toThrow(/not valid JSON/)
    expect(subscriptionsFromEnv({ ETCD_QUEUE_SUBSCRIPTIONS: '[{"function":"f","queue":"q"}]' })).toEqual([{ function: 'f', queue: 'q' }])
  })
})

describe('dispatcherHandler (the deployable dispatcher function)', () => {
  const etcd = useEtcd(1)
  const context = (remainingMs: number, id: string) => {
    const end = Date.now() + remainingMs
    return { functionName: 'svc-prod-dispatcher', awsRequestId: id, getRemainingTimeInMillis: () => end - Date.now() }
  }

  it('of two overlapping runs, the earlier hands over to the later one at once: every message is dispatched once; nothing is left in etcd', async () => {
    const queue = uniqueName('dh')
    const election = uniqueName('dispatcher-election')
    const q = new Queue(etcd.client, queue)
    for (const v of ['a', 'b', 'c', 'd']) await q.enqueue(v)
    const delivered: string[] = []
    const handler = dispatcherHandler({
      client: etcd.client,
      election,
      tailMs: 0,
      subscriptions: [{ function: 'svc-prod-worker', queue, batchSize: 3 }],
      invoke: async (_fn, event) => {
        for (const m of event.etcdQueue.messages) {
          delivered.push(m.value)
          await q.ack(m.receipt)
        }
        return { ok: true }
      },
    })
    // Each may claim for 4 s; the second starts once the first has dispatched the backlog.
    const t0 = performance.now()
    const first = handler({}, context(4_000, 'r1')).then((r) => ({ ...r, endedAt: performance.now() }))
    await until('r1 to dispatch the backlog', 5_000, () => delivered.length === 4)
    const secondAt = performance.now()
    const second = handler({}, context(4_000, 'r2'))
    const a = await first
    expect(a).toMatchObject({ leader: true, dispatched: 4, failed: 0 })
    // It stepped down for its successor instead of claiming until its window ended: it still
    // had over 2 s of it when the second started.
    expect(secondAt - t0).toBeLessThan(2_000)
    expect(a.endedAt - secondAt).toBeLessThan(1_500)
    await q.enqueue('e')
    expect(await second).toEqual({ leader: true, dispatched: 1, failed: 0 })
    expect(delivered.sort()).toEqual(['a', 'b', 'c', 'd', 'e'])
    expect(await q.size()).toBe(0)
    // The first resigned and both closed their sessions: no candidate key remains.
    expect(await etcd.client.getAll().prefix(`${election}/`).count()).toBe(0)
  }, 20_000)

  it('a run that no leader hands over to waits as a candidate, then withdraws and reports the leader', async () => {
    const election = uniqueName('dispatcher-election')
    const handler = dispatcherHandler({
      client: etcd.client,
      election,
      tailMs: 0,
      subscriptions: [{ function: 'f', queue: uniqueName('idle') }],
      invoke: async () => ({ ok: true }),
    })
    // A leader of this election that is not a dispatcher run: it never hands over.
    const other = await Session.create(etcd.client, { ttl: 10 })
    try {
      await new Election(other, election).campaign('ops:manual')
      const t0 = performance.now()
      const result = await handler({}, context(2_000, 'r'))
      expect(result).toEqual({ leader: false, leaderValue: 'ops:manual', dispatched: 0, failed: 0 })
      // It waited while it could still have claimed for its minimum window (1 s of the 2 s).
      expect(performance.now() - t0).toBeGreaterThanOrEqual(900)
      expect(await etcd.client.getAll().prefix(`${election}/`).keys()).toEqual([`${election}/${other.leaseHex}`])
    } finally {
      await other.close()
    }
  }, 20_000)

  it('hands over between scheduled runs without a gap: messages enqueued across run boundaries are invoked within 2 s', async () => {
    // The recommended shape scaled down (rate 1 minute, timeout 120 s): a run every 4 s with an
    // 8 s timeout, so the next run has started before the leader's claiming window (timeout − tail
    // = 5 s) ends. Without a handover, a run that starts while another leads returns at once, and
    // nobody claims from the end of the leader's window until the following run: a gap as long as
    // the tail (3 s here).
    const queue = uniqueName('dh-sched')
    const election = uniqueName('dispatcher-election')
    const q = new Queue(etcd.client, queue)
    const sentAt = new Map<string, number>()
    const latency = new Map<string, number>()
    const handler = dispatcherHandler({
      client: etcd.client,
      election,
      tailMs: 3_000,
      subscriptions: [{ function: 'svc-prod-worker', queue, batchSize: 10 }],
      invoke: async (_fn, event) => {
        const now = performance.now()
        for (const m of event.etcdQueue.messages) if (!latency.has(m.value)) latency.set(m.value, now - sentAt.get(m.value)!)
        await q.ackMany(event.etcdQueue.messages.map((m) => m.receipt))
        return { ok: true }
      },
    })
    const sends: Promise<unknown>[] = []
    const send = (value: string) => {
      sentAt.set(value, performance.now())
      sends.push(q.enqueue(value))
    }
    // A message every 100 ms while the runs start and 1 s past the last start, plus one exactly
    // as each run starts (the boundary).
    let producing = true
    const producer = (async () => {
      for (let i = 0; producing; i++) {
        send(`m${i}`)
        await sleep(100)
      }
    })()
    const runs = await scheduleRuns(handler, {
      runs: 3,
      everyMs: 4_000,
      timeoutMs: 8_000,
      onStart: (i) => {
        send(`boundary-${i}`)
        if (i === 2) setTimeout(() => (producing = false), 1_000)
      },
    })
    await producer
    await Promise.all(sends)
    expect(runs.map((r) => r.error)).toEqual([undefined, undefined, undefined])
    // Each run returned before Lambda would have stopped it.
    expect(runs.filter((r) => r.endedAt > r.deadline)).toEqual([])
    expect(runs.reduce((n, r) => n + r.result!.dispatched, 0)).toBe(sentAt.size)
    expect([...sentAt.keys()].filter((v) => !latency.has(v))).toEqual([])
    const sorted = [...latency.values()].sort((a, b) => a - b)
    const at = (p: number) => Math.round(sorted[Math.floor(p * (sorted.length - 1))])
    console.log(
      `[dispatcher-handover] ${sorted.length} messages across ${runs.length} scheduled runs, enqueue -> invoke p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms (bench: dispatcher-handover)`,
    )
    // The functional bound, generous for a loaded machine: a gap between runs is seconds.
    expect(at(1)).toBeLessThan(2_000)
    // Each run led in turn: it took over from the one before and handed over to the next.
    expect(runs.map((r) => r.result!.leader)).toEqual([true, true, true])
    expect(await q.size()).toBe(0)
    expect(await etcd.client.getAll().prefix(`${election}/`).count()).toBe(0)
  }, 40_000)

  it('by default each function has its own election: the dispatchers of two services on one etcd lead at the same time', async () => {
    const [a, b] = [uniqueName('svc-a-prod-dispatcher'), uniqueName('svc-b-prod-dispatcher')]
    const queues = [uniqueName('dh-a'), uniqueName('dh-b')]
    const elected: string[] = []
    const handlerOf = (queue: string) =>
      dispatcherHandler({ client: etcd.client, tailMs: 0, subscriptions: [{ function: 'f', queue }], invoke: async () => ({ ok: true }) })
    const runs = [handlerOf(queues[0]), handlerOf(queues[1])].map((h, i) => {
      const end = Date.now() + 1_500
      const ctx = { functionName: [a, b][i], awsRequestId: `r${i}`, getRemainingTimeInMillis: () => end - Date.now() }
      return h({}, ctx)
    })
    // Both are candidates of their own election while they run, each its leader.
    await until('both runs to campaign', 1_000, async () => {
      elected.splice(
        0,
        elected.length,
        ...(await etcd.client.getAll().prefix('middy-etcd/dispatcher:').keys()).filter((k) => k.includes(a) || k.includes(b)),
      )
      return elected.length === 2
    })
    expect(elected.map((k) => k.slice(0, k.lastIndexOf('/'))).sort()).toEqual(
      [`middy-etcd/dispatcher:${a}`, `middy-etcd/dispatcher:${b}`].sort(),
    )
    for (const r of await Promise.all(runs)) expect(r.leader).toBe(true)
  }, 20_000)

  it('counts a failed invocation as failed and releases its messages for redelivery', async () => {
    const queue = uniqueName('dh')
    await new Queue(etcd.client, queue).enqueue('x')
    const handler = dispatcherHandler({
      client: etcd.client,
      election: uniqueName('dispatcher-election'),
      tailMs: 0,
      subscriptions: [{ function: 'f', queue, visibilityTimeout: 60 }],
      invoke: async () => ({ ok: false, error: 'boom' }),
    })
    const result = await handler({}, context(1_000, 'r'))
    expect(result.leader).toBe(true)
    expect(result.failed).toBeGreaterThanOrEqual(1)
    expect(result.failed).toBe(result.dispatched)
    // Released after its retry delay (nack), not after the 60 s visibility timeout.
    const [again] = await new Queue(etcd.client, queue).receive({ max: 1, signal: AbortSignal.timeout(10_000) })
    expect(again?.value).toBe('x')
  }, 20_000)

  it('refuses bad options when built, and a missing ETCD_QUEUE_SUBSCRIPTIONS when invoked', async () => {
    expect(() => dispatcherHandler({ tailMs: -1 })).toThrow(InvalidArgumentError)
    expect(() => dispatcherHandler({ invocationType: 'Later' as never })).toThrow(/invocationType/)
    expect(() => dispatcherHandler({ subscriptions: [{ queue: 'q' } as never] })).toThrow(/function/)
    expect(() => dispatcherHandler({ client: {} as never })).toThrow(InvalidArgumentError)
    const saved = process.env.ETCD_QUEUE_SUBSCRIPTIONS
    delete process.env.ETCD_QUEUE_SUBSCRIPTIONS
    try {
      await expect(dispatcherHandler({ client: etcd.client })({}, context(1_000, 'r'))).rejects.toBeInstanceOf(ConfigurationError)
    } finally {
      if (saved !== undefined) process.env.ETCD_QUEUE_SUBSCRIPTIONS = saved
    }
  })
})

describe('one queue message shape and one check of queue settings', () => {
  const etcd = useEtcd(1)

  it('checkQueueSettings names the source and the field', () => {
    expect(() => checkQueueSettings({ queue: 'q', batchSize: 0 }, 'function worker, etcdQueue event')).toThrow(
      /^function worker, etcdQueue event: batchSize must be a whole number from 1 to 1000, got 0$/,
    )
    expect(() => checkQueueSettings({ queue: '' }, 'x')).toThrow(/queue must be the queue's name/)
    expect(() => checkQueueSettings({ queue: 'q', priority: 'yes' }, 'x')).toThrow(/priority must be true/)
    expect(() => checkQueueSettings({ queue: 'q', retryDelay: 3, maxRetryDelay: 1 }, 'x')).toThrow(
      /maxRetryDelay \(1\) must be at least retryDelay \(3\)/,
    )
    expect(() => checkQueueSettings({ queue: 'q', maxReceives: 0 }, 'x')).toThrow(/maxReceives/)
    expect(() => checkQueueSettings({ queue: 'q', concurrency: 101 }, 'x')).toThrow(/concurrency/)
    expect(() => checkQueueSettings('q', 'x')).toThrow(InvalidArgumentError)
    expect(() => checkQueueSettings({ queue: 'q', batchSize: 5, maxReceives: 2, deadLetterQueue: 'd', concurrency: 2 }, 'x')).not.toThrow()
    // Dead letters go to dlq/<queue> unless named; Infinity turns them off.
    expect(() => checkQueueSettings({ queue: 'q', maxReceives: 3 }, 'x')).not.toThrow()
    expect(() => checkQueueSettings({ queue: 'q', maxReceives: Infinity, retryDelay: 0 }, 'x')).not.toThrow()
  })

  it('queueConsumer, the dispatcher and subscriptionsFromEnv apply the same rule', async () => {
    const rule = /maxRetryDelay \(2\) must be at least retryDelay \(8\)/
    expect(() => queueConsumer({ queue: 'q', retryDelay: 8, maxRetryDelay: 2 })).toThrow(rule)
    await expect(
      runDispatcher({
        client: etcd.client,
        subscriptions: [{ function: 'f', queue: 'q', retryDelay: 8, maxRetryDelay: 2 }],
        invoke: async () => ({ ok: true }),
        signal: AbortSignal.abort(),
      }),
    ).rejects.toThrow(rule)
    expect(() =>
      subscriptionsFromEnv({ ETCD_QUEUE_SUBSCRIPTIONS: '[{"function":"f","queue":"q","retryDelay":8,"maxRetryDelay":2}]' }),
    ).toThrow(rule)
  })

  it('a consumer invoked with a malformed dispatch event fails with a typed error and settles nothing', async () => {
    const queue = uniqueName('shape')
    const q = new Queue(etcd.client, queue)
    await q.enqueue('kept')
    let ran = false
    const handler = middy(async () => {
      ran = true
      return { batchItemFailures: [] }
    }).use(queueConsumer({ queue, client: etcd.client }))
    const bad = { etcdQueue: { queue, messages: [{ id: '1' }] } }
    await expect(handler(bad, lambdaContext(5_000))).rejects.toThrow(/not queue messages/)
    expect(ran).toBe(false)
    expect(await q.size()).toBe(1)
    // A dispatch for another queue is a configuration mistake: it fails loudly, naming both.
    await expect(handler({ etcdQueue: { queue: 'other', messages: [] } }, lambdaContext(5_000))).rejects.toThrow(QueueMismatchError)
    expect(ran).toBe(false)
    expect(await q.size()).toBe(1)
    // Invoked without a dispatch, it receives by itself.
    expect(await handler({}, lambdaContext(5_000))).toEqual({ batchItemFailures: [] })
    expect(ran).toBe(true)
    expect(await q.size()).toBe(0)
  })
})

describe('watchDeadLetters (what the offline plugin logs)', () => {
  const etcd = useEtcd(1)

  it("reports each message that reaches a subscription's dead-letter queue, with its id and its id there", async () => {
    const queue = uniqueName('dl')
    const subs: QueueSubscription[] = [
      { function: 'f', queue, maxReceives: 1 },
      { function: 'g', queue: uniqueName('no-dl'), maxReceives: Infinity },
    ]
    const seen: DeadLetter[] = []
    const abort = new AbortController()
    watchDeadLetters(etcd.client, subs, (d) => seen.push(d), abort.signal)
    try {
      await sleep(200) // the watch is created
      const q = new Queue(etcd.client, queue, { maxReceives: 1, deadLetterQueue: `dlq/${queue}` })
      const { id } = await q.enqueue('poison')
      // Not a dead letter: put into the dead-letter queue by a producer of its own.
      await new Queue(etcd.client, `dlq/${queue}`).enqueue('enqueued there')
      const [m] = await q.receive({ max: 1, wait: false })
      await q.nack(m) // its first and last receive: dead-lettered
      const dead = await until('the dead letter', 5_000, () => seen[0])
      const stored = await etcd.client.get(dead.key).exec()
      expect(dead).toEqual({
        deadLetterQueue: `dlq/${queue}`,
        queues: [queue],
        id,
        deadLetterId: stored.kvs[0].create_revision,
        key: dead.key,
      })
      expect(dead.deadLetterId).not.toBe(id)
      await sleep(300)
      expect(seen).toHaveLength(1)
    } finally {
      abort.abort()
    }
  })
})
