/**
 * etcdIdempotency against real etcd: one run per key for 100 concurrent identical
 * events (waiters learn the answer from a watch), stored responses for later duplicates, 409
 * rejections and bounded waits that never touch the owner's record, failures and timeouts that
 * leave no record, responses etcd cannot keep, payload checks, and the Middy paths (short-circuits,
 * etcdPlugin, outer locks).
 */
import middy from '@middy/core'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { countRpcs } from '../../bench/util/rpcs.js'
import {
  IdempotencyInProgressError,
  IdempotencyKeyMismatchError,
  IdempotencyKeyMissingError,
  InvalidRequestError,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { pct } from '../../bench/util/stats.js'
import {
  etcdIdempotency,
  etcdLock,
  etcdPlugin,
  fromEvent,
  type EtcdEvent,
  type EtcdIdempotencyOptions,
  type IdempotencyGrant,
} from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

interface OrderEvent {
  id: string
  amount?: number
  body?: unknown
}

/** A handler behind etcdIdempotency, counting its runs; `work` is what it does. */
function idempotent<R>(work: (event: OrderEvent, context: any) => Promise<R>, options: Partial<EtcdIdempotencyOptions<OrderEvent>> = {}) {
  const prefix = uniqueName('idem')
  const runs = { count: 0 }
  const events: EtcdEvent[] = []
  const handler = middy(async (event: OrderEvent, context: any) => {
    runs.count++
    return work(event, context)
  }).use(etcdIdempotency<OrderEvent>({ key: (e) => e.id, prefix, client: etcd.client, onEvent: (e) => events.push(e), ...options }))
  return { handler, runs, events, prefix }
}

async function recordOf(prefix: string, key: string) {
  const kv = (await keyspace(etcd.client).range(`${prefix}/${key}`)).kvs[0]
  return kv && { createRevision: kv.createRevision, modRevision: kv.modRevision, lease: kv.lease, value: JSON.parse(kv.value.toString()) }
}

describe('one run per key', () => {
  it('100 identical concurrent events: the handler runs once, every caller gets the same response, waiters by watch', async () => {
    let completedAt = 0
    const events: EtcdEvent[] = []
    const learntAt = new Map<EtcdEvent, number>()
    const { handler, runs, prefix } = idempotent(
      async (event) => {
        await sleep(1500)
        return { statusCode: 201, body: JSON.stringify({ order: event.id, charged: 42 }) }
      },
      {
        onEvent: (e) => {
          events.push(e)
          learntAt.set(e, performance.now())
          if (e.type === 'released') completedAt = performance.now()
        },
      },
    )
    const returnedAt: number[] = []
    const { result: responses, perOp } = await countRpcs(etcd.cluster.endpoints[0], 100, () =>
      Promise.all(
        Array.from({ length: 100 }, async () => {
          const response = await handler({ id: 'order-100' }, lambdaContext())
          returnedAt.push(performance.now())
          return response
        }),
      ),
    )
    expect(runs.count).toBe(1)
    for (const r of responses) expect(r).toEqual({ statusCode: 201, body: JSON.stringify({ order: 'order-100', charged: 42 }) })
    // No polling: what each invocation asks of etcd does not grow with the 1.5 s the handler ran.
    expect((perOp.Txn ?? 0) + (perOp.Range ?? 0)).toBeLessThanOrEqual(2.5)
    expect(perOp.Watch ?? 0).toBeLessThanOrEqual(1.5)
    // Waiters return when the owner's answer lands: report how long after, beside one round trip.
    const rtt: number[] = []
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now()
      await etcd.client.get('rtt-probe')
      rtt.push(performance.now() - t0)
    }
    // When each waiter learnt the answer (its 'skipped' event), and when its invocation returned
    // (all 99 finish in this one process, one after another: in Lambda each is its own process).
    const learnt = events.filter((e) => e.type === 'skipped').map((e) => learntAt.get(e)! - completedAt)
    const lag = returnedAt.map((t) => t - completedAt)
    console.log(
      `[idempotency] 100 concurrent: waiters learnt the answer p50 ${pct(learnt, 0.5).toFixed(2)} ms / p99 ${pct(learnt, 0.99).toFixed(2)} ms and returned p50 ${pct(lag, 0.5).toFixed(2)} ms / p99 ${pct(lag, 0.99).toFixed(2)} ms after the owner's store completed; ` +
        `one etcd round trip p50 ${pct(rtt, 0.5).toFixed(2)} ms; etcd requests per invocation ${JSON.stringify(perOp)}`,
    )
    expect(pct(lag, 0.99)).toBeLessThan(1000) // a hang detector only: the figure is reported above
    // 99 duplicates answered from the store; those that began while the handler ran waited (all of
    // them unless this machine took longer than the handler's 1.5 s to start 100 invocations).
    expect(events.filter((e) => e.type === 'skipped')).toHaveLength(99)
    expect(events.filter((e) => e.type === 'waiting').length).toBeGreaterThan(0)
    expect((await recordOf(prefix, 'order-100')).value.state).toBe('completed')
  })

  it('a later duplicate gets the stored response without running the handler; responseHook can mark it', async () => {
    const infos: unknown[] = []
    const { handler, runs } = idempotent(async (event) => ({ order: event.id, n: Math.random() }), {
      responseHook: (response: any, info) => {
        infos.push(info)
        return { ...response, replayed: true }
      },
    })
    const first = await handler({ id: 'a' }, lambdaContext())
    const second = await handler({ id: 'a' }, lambdaContext())
    expect(runs.count).toBe(1)
    expect(second).toEqual({ ...first, replayed: true })
    expect(infos).toEqual([{ key: 'a', revision: expect.any(BigInt), waited: false }])
    expect(await handler({ id: 'b' }, lambdaContext())).not.toEqual(first)
    expect(runs.count).toBe(2)
  })

  it('a handler with no response (undefined) is stored as such', async () => {
    const { handler, runs } = idempotent(async () => undefined)
    expect(await handler({ id: 'void' }, lambdaContext())).toBeUndefined()
    expect(await handler({ id: 'void' }, lambdaContext())).toBeUndefined()
    expect(runs.count).toBe(1)
  })

  it('the owner gets context.etcd.idempotency: key, fence, ownerCompare, signal', async () => {
    let grant: IdempotencyGrant | undefined
    const { handler, prefix } = idempotent(async (_e, context) => {
      grant = context.etcd.idempotency
      const ks = keyspace(etcd.client)
      // A side effect fenced by ownership: lands only while this invocation owns the key.
      return (await ks.txn([grant!.ownerCompare()], [ks.put(`effect-${grant!.key}`, 'done')])).succeeded
    })
    expect(await handler({ id: 'g' }, lambdaContext())).toBe(true)
    expect(grant!.key).toBe('g')
    expect(grant!.fence).toBe((await recordOf(prefix, 'g')).createRevision)
    expect(grant!.signal).toBeInstanceOf(AbortSignal)
  })

  it('records are per function by default: the same key in two functions runs in each', async () => {
    let runs = 0
    const make = () => middy(async () => ++runs).use(etcdIdempotency({ key: () => uniqueKey, client: etcd.client }))
    const uniqueKey = uniqueName('shared-key')
    await make()({}, lambdaContext(30_000, 'fnA'))
    await make()({}, lambdaContext(30_000, 'fnB'))
    await make()({}, lambdaContext(30_000, 'fnA'))
    expect(runs).toBe(2)
    expect(await recordOf('__idempotency/fnA', uniqueKey)).toBeDefined()
  })
})

describe('duplicates of a running invocation never delete or overwrite its record', () => {
  it("onInProgress 'reject': a 409-shaped error; the owner's record is untouched and completes", async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const { handler, runs, prefix } = idempotent(async () => (await gate, 'first'), { onInProgress: 'reject' })
    const first = handler({ id: 'r' }, lambdaContext())
    await waitForRecord(prefix, 'r')
    const before = await recordOf(prefix, 'r')
    const err = await handler({ id: 'r' }, lambdaContext()).catch((e) => e)
    expect(err).toBeInstanceOf(IdempotencyInProgressError)
    expect(err.statusCode).toBe(409)
    expect(await recordOf(prefix, 'r')).toEqual(before) // the rejected duplicate's onError ran: nothing changed
    release()
    expect(await first).toBe('first')
    expect(runs.count).toBe(1)
    expect((await recordOf(prefix, 'r')).value).toMatchObject({ state: 'completed', result: 'first' })
  })

  it("a waiting duplicate whose waitMs runs out: IdempotencyInProgressError; the owner's record is untouched", async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const { handler, prefix } = idempotent(async () => (await gate, 'first'), { waitMs: 200 })
    const first = handler({ id: 'w' }, lambdaContext())
    await waitForRecord(prefix, 'w')
    const before = await recordOf(prefix, 'w')
    await expect(handler({ id: 'w' }, lambdaContext())).rejects.toThrow(/still being processed .* after 200 ms/)
    expect(await recordOf(prefix, 'w')).toEqual(before)
    release()
    expect(await first).toBe('first')
  })

  it('a waiting duplicate is bounded by the remaining time of its invocation', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const { handler, prefix } = idempotent(async () => (await gate, 'first'))
    const first = handler({ id: 'rt' }, lambdaContext())
    await waitForRecord(prefix, 'rt')
    await expect(handler({ id: 'rt' }, lambdaContext(800))).rejects.toBeInstanceOf(IdempotencyInProgressError)
    release()
    await first
  })

  it('a waiting duplicate whose owner fails runs the handler itself', async () => {
    let attempt = 0
    const { handler, runs, prefix } = idempotent(async () => {
      attempt++
      await sleep(300)
      if (attempt === 1) throw new Error('first attempt failed')
      return 'second attempt'
    })
    const firstRun = handler({ id: 'f' }, lambdaContext())
    await waitForRecord(prefix, 'f')
    const [first, second] = await Promise.allSettled([firstRun, handler({ id: 'f' }, lambdaContext())])
    expect(first.status).toBe('rejected')
    expect(second).toEqual({ status: 'fulfilled', value: 'second attempt' })
    expect(runs.count).toBe(2)
  })
})

describe('failures leave no record', () => {
  it('a handler that throws: no record; the retry runs', async () => {
    let fail = true
    const { handler, runs, prefix } = idempotent(async () => {
      if (fail) throw new Error('boom')
      return 'ok'
    })
    await expect(handler({ id: 'x' }, lambdaContext())).rejects.toThrow('boom')
    expect(await recordOf(prefix, 'x')).toBeUndefined()
    fail = false
    expect(await handler({ id: 'x' }, lambdaContext())).toBe('ok')
    expect(runs.count).toBe(2)
  })

  it("Middy's early timeout: no record; the retry runs", async () => {
    let slow = true
    const prefix = uniqueName('idem')
    const handler = middy(async () => (slow ? await sleep(5000) : undefined, 'ok'), { timeoutEarlyInMillis: 50 }).use(
      etcdIdempotency({ key: () => 't', prefix, client: etcd.client }),
    )
    await expect(handler({}, lambdaContext(600))).rejects.toThrow()
    expect(await recordOf(prefix, 't')).toBeUndefined()
    slow = false
    expect(await handler({}, lambdaContext())).toBe('ok')
  })

  it('an inner middleware that answers early (Middy skips every after): etcdPlugin removes the record', async () => {
    const prefix = uniqueName('idem')
    const handler = middy(async () => 'handler', etcdPlugin())
      .use(etcdIdempotency({ key: () => 'k', prefix, client: etcd.client }))
      .use({ before: async () => 'cached elsewhere' })
    expect(await handler({}, lambdaContext())).toBe('cached elsewhere')
    expect(await recordOf(prefix, 'k')).toBeUndefined()
  })

  it('a duplicate answered from the store releases an outer lock before it short-circuits', async () => {
    const lockName = uniqueName('outer-lock')
    const prefix = uniqueName('idem')
    const handler = middy(async () => 'once')
      .use(etcdLock({ name: lockName, client: etcd.client }))
      .use(etcdIdempotency({ key: () => 'k', prefix, client: etcd.client }))
    expect(await handler({}, lambdaContext())).toBe('once')
    expect(await handler({}, lambdaContext())).toBe('once')
    expect(await etcd.client.getAll().prefix(`${lockName}/`).keys()).toEqual([])
  })
})

describe('responses etcd cannot keep: returned, not stored, an event says so', () => {
  it('an oversized response', async () => {
    const big = 'x'.repeat(1_600_000)
    const { handler, runs, events, prefix } = idempotent(async () => big)
    expect(await handler({ id: 'big' }, lambdaContext())).toBe(big)
    expect(await recordOf(prefix, 'big')).toBeUndefined()
    expect(events.find((e) => e.type === 'not-stored')?.detail).toMatchObject({ reason: 'too-large' })
    expect(await handler({ id: 'big' }, lambdaContext())).toBe(big)
    expect(runs.count).toBe(2)
  })

  it('a response that is not plain JSON (a Date)', async () => {
    const at = new Date(0)
    const { handler, events, prefix } = idempotent(async () => ({ at }))
    expect(await handler({ id: 'date' }, lambdaContext())).toEqual({ at })
    expect(await recordOf(prefix, 'date')).toBeUndefined()
    expect(events.find((e) => e.type === 'not-stored')?.detail).toMatchObject({ reason: 'not-json' })
  })
})

describe('payload checks and keys', () => {
  it('a different payload under the same key: IdempotencyKeyMismatchError, nothing run', async () => {
    const { handler, runs } = idempotent(async (e) => ({ charged: e.amount }), { payload: (e) => ({ amount: e.amount }) })
    expect(await handler({ id: 'p', amount: 10 }, lambdaContext())).toEqual({ charged: 10 })
    const err = await handler({ id: 'p', amount: 99 }, lambdaContext()).catch((e) => e)
    expect(err).toBeInstanceOf(IdempotencyKeyMismatchError)
    expect(err.statusCode).toBe(422)
    expect(runs.count).toBe(1)
    expect(await handler({ id: 'p', amount: 10 }, lambdaContext())).toEqual({ charged: 10 })
  })

  it('a key function that returns undefined runs the event without idempotency', async () => {
    const { handler, runs, events } = idempotent(async () => 'ran', { key: () => undefined })
    await handler({ id: 'n' }, lambdaContext())
    await handler({ id: 'n' }, lambdaContext())
    expect(runs.count).toBe(2)
    expect(events.map((e) => e.detail?.reason)).toEqual(['no-key', 'no-key'])
  })

  it('requireKey: an event without a key is IdempotencyKeyMissingError (400, exposed), nothing run or written; with a key it runs once', async () => {
    const { handler, runs, prefix } = idempotent(async () => 'ran', { key: fromEvent('id'), requireKey: true })
    const err = await handler({} as OrderEvent, lambdaContext()).catch((e) => e)
    expect(err).toBeInstanceOf(IdempotencyKeyMissingError)
    expect(err).toMatchObject({ code: 'IDEMPOTENCY_KEY_MISSING', statusCode: 400, expose: true })
    expect(err.message).toMatch(/no idempotency key \(the event's id is missing\)/)
    expect(runs.count).toBe(0)
    expect(await etcd.keysUnder(`${prefix}/`)).toEqual([])
    // A key function of the user's own says nothing of where it reads: the message says what it returned.
    const own = idempotent(async () => 'ran', { key: () => undefined, requireKey: true })
    await expect(own.handler({ id: 'x' }, lambdaContext())).rejects.toThrow(/the `key` function returned undefined/)
    expect(await handler({ id: 'r' }, lambdaContext())).toBe('ran')
    expect(await handler({ id: 'r' }, lambdaContext())).toBe('ran')
    expect(runs.count).toBe(1)
  })

  it('what a key or payload function cannot make of the event is an InvalidRequestError (400), nothing written', async () => {
    const cases: [string, Partial<EtcdIdempotencyOptions<OrderEvent>>, OrderEvent, RegExp][] = [
      [
        'a throwing payload function',
        { payload: (e) => JSON.parse(String(e.body)) },
        { id: 'j', body: '{' },
        /`payload` function failed on this request \(SyntaxError: /,
      ],
      [
        'a throwing key function',
        { key: (e) => (e.body as { key: string }).key },
        { id: 'k' },
        /`key` function failed on this request \(TypeError: /,
      ],
      ['an empty key', { key: () => '' }, { id: 'e' }, /returned ""/],
      [
        'a key over the record key limit',
        { key: (e) => e.id.repeat(4096) },
        { id: 'l' },
        /idempotency key is 4096 bytes; at most \d+ are accepted/,
      ],
    ]
    for (const [what, options, event, message] of cases) {
      const { handler, runs, prefix } = idempotent(async () => 'ran', options)
      const err = await handler(event, lambdaContext()).catch((e) => e)
      expect(err, what).toBeInstanceOf(InvalidRequestError)
      expect(err, what).toMatchObject({ statusCode: 400, expose: true, message: expect.stringMatching(message) })
      expect(runs.count, what).toBe(0)
      expect(await etcd.keysUnder(`${prefix}/`), what).toEqual([])
    }
  })
})

describe('a lost claim', () => {
  it("the owner's lease is revoked mid-run: its response is still returned, nothing stored, a 'lost' event", async () => {
    let prefix = ''
    const made = idempotent(async () => {
      const rec = await recordOf(prefix, 'lost')
      await etcd.client.leaseClient.leaseRevoke({ ID: rec.lease })
      return 'answer'
    })
    prefix = made.prefix
    const { handler, events } = made
    expect(await handler({ id: 'lost' }, lambdaContext())).toBe('answer')
    expect(events.map((e) => e.type)).toContain('lost')
    expect(await recordOf(prefix, 'lost')).toBeUndefined()
  })
})

describe('any mix of concurrent invocations, failures and timings (property)', () => {
  it('per key: handlers never overlap, at most one succeeds, and every caller gets that success or its own failure', async () => {
    const invocation = fc.record({
      key: fc.integer({ min: 0, max: 2 }),
      fails: fc.boolean(),
      workMs: fc.integer({ min: 0, max: 40 }),
      startMs: fc.integer({ min: 0, max: 40 }),
    })
    await fc.assert(
      fc.asyncProperty(fc.array(invocation, { minLength: 1, maxLength: 12 }), async (plan) => {
        const prefix = uniqueName('prop')
        const running = new Map<number, number>()
        const successes = new Map<number, unknown[]>()
        let overlap = false
        let run = 0
        const handler = middy(async (event: { key: number; fails: boolean; workMs: number }) => {
          const mine = ++run
          running.set(event.key, (running.get(event.key) ?? 0) + 1)
          if (running.get(event.key)! > 1) overlap = true
          await sleep(event.workMs)
          running.set(event.key, running.get(event.key)! - 1)
          if (event.fails) throw new Error(`run ${mine} failed`)
          const response = { key: event.key, run: mine }
          successes.set(event.key, [...(successes.get(event.key) ?? []), response])
          return response
        }).use(etcdIdempotency({ key: (e: { key: number }) => `k${e.key}`, prefix, client: etcd.client }))
        const outcomes = await Promise.all(
          plan.map(async (p) => {
            await sleep(p.startMs)
            return handler(p, lambdaContext()).then(
              (value) => ({ value }),
              (error: Error) => ({ error }),
            )
          }),
        )
        expect(overlap).toBe(false)
        for (const [key, list] of successes) expect(list, `key ${key}`).toHaveLength(1)
        plan.forEach((p, i) => {
          const outcome = outcomes[i]
          if ('value' in outcome) expect(outcome.value).toEqual(successes.get(p.key)![0])
          else expect(outcome.error.message).toMatch(/^run \d+ failed$/) // only its own run's failure
        })
      }),
      { numRuns: 25 },
    )
  })
})

/** Resolves once the in-progress record of `key` exists. */
async function waitForRecord(prefix: string, key: string) {
  for (let i = 0; i < 200; i++) {
    if (await recordOf(prefix, key)) return
    await sleep(10)
  }
  throw new Error(`no record for ${key} after 2 s`)
}
