import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  ConfigurationError,
  hashPayload,
  IdempotencyResultNotStorableError,
  InvalidArgumentError,
  resolveClientOptions,
} from '../lib/index.js'
import { decodeRecord, encodeRecord } from '../lib/idempotency/record.js'
import {
  contenders,
  defaultDeadLetterQueue,
  leaseHex,
  permitKeys,
  queueKeys,
  queueOfDeadLetterQueue,
  rwContenders,
} from '../lib/core/keys.js'
import { checkName, prefixEnd } from '../lib/core/kv.js'
import { checkBackoff, retryDelaySeconds } from '../lib/queue/backoff.js'
import { MAX_REFILL_INTERVAL_MS } from '../lib/limits.js'
import { checkRateOptions } from '../lib/permits/rate-limiter.js'
import { checkPermits } from '../lib/permits/semaphore.js'

const bytes = (max = 8) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a))
/** Byte strings biased towards 0x00 and 0xff, where prefixEnd has its edge cases. */
const edgyBytes = (min = 0, max = 6) =>
  fc
    .array(fc.oneof(fc.constant(0xff), fc.constant(0x00), fc.constant(0xfe), fc.integer({ min: 0, max: 255 })), {
      minLength: min,
      maxLength: max,
    })
    .map((a) => Buffer.from(a))
const allFF = (b: Buffer) => b.every((x) => x === 0xff)

describe('prefixEnd', () => {
  it('every key starting with the prefix sorts below prefixEnd; prefixEnd does not start with the prefix', () => {
    fc.assert(
      fc.property(edgyBytes(1), edgyBytes(), (prefix, suffix) => {
        fc.pre(!allFF(prefix)) // all-0xff prefixes have no upper bound: etcd's "\0" = to the end
        const end = prefixEnd(prefix)
        const key = Buffer.concat([prefix, suffix])
        expect(Buffer.compare(key, end)).toBeLessThan(0)
        expect(Buffer.compare(prefix, end)).toBeLessThan(0)
        expect(end.subarray(0, prefix.length).equals(prefix)).toBe(false)
      }),
      { numRuns: 2000 },
    )
  })

  it('is the tightest bound: a key in [prefix, prefixEnd) starts with the prefix', () => {
    fc.assert(
      fc.property(edgyBytes(1), edgyBytes(0, 8), (prefix, key) => {
        fc.pre(!allFF(prefix))
        const end = prefixEnd(prefix)
        const inRange = Buffer.compare(prefix, key) <= 0 && Buffer.compare(key, end) < 0
        expect(inRange).toBe(key.subarray(0, prefix.length).equals(prefix))
      }),
      { numRuns: 2000 },
    )
  })

  it('an all-0xff (or empty) prefix maps to "\\0", etcd\'s "every key from here on"', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), (n) => {
        expect(prefixEnd(Buffer.alloc(n, 0xff))).toEqual(Buffer.from([0]))
      }),
    )
  })

  it('does not modify its argument', () => {
    fc.assert(
      fc.property(bytes(), (prefix) => {
        const copy = Buffer.from(prefix)
        prefixEnd(prefix)
        expect(prefix.equals(copy)).toBe(true)
      }),
    )
  })
})

/** Runs `fn`; anything thrown must be a ConfigurationError naming a setting. */
function onlyConfigurationErrors(fn: () => unknown) {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigurationError)
    expect((err as ConfigurationError).setting).toMatch(/^(endpoints|ETCD_ENDPOINTS|ETCDCTL_ENDPOINTS)$/)
  }
}

const endpointLike = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc
    .tuple(
      fc.constantFrom('http://', 'https://', 'ftp://', '', '://', 'HTTP://'),
      fc.string(),
      fc.constantFrom('', ':', ':2379', ':0', ':99999', ':-1', '/x'),
    )
    .map((p) => p.join('')),
)

describe('resolveClientOptions', () => {
  it('throws nothing but ConfigurationError for arbitrary string endpoints (option or env)', () => {
    fc.assert(
      fc.property(endpointLike, fc.constantFrom('option', 'ETCD_ENDPOINTS', 'ETCDCTL_ENDPOINTS'), (endpoint, where) => {
        onlyConfigurationErrors(() =>
          resolveClientOptions(where === 'option' ? { endpoints: endpoint, env: {} } : { env: { [where]: endpoint } }),
        )
      }),
      { numRuns: 3000 },
    )
  })

  it('throws nothing but ConfigurationError for arbitrary endpoint lists and non-string values', () => {
    fc.assert(
      fc.property(fc.oneof(fc.array(endpointLike, { maxLength: 4 }), fc.anything()), (endpoints) => {
        onlyConfigurationErrors(() => resolveClientOptions({ endpoints: endpoints as string[], env: {} }))
      }),
      { numRuns: 2000 },
    )
  })

  it('whatever it accepts is a list of http(s)://host:port URLs', () => {
    fc.assert(
      fc.property(fc.array(endpointLike, { minLength: 1, maxLength: 3 }), (endpoints) => {
        let hosts: string[] | undefined
        try {
          hosts = resolveClientOptions({ endpoints, env: {} }).etcd.hosts as string[]
        } catch {
          return
        }
        for (const h of hosts) expect(h).toMatch(/^https?:\/\/[^/]+:\d+$/)
      }),
      { numRuns: 2000 },
    )
  })
})

describe('checkName', () => {
  it('accepts every non-empty string up to 4096 bytes and rejects everything else with InvalidArgumentError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.anything()), (name) => {
        const ok = typeof name === 'string' && name.length > 0 && Buffer.byteLength(name) <= 4096
        if (ok) expect(checkName(name, 'name')).toBe(name)
        else expect(() => checkName(name, 'name')).toThrow(InvalidArgumentError)
      }),
      { numRuns: 2000 },
    )
  })
})

describe('retry back-off (retryDelaySeconds)', () => {
  it('is a whole number in [ceil(d/2), d] for d = min(cap, base * 2^(n-1)); never 0 unless the base is 0', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 0, max: 600 }),
        fc.integer({ min: 0, max: 3600 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (n, base, extra, r) => {
          const backoff = checkBackoff({ retryDelay: base, maxRetryDelay: base + extra }, 'test')
          const s = retryDelaySeconds(n, backoff, () => r)
          expect(Number.isInteger(s)).toBe(true)
          if (base === 0) {
            expect(s).toBe(0)
            return
          }
          const d = Math.min(base + extra, base * 2 ** Math.min(n - 1, 40))
          expect(s).toBeGreaterThanOrEqual(Math.max(1, Math.ceil(d / 2)))
          expect(s).toBeLessThanOrEqual(d)
        },
      ),
      { numRuns: 3000 },
    )
  })

  it('defaults to 1 s doubling up to 300 s, and grows with the receive count', () => {
    const backoff = checkBackoff(undefined, 'test')
    expect(backoff).toEqual({ retryDelay: 1, maxRetryDelay: 300 })
    expect([1, 2, 3, 4, 5, 20].map((n) => retryDelaySeconds(n, backoff, () => 0.999))).toEqual([1, 2, 4, 8, 16, 300])
    expect([1, 2, 3, 4, 5, 20].map((n) => retryDelaySeconds(n, backoff, () => 0))).toEqual([1, 1, 2, 4, 8, 150])
    expect(() => checkBackoff({ retryDelay: 10, maxRetryDelay: 5 }, 'Queue options')).toThrow(InvalidArgumentError)
    expect(() => checkBackoff({ retryDelay: 0.5 }, 'Queue options')).toThrow(/retryDelay must be a whole number/)
  })
})

/** `value` with the keys of every object in another order (the same JSON document to a reader). */
function reordered(value: unknown, seed: number): unknown {
  if (Array.isArray(value)) return value.map((v, i) => reordered(v, seed + i))
  if (typeof value !== 'object' || value === null) return value
  const keys = Object.keys(value)
  const order = keys.map((k, i) => [k, (i * 7919 + seed) % (keys.length + 1)] as const).sort((a, b) => a[1] - b[1])
  const out: Record<string, unknown> = {}
  for (const [k] of order) out[k] = reordered((value as Record<string, unknown>)[k], seed + 1)
  return out
}

describe('idempotency records and payload hashes', () => {
  it('hashPayload: the same document in any key order hashes alike; different documents differently', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), fc.nat(), (a, b, seed) => {
        expect(hashPayload(reordered(a, seed))).toBe(hashPayload(a))
        const canonical = (v: unknown) =>
          JSON.stringify(v, (_k, x) =>
            x && typeof x === 'object' && !Array.isArray(x)
              ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0)))
              : x,
          )
        if (canonical(a) !== canonical(b)) expect(hashPayload(a)).not.toBe(hashPayload(b))
      }),
      { numRuns: 1000 },
    )
  })

  it('any value either round-trips through a completed record as its JSON form, or is refused with a typed error', () => {
    const kv = (text: string) => ({ key: 'p/k', value: Buffer.from(text), createRevision: 1n, modRevision: 1n, version: 1n, lease: '0' })
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue(),
          fc.anything({ withBigInt: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withNullPrototype: true }),
        ),
        (result) => {
          let text: string
          try {
            text = encodeRecord({ state: 'completed', result })
          } catch (err) {
            expect(err).toBeInstanceOf(IdempotencyResultNotStorableError)
            return
          }
          const back = decodeRecord(kv(text))
          expect(back.state).toBe('completed')
          // What a duplicate gets is exactly what the first caller got, as JSON sees it.
          expect(JSON.stringify(back.state === 'completed' && back.result)).toBe(JSON.stringify(result))
        },
      ),
      { numRuns: 2000 },
    )
  })

  it('decodeRecord: any foreign value under the prefix is an InvalidArgumentError naming the key, never a crash', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (text) => {
          try {
            const r = decodeRecord({ key: 'p/k', value: Buffer.from(text), createRevision: 1n, modRevision: 1n, version: 1n, lease: '0' })
            expect(['in-progress', 'completed', 'failed']).toContain(r.state)
          } catch (err) {
            expect(err).toBeInstanceOf(InvalidArgumentError)
            expect((err as Error).message).toMatch(/"p\/k" is not an idempotency record/)
          }
        },
      ),
      { numRuns: 2000 },
    )
  })
})

describe('Semaphore and RateLimiter inputs', () => {
  const number = fc.oneof(
    fc.integer({ min: -5, max: 2000 }),
    fc.double({ noNaN: false }),
    fc.constantFrom(0, 1, 999, 1000, 1001, Infinity, -Infinity, NaN, 86_400_000, 86_400_001),
  )

  it('permits: accepted exactly when a whole number from 1 to 1000, else InvalidArgumentError', () => {
    fc.assert(
      fc.property(fc.oneof(number, fc.anything()), (permits) => {
        const ok = typeof permits === 'number' && Number.isInteger(permits) && permits >= 1 && permits <= 1000
        if (ok) expect(checkPermits(permits)).toBe(permits)
        else expect(() => checkPermits(permits)).toThrow(InvalidArgumentError)
      }),
      { numRuns: 3000 },
    )
  })

  it('{ rate, per, burst }: accepted exactly when rate > 0 with at most one admission per ms and at least one a year, per a whole number of ms up to a day, burst 0..999', () => {
    fc.assert(
      fc.property(
        fc.oneof(number, fc.constant(undefined), fc.string()),
        fc.oneof(number, fc.constant(undefined)),
        fc.oneof(number, fc.constant(undefined)),
        (rate, per, burst) => {
          const p = per ?? 1000
          const b = burst ?? 0
          const ok =
            typeof rate === 'number' &&
            Number.isFinite(rate) &&
            rate > 0 &&
            typeof p === 'number' &&
            Number.isInteger(p) &&
            p >= 1 &&
            p <= 86_400_000 &&
            p / rate >= 1 &&
            p / rate <= MAX_REFILL_INTERVAL_MS &&
            typeof b === 'number' &&
            Number.isInteger(b) &&
            b >= 0 &&
            b <= 999
          const options = { rate, per, burst } as never
          if (ok)
            expect(checkRateOptions(options)).toEqual({ rate, per: p, burst: b, waiterTtl: 2 }) // waiterTtl's default
          else expect(() => checkRateOptions(options)).toThrow(InvalidArgumentError)
        },
      ),
      { numRuns: 5000 },
    )
  })

  it('slot keys: slotIndex reads back every slot number, and no other key under the prefix or outside it', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 12 }),
        fc.integer({ min: 0, max: 999_999_999 }),
        fc.string({ maxLength: 12 }),
        (name, index, other) => {
          const slots = permitKeys.holders(name)
          expect(permitKeys.slotIndex(slots, permitKeys.slot(slots, index))).toBe(index)
          const read = permitKeys.slotIndex(slots, `${slots}${other}`)
          if (read !== undefined) expect(permitKeys.slot(slots, read)).toBe(`${slots}${other}`)
          expect(permitKeys.slotIndex(slots, `${name}/waiters/${index}`)).toBeUndefined()
        },
      ),
      { numRuns: 2000 },
    )
  })
})

describe('key layouts read back (lib/core/keys.ts: what the CLI recognises keys by)', () => {
  const name = fc.string({ minLength: 1, maxLength: 12 })
  const lease = fc.bigInt({ min: 1n, max: 0x7fffffffffffffffn }).map(String)
  const nano = fc.bigInt({ min: 0n, max: 10n ** 19n - 1n }).map(String)

  it('a Mutex/Election key gives its name; an RWMutex key its name and mode; a PriorityQueue item its priority', () => {
    fc.assert(
      fc.property(
        name,
        lease,
        nano,
        fc.constantFrom('read' as const, 'write' as const),
        fc.integer({ min: 0, max: 65535 }),
        (n, id, ns, mode, prio) => {
          expect(contenders.nameOf(contenders.key(n, leaseHex(id)))).toBe(n)
          expect(rwContenders.parse(`${rwContenders.modePrefix(n, mode)}${ns}`)).toEqual({ name: n, mode })
          const item = `${queueKeys.bucket(n, prio)}/${'7'.padStart(16, '0')}`
          expect(queueKeys.priorityOf(n, item)).toBe(prio)
          expect(queueKeys.endsAsPriorityItem(item)).toBe(true)
          expect(queueKeys.priorityOf(n, `${queueKeys.items(n)}${ns}`)).toBeUndefined()
          expect(queueOfDeadLetterQueue(defaultDeadLetterQueue(n))).toBe(n)
        },
      ),
      { numRuns: 500 },
    )
    expect(queueOfDeadLetterQueue('orders')).toBeUndefined()
    expect(rwContenders.parse('l/read/x')).toBeUndefined()
  })

  it('stored settings read back as what wrote them; a config key gives its name', () => {
    fc.assert(
      fc.property(
        name,
        fc.integer({ min: 1, max: 1000 }),
        fc.double({ min: 0.001, max: 1000, noNaN: true }),
        fc.integer({ min: 1, max: 86_400_000 }),
        fc.integer({ min: 0, max: 999 }),
        (n, permits, rate, per, burst) => {
          expect(permitKeys.parseSettings(permitKeys.semaphoreSettings(permits))).toEqual({ kind: 'semaphore', permits })
          expect(permitKeys.parseSettings(permitKeys.rateLimiterSettings({ rate, per, burst }))).toEqual({
            kind: 'rate limiter',
            permits: burst + 1,
          })
          expect(permitKeys.nameOfConfig(permitKeys.config(n))).toBe(n)
        },
      ),
      { numRuns: 500 },
    )
    expect(permitKeys.parseSettings('permits=0')).toBeUndefined()
    expect(permitKeys.nameOfConfig('x/configs')).toBeUndefined()
  })
})
