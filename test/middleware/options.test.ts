import fc from 'fast-check'
import { describe, expect, expectTypeOf, it } from 'vitest'
import middy from '@middy/core'
import { checkQueueSettings, InvalidArgumentError } from '../../lib/index.js'
import { checkRateOptions } from '../../lib/permits/rate-limiter.js'
import { checkPermits } from '../../lib/permits/semaphore.js'
import {
  etcdBarrier,
  etcdDoubleBarrier,
  etcdIdempotency,
  etcdLock,
  etcdRateLimit,
  etcdRwLock,
  etcdSemaphore,
  leaderGuard,
  queueConsumer,
  withSTM,
  type IdempotencyGrant,
  type LockGrant,
  type RateLimitGrant,
  type StoredResponseInfo,
} from '../../middleware/index.js'

const factories = {
  etcdLock: (o: any) => etcdLock(o),
  etcdRwLock: (o: any) => etcdRwLock(o),
  etcdBarrier: (o: any) => etcdBarrier(o),
  etcdDoubleBarrier: (o: any) => etcdDoubleBarrier(o),
  queueConsumer: (o: any) => queueConsumer(o),
  withSTM: (o: any) => withSTM(async () => 1, o),
  etcdSemaphore: (o: any) => etcdSemaphore(o),
  etcdRateLimit: (o: any) => etcdRateLimit(o),
  etcdIdempotency: (o: any) => etcdIdempotency(o),
}

const optionValue = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.constantFrom('wait', 'try', 'reject', 'read', 'write', 'SerializableSnapshot', Infinity, -1, 0),
  fc.func(fc.string()),
  fc.array(fc.string(), { maxLength: 3 }),
)
const optionKey = fc.constantFrom(
  'name',
  'mode',
  'waitMs',
  'ttl',
  'onLocked',
  'count',
  'queue',
  'batchSize',
  'visibilityTimeout',
  'maxReceives',
  'deadLetterQueue',
  'isolation',
  'maxAttempts',
  'acquire',
  'key',
  'payload',
  'onInProgress',
  'responseHook',
  'leaseTtl',
  'prefix',
  'bogus',
  'permits',
  'rate',
  'per',
  'burst',
  'cost',
  'onLimited',
)

describe('middleware options (fuzz)', () => {
  for (const [name, make] of Object.entries(factories)) {
    it(`${name}: any options object either builds a middleware or throws InvalidArgumentError naming an option`, () => {
      fc.assert(
        fc.property(fc.dictionary(optionKey, optionValue, { maxKeys: 6 }), (options) => {
          try {
            const built = make(options)
            expect(built).toBeTruthy()
          } catch (err) {
            expect(err).toBeInstanceOf(InvalidArgumentError)
            expect((err as Error).message).toMatch(new RegExp(`^${name}: `))
          }
        }),
        { numRuns: 300 },
      )
    })
  }

  it('non-object options are rejected with a typed error', () => {
    for (const bad of [null, 'name', 42]) {
      expect(() => etcdLock(bad as any)).toThrow(InvalidArgumentError)
    }
  })
})

/** The message of what `f` throws. */
function refusal(f: () => unknown): { error: InvalidArgumentError; message: string } {
  try {
    f()
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError)
    return { error: err as InvalidArgumentError, message: (err as Error).message }
  }
  throw new Error('accepted')
}

describe('a setting lib checks too is checked once, by its rule in lib, when the middleware is built', () => {
  it("queueConsumer's queue settings: lib's checkQueueSettings decides, and the error names the option", () => {
    const lib = refusal(() => checkQueueSettings({ queue: 'q', batchSize: 0 }, 'queueConsumer'))
    const mw = refusal(() => queueConsumer({ queue: 'q', batchSize: 0 }))
    expect(mw.message).toBe(`queueConsumer: option \`batchSize\`: ${lib.message.replace('queueConsumer: ', '')}`)
    expect(mw.error.cause).toBeInstanceOf(InvalidArgumentError)
    // A rule between two settings is lib's too.
    expect(refusal(() => queueConsumer({ queue: 'q', retryDelay: 9, maxRetryDelay: 3 })).message).toBe(
      'queueConsumer: option `maxRetryDelay`: maxRetryDelay (3) must be at least retryDelay (9)',
    )
    // What lib accepts, the middleware accepts.
    expect(() => queueConsumer({ queue: 'q', maxReceives: Infinity, retryDelay: 0 })).not.toThrow()
  })

  it("etcdRateLimit's limiter settings: the RateLimiter constructor's check decides, and the error names the option", () => {
    for (const [option, settings] of [
      ['per', { rate: 1, per: 0 }],
      ['burst', { rate: 1, burst: 1000 }],
      ['waiterTtl', { rate: 1, waiterTtl: 0 }],
      ['rate', { rate: 0.001, per: 86_400_000 }],
    ] as const) {
      const lib = refusal(() => checkRateOptions(settings))
      const mw = refusal(() => etcdRateLimit({ name: 'x', ...settings }))
      expect(mw.message).toBe(`etcdRateLimit: option \`${option}\`: ${lib.message.replace(/^RateLimiter /, '')}`)
    }
  })

  it("etcdSemaphore's permits: the Semaphore constructor's checkPermits decides", () => {
    const lib = refusal(() => checkPermits(1001))
    expect(refusal(() => etcdSemaphore({ name: 'x', permits: 1001 })).message).toBe(
      `etcdSemaphore: option \`permits\`: ${lib.message.replace(/^Semaphore /, '')}`,
    )
  })

  it("every lease TTL option is checked by lib's checkSeconds: one range, one message", () => {
    expect(refusal(() => etcdLock({ name: 'x', ttl: 0 })).message).toBe(
      'etcdLock: option `ttl` must be a whole number of seconds from 1 to 9000000, got 0',
    )
    expect(refusal(() => leaderGuard({ election: 'x', term: 9_000_001 })).message).toBe(
      'leaderGuard: option `term` must be a whole number of seconds from 1 to 9000000, got 9000001',
    )
    expect(refusal(() => etcdDoubleBarrier({ name: 'x', count: 2, ttl: 1.5 })).message).toMatch(
      /^etcdDoubleBarrier: option `ttl` must be a whole number of seconds/,
    )
    expect(refusal(() => etcdIdempotency({ key: () => 'k', leaseTtl: 0 })).message).toMatch(
      /^etcdIdempotency: option `leaseTtl` must be a whole number of seconds from 1/,
    )
    // A completed response may be kept 0 seconds (only for the duplicates waiting at the time).
    expect(() => etcdIdempotency({ key: () => 'k', ttl: 0 })).not.toThrow()
  })
})

describe('middleware types', () => {
  it('etcdLock adds context.etcd.lock through .use()', () => {
    const handler = middy().use(etcdLock({ name: 'x' }))
    type Ctx = Parameters<typeof handler>[1]
    expectTypeOf<Ctx['etcd']['lock']>().toEqualTypeOf<LockGrant>()
    expectTypeOf<LockGrant['fence']>().toEqualTypeOf<bigint>()
  })

  it('etcdSemaphore adds context.etcd.semaphore; etcdRateLimit adds context.etcd.rateLimit', () => {
    const handler = middy()
      .use(etcdSemaphore({ name: 'x', permits: 3 }))
      .use(etcdRateLimit({ name: 'y', rate: 5 }))
    type Ctx = Parameters<typeof handler>[1]
    expectTypeOf<Ctx['etcd']['semaphore']>().toEqualTypeOf<LockGrant>()
    expectTypeOf<Ctx['etcd']['rateLimit']>().toEqualTypeOf<RateLimitGrant>()
    expectTypeOf<RateLimitGrant['waitedMs']>().toEqualTypeOf<number>()
  })

  it('etcdRwLock adds context.etcd.rwLock', () => {
    const handler = middy().use(etcdRwLock({ name: 'x', mode: 'read' }))
    type Ctx = Parameters<typeof handler>[1]
    expectTypeOf<Ctx['etcd']['rwLock']>().toEqualTypeOf<LockGrant>()
  })

  it('etcdIdempotency adds context.etcd.idempotency; key, payload and responseHook are typed by the event and response', () => {
    interface Order {
      orderId: string
      amount: number
    }
    const handler = middy<Order, { ok: boolean }>().use(
      etcdIdempotency<Order, { ok: boolean }>({
        key: (event) => event.orderId,
        payload: (event) => event.amount,
        responseHook: (response, info) => {
          expectTypeOf(info).toEqualTypeOf<StoredResponseInfo>()
          return { ...response, ok: response.ok }
        },
      }),
    )
    // With the event type given explicitly, the key function may return undefined: the grant is optional.
    type Ctx = Parameters<typeof handler>[1]
    expectTypeOf<Ctx['etcd']['idempotency']>().toEqualTypeOf<IdempotencyGrant | undefined>()
    expectTypeOf<IdempotencyGrant['fence']>().toEqualTypeOf<bigint>()
    // A key function that always returns a string: every invocation that runs has the grant.
    const always = middy().use(etcdIdempotency({ key: (event: Order) => event.orderId }))
    expectTypeOf<Parameters<typeof always>[1]['etcd']['idempotency']>().toEqualTypeOf<IdempotencyGrant>()
    const sometimes = middy().use(
      etcdIdempotency({ key: (event: { headers: Record<string, string | undefined> }) => event.headers['Idempotency-Key'] }),
    )
    expectTypeOf<Parameters<typeof sometimes>[1]['etcd']['idempotency']>().toEqualTypeOf<IdempotencyGrant | undefined>()
    // @ts-expect-error the key function must return a string (or undefined), not a number
    expect(() => etcdIdempotency<Order>({ key: (event) => event.amount })).not.toThrow() // (checked per invocation)
    // @ts-expect-error onInProgress is 'wait' or 'reject'
    expect(() => etcdIdempotency<Order>({ key: (event) => event.orderId, onInProgress: 'fail' })).toThrow(InvalidArgumentError)
  })
})
