import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { ComparatorBuilder, Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import { RateLimitedError } from '../lib/errors.js'
import { perClient } from '../lib/core/per-client.js'
import { checkRateCost, checkRateOptions, RateLimiter, type RateAdmission } from '../lib/permits/rate-limiter.js'
import { emit, type OnEvent } from './events.js'
import { jsonResponse } from './http.js'
import { resolveName, type NameOption } from './name.js'
import { validateOptions, type Schema } from './options.js'
import { shortCircuit, waitBudget } from './scope.js'

/** Options of {@link etcdRateLimit}. */
export interface EtcdRateLimitOptions<TEvent = any, TResult = any> {
  /** The limiter's name (shared by every function that uses it), or a function of event and context. */
  name: NameOption<TEvent>
  /** Admissions per `per` ms in the long run. */
  rate: number
  /** The period of `rate`, ms (default 1000). */
  per?: number
  /** Admissions allowed at once beyond the steady rate (default 0): at most `rate + burst` per `per`. */
  burst?: number
  /** Seconds a crashed or frozen invocation's queued calls can hold up the others' (default 2; see `RateLimiter`). */
  waiterTtl?: number
  /** Admissions one invocation counts as (default 1, at most `burst + 1`). */
  cost?: number
  /** 'wait' (default) queues until the call fits; 'try' short-circuits at once with a 429 answer. */
  acquire?: 'wait' | 'try'
  /** Most time to wait, ms; always capped by the invocation's remaining time. */
  waitMs?: number
  /** With acquire 'try': the response when limited (default: 429 with a `Retry-After` header). */
  onLimited?: (request: Request<TEvent, TResult>, retryAfterMs: number) => TResult | Promise<TResult>
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

/** What the handler gets as `context.etcd.rateLimit`. */
export interface RateLimitGrant {
  name: string
  /** Time spent queued before admission, ms. */
  waitedMs: number
  /** The admission's revision: strictly increasing across admissions of this limiter. */
  fence: bigint
  /**
   * An etcd3 transaction builder guarded by this admission: the write lands only while it still
   * counts against the rate (its tokens neither deleted once their time passed nor replaced).
   */
  fenced: () => ComparatorBuilder
}

const defaults: { per: number; burst: number; acquire: 'wait' | 'try'; waitMs: number } = {
  per: 1000,
  burst: 0,
  acquire: 'wait',
  waitMs: Infinity,
}

// The limiter's settings are checked by the check its constructor runs (`checkRateOptions`).
const schema: Schema = {
  name: { type: 'nameOrFunction', required: true },
  rate: { type: 'lib', required: true },
  per: { type: 'lib' },
  burst: { type: 'lib' },
  waiterTtl: { type: 'lib' },
  cost: { type: 'lib' },
  acquire: { type: 'enum', values: ['wait', 'try'] },
  waitMs: { type: 'number', min: 0 },
  onLimited: { type: 'function' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/** A limiter kept for later invocations, and how many of this process's invocations are using it now. */
interface Kept {
  limiter: RateLimiter
  calls: number
}

/** Limiters kept per client, so their observations and lease outlive one invocation. */
const limitersOf = perClient((): Map<string, Kept> => new Map())
/** Idle limiters kept per client (a name function can make many): the least recently used go first. */
const MAX_LIMITERS = 100

/**
 * The limiter of `name`, counted as in use until `done()`. Only idle limiters are closed to
 * keep the map small: `close()` rejects the calls still waiting on a limiter, so closing one in
 * use would fail invocations that did nothing wrong. While more than MAX_LIMITERS are in use
 * the map grows past the bound, and shrinks back as they fall idle and new names come.
 */
function useLimiter(
  client: Namespace,
  name: string,
  o: { rate: number; per: number; burst: number; waiterTtl?: number },
): { limiter: RateLimiter; done: () => void } {
  const byName = limitersOf(client)
  const id = `${o.rate}/${o.per}/${o.burst}/${o.waiterTtl ?? ''}/${name}`
  let kept = byName.get(id)
  if (kept) byName.delete(id) // re-inserted below: most recently used last
  kept ??= { limiter: new RateLimiter(client, name, o), calls: 0 }
  kept.calls++
  byName.set(id, kept)
  for (const [oldId, old] of byName) {
    if (byName.size <= MAX_LIMITERS) break
    if (old.calls > 0) continue
    byName.delete(oldId)
    old.limiter.close().catch(() => {})
  }
  const mine = kept
  return { limiter: mine.limiter, done: () => void mine.calls-- }
}

/** The default answer of a limited call: HTTP 429 with `Retry-After` in whole seconds. */
function tooManyRequests(event: unknown, retryAfterMs: number) {
  return jsonResponse(
    event,
    429,
    { message: 'Too Many Requests', retryAfterMs },
    { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
  )
}

/**
 * Admits the invocation only within a rate shared by every function (a token bucket in etcd:
 * `rate` per `per` ms, `burst` more at once; see `RateLimiter`). With `acquire: 'wait'` it
 * queues (first come, first served) for at most `waitMs` and the remaining time, then throws
 * `RateLimitedError`; with `'try'` it answers at once with a 429 carrying `Retry-After`.
 * Nothing is held after the handler: an admission counts against the rate until the bucket
 * has refilled it.
 */
export function etcdRateLimit<TEvent = any, TResult = any>(
  options: EtcdRateLimitOptions<TEvent, TResult>,
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: { rateLimit: RateLimitGrant } }> {
  const opts = validateOptions<EtcdRateLimitOptions<TEvent, TResult> & typeof defaults>(
    'etcdRateLimit',
    schema,
    defaults,
    options,
    checkRateOptions,
  )
  // Checked now, at cold start, by the check each call would run.
  if (opts.cost !== undefined) checkRateCost(opts.cost, opts.burst, 'etcdRateLimit: option `cost`')
  const client = () => opts.client ?? sharedClient()

  const before = async (request: Request<TEvent, TResult, Error, Context & { etcd: { rateLimit: RateLimitGrant } }>) => {
    const name = resolveName('etcdRateLimit', opts.name, request)
    const { limiter, done } = useLimiter(client(), name, opts)
    const started = performance.now()
    let admission: RateAdmission | undefined
    let retryAfterMs = 0
    try {
      if (opts.acquire === 'try') ({ admission, retryAfterMs } = await limiter.decide({ cost: opts.cost }))
      else admission = await waitFor(request, limiter, name)
    } finally {
      done()
    }
    if (!admission) {
      emit(opts.onEvent, { type: 'skipped', primitive: 'rateLimit', name, detail: { retryAfterMs } })
      const { onLimited } = opts
      return shortCircuit(request, () =>
        onLimited ? onLimited(request, retryAfterMs) : (tooManyRequests(request.event, retryAfterMs) as TResult),
      )
    }
    const waitedMs = performance.now() - started
    const admitted = admission
    const grant: RateLimitGrant = { name, waitedMs, fence: admitted.fence, fenced: () => admitted.fenced() }
    request.context.etcd = { ...request.context.etcd, rateLimit: grant }
    emit(opts.onEvent, { type: 'acquired', primitive: 'rateLimit', name, waitedMs })
    return undefined
  }

  /** 'wait': queues within the budget; past it, RateLimitedError. */
  const waitFor = async (request: Request<TEvent, TResult>, limiter: RateLimiter, name: string): Promise<RateAdmission> => {
    const budget = waitBudget(request.context, opts.waitMs)
    try {
      return await limiter.acquire({
        signal: budget.signal,
        cost: opts.cost,
        onWaiting: () => emit(opts.onEvent, { type: 'waiting', primitive: 'rateLimit', name }),
      })
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      throw new RateLimitedError(
        limiter.interval,
        `etcdRateLimit: ${JSON.stringify(name)} did not admit the call within ${budget.ms} ms; raise waitMs or the function timeout, or send fewer calls`,
      )
    } finally {
      budget.stop()
    }
  }

  return { before }
}
