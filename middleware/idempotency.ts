import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { ComparatorBuilder, Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import {
  IdempotencyClaimLostError,
  IdempotencyInProgressError,
  IdempotencyKeyMissingError,
  IdempotencyResultNotStorableError,
  InvalidArgumentError,
  InvalidRequestError,
} from '../lib/errors.js'
import { IdempotencyStore, type IdempotencyClaim, type WaitOutcome } from '../lib/idempotency/store.js'
import { hashPayload } from '../lib/idempotency/record.js'
import { idempotencyKeys } from '../lib/core/keys.js'
import type { Compare } from '../lib/core/kv.js'
import { DEFAULT_IN_PROGRESS_TTL_S, MAX_NAME_BYTES } from '../lib/limits.js'
import { perClient } from '../lib/core/per-client.js'
import type { WaitOptions } from '../lib/wait/wait.js'
import { emit, type EtcdEvent, type OnEvent } from './events.js'
import { sourceOf } from './http.js'
import { callWithEvent } from './name.js'
import { validateOptions, type Schema } from './options.js'
import { ScopeUses, shortCircuit, type ScopeUse } from './scope.js'

/** What the handler of the invocation that owns the key gets as `context.etcd.idempotency`. */
export interface IdempotencyGrant {
  /** The idempotency key. */
  key: string
  /** The record's create revision: strictly increasing across owners of this key. Pass it downstream. */
  fence: bigint
  /** A compare that holds while this invocation owns the key: put it in the compares of your etcd Txns. */
  ownerCompare: () => Compare
  /** An etcd3 transaction builder guarded by this claim: `await grant.fenced().then(client.put('k').value('v')).commit()`. */
  fenced: () => ComparatorBuilder
  /** Aborted if the lease is lost while the handler runs: a duplicate may then run too, so stop writing. Reading it checks the lease's bound at once. */
  readonly signal: AbortSignal
}

/** What `responseHook` learns about a stored response it is given. */
export interface StoredResponseInfo {
  /** The idempotency key. */
  key: string
  /** The etcd revision at which the response was stored. */
  revision: bigint
  /** Whether this duplicate waited for the response (the first invocation was still running). */
  waited: boolean
}

export interface EtcdIdempotencyOptions<
  TEvent = any,
  TResult = any,
  TKey extends string | undefined = string | undefined,
  TRequire extends boolean = boolean,
> {
  /**
   * The idempotency key of an event, e.g. `fromHeader('Idempotency-Key')` (any case of the
   * name: REST and HTTP API events alike); `undefined` runs that event without idempotency (and
   * without `context.etcd.idempotency`), unless `requireKey`. A throw is a 400 (`InvalidRequestError`).
   */
  key: (event: TEvent, context: any) => TKey
  /** An event without a key is refused with `IdempotencyKeyMissingError` (400) instead of run without idempotency (default false). */
  requireKey?: TRequire
  /** The part of the event that must match for a duplicate (its hash is stored); default: not checked. A throw (malformed JSON) is a 400 (`InvalidRequestError`). */
  payload?: (event: TEvent) => unknown
  /** Seconds a completed response is kept for duplicates (default 3600); 0: only for duplicates waiting at the time. */
  ttl?: number
  /** A duplicate of an invocation still running: 'wait' (default) for its response, or 'reject' with IdempotencyInProgressError (409). */
  onInProgress?: 'wait' | 'reject'
  /** Most time a duplicate waits, ms; always capped by the invocation's remaining time. */
  waitMs?: number
  /** Changes a stored response before a duplicate returns it (e.g. adds a replay header). */
  responseHook?: (response: TResult, info: StoredResponseInfo) => TResult | Promise<TResult>
  /** TTL in seconds of the lease the in-progress record carries: how long a crashed invocation keeps the key (default 10). */
  leaseTtl?: number
  /** Key prefix of the records (default `__idempotency/<context.functionName>`). */
  prefix?: string
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

export const defaults = {
  requireKey: false,
  ttl: 3600,
  onInProgress: 'wait',
  waitMs: Infinity,
  leaseTtl: DEFAULT_IN_PROGRESS_TTL_S,
} as const

export const schema: Schema = {
  key: { type: 'function', required: true },
  requireKey: { type: 'boolean' },
  payload: { type: 'function' },
  ttl: { type: 'seconds', min: 0 },
  onInProgress: { type: 'enum', values: ['wait', 'reject'] },
  waitMs: { type: 'number', min: 0 },
  responseHook: { type: 'function' },
  leaseTtl: { type: 'seconds' },
  prefix: { type: 'string' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

type Resolved<TEvent, TResult> = EtcdIdempotencyOptions<TEvent, TResult> & {
  requireKey: boolean
  ttl: number
  onInProgress: 'wait' | 'reject'
  waitMs: number
  leaseTtl: number
}
/**
 * What the middleware adds to the context: the grant, which is absent for an event whose `key`
 * function returned undefined — so it is optional exactly when the `key` function may return
 * that and `requireKey` is not `true`.
 */
export type IdempotencyContext<TKey extends string | undefined = string | undefined> = {
  etcd: { idempotency: undefined extends TKey ? IdempotencyGrant | undefined : IdempotencyGrant }
}

type IdempotencyRequest<TEvent, TResult> = Request<TEvent, TResult, Error, Context & { etcd: { idempotency?: IdempotencyGrant } }>

/**
 * Runs the handler once per idempotency key (Powertools' idempotency, on etcd). A duplicate of a
 * completed invocation gets the stored response without running the handler; a duplicate of one
 * still running waits for its response (a watch) or is rejected with a 409-shaped
 * `IdempotencyInProgressError`. A failed invocation leaves no record; a crashed or timed-out one
 * frees its key when its lease ends. A response etcd cannot keep (not plain JSON, too large) is
 * returned all the same, and a `not-stored` event says so. Nothing is ever deleted or
 * overwritten on behalf of a duplicate: every write is fenced by the owner's record.
 */
export function etcdIdempotency<
  TEvent = any,
  TResult = any,
  TKey extends string | undefined = string | undefined,
  TRequire extends boolean = boolean,
>(
  options: EtcdIdempotencyOptions<TEvent, TResult, TKey, TRequire>,
): MiddlewareObj<TEvent, TResult, Error, Context & IdempotencyContext<TRequire extends true ? string : TKey>> {
  const opts = validateOptions<Resolved<TEvent, TResult>>('etcdIdempotency', schema, defaults, options)
  const uses = new ScopeUses('etcdIdempotency')
  const client = () => opts.client ?? sharedClient()

  const before = async (request: IdempotencyRequest<TEvent, TResult>) => {
    const prefix = opts.prefix ?? idempotencyKeys.functionPrefix(request.context?.functionName || 'default')
    const key = resolveKey(opts, request, prefix)
    if (key === undefined) {
      request.context.etcd = { ...request.context.etcd, idempotency: undefined }
      return void emit(opts.onEvent, { type: 'skipped', primitive: 'idempotency', name: '', detail: { reason: 'no-key' } })
    }
    const payload = opts.payload
    const payloadHash = payload ? hashPayload(callWithEvent('etcdIdempotency', 'payload', () => payload(request.event))) : undefined
    const store = storeFor(client(), prefix)
    const use = uses.enter(request, client(), request.context)
    const { scope } = use
    const budget = scope.waitBudget(opts.waitMs)
    const started = performance.now()
    let waited = false
    try {
      for (;;) {
        const begun = await scope.withSession(opts.leaseTtl, (session) => store.begin(key, { payloadHash, session }))
        if (begun.status === 'owned') return own(request, use, store, prefix, begun.claim, performance.now() - started)
        const outcome = begun.status === 'in-progress' ? await waitFor(request, key, begun.wait, budget, waited) : begun
        waited ||= begun.status === 'in-progress'
        if (outcome.status === 'completed') return respond(request, key, outcome.result as TResult, outcome.revision, waited)
        if (outcome.status === 'failed') throw outcome.error
        // gone: the first invocation failed or died: begin again (this one may run the handler now)
      }
    } finally {
      budget.stop() // its timer would otherwise stay armed until the invocation's deadline
    }
  }

  /** A duplicate of a running invocation: reject, or wait within the budget for its outcome. */
  const waitFor = async (
    request: IdempotencyRequest<TEvent, TResult>,
    key: string,
    wait: (o: WaitOptions) => Promise<WaitOutcome>,
    budget: { signal: AbortSignal; ms: number },
    waited: boolean,
  ) => {
    if (opts.onInProgress === 'reject') {
      emit(opts.onEvent, { type: 'skipped', primitive: 'idempotency', name: key, detail: { reason: 'in-progress' } })
      return shortCircuit(request, () => {
        throw new IdempotencyInProgressError(
          `idempotency key ${JSON.stringify(key)} is being processed by another invocation; retry later (or use onInProgress: 'wait')`,
        )
      })
    }
    if (!waited) emit(opts.onEvent, { type: 'waiting', primitive: 'idempotency', name: key })
    try {
      return await wait({ signal: budget.signal })
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      return shortCircuit(request, () => {
        throw new IdempotencyInProgressError(
          `idempotency key ${JSON.stringify(key)} was still being processed by another invocation after ${budget.ms} ms; retry later, or raise waitMs or the function timeout`,
        )
      })
    }
  }

  /**
   * This invocation owns the key: the handler runs with `context.etcd.idempotency`. Leaving
   * from `after` stores the handler's response; every other way out (onError, a guard's
   * short-circuit, etcdPlugin) gives the key up, so the next duplicate runs the handler.
   */
  const own = (
    request: IdempotencyRequest<TEvent, TResult>,
    use: ScopeUse,
    store: IdempotencyStore,
    prefix: string,
    claim: IdempotencyClaim,
    waitedMs: number,
  ) => {
    // The record's etcd key, by the layout the store writes it in (the claim's own key is lib's internal).
    const event = {
      primitive: 'idempotency' as const,
      name: claim.key,
      key: idempotencyKeys.record(prefix, claim.key),
      fence: String(claim.fence),
    }
    use.onRelease(async (handled) => {
      if (claim.finished) return
      if (handled) await keep(store, claim, handled.response, event)
      else {
        await store.fail(claim)
        emit(opts.onEvent, { ...event, type: 'released', detail: { stored: false } })
      }
    })
    const grant: IdempotencyGrant = {
      key: claim.key,
      fence: claim.fence,
      ownerCompare: () => claim.ownerCompare(),
      fenced: () => claim.fenced(),
      get signal() {
        return claim.signal
      },
    }
    request.context.etcd = { ...request.context.etcd, idempotency: grant }
    emit(opts.onEvent, { ...event, type: 'acquired', waitedMs })
    return undefined
  }

  /** Stores the handler's response for duplicates; never fails the invocation because it could not. */
  const keep = async (store: IdempotencyStore, claim: IdempotencyClaim, response: unknown, event: Omit<EtcdEvent, 'type'>) => {
    try {
      await store.complete(claim, response, { ttl: opts.ttl })
      emit(opts.onEvent, { ...event, type: 'released', detail: { stored: true } })
    } catch (err) {
      if (err instanceof IdempotencyClaimLostError) emit(opts.onEvent, { ...event, type: 'lost', detail: { stored: false } })
      else
        emit(opts.onEvent, {
          ...event,
          type: 'not-stored',
          detail: { reason: err instanceof IdempotencyResultNotStorableError ? err.reason : 'etcd', error: (err as Error).name },
        })
      if (!claim.finished) await store.fail(claim)
    }
  }

  /** A duplicate: the stored response, without running the handler (Middy's early response). */
  const respond = (request: IdempotencyRequest<TEvent, TResult>, key: string, stored: TResult, revision: bigint, waited: boolean) => {
    emit(opts.onEvent, { type: 'skipped', primitive: 'idempotency', name: key, detail: { reason: 'duplicate', waited } })
    const { responseHook } = opts
    return shortCircuit(request, () => (responseHook ? responseHook(stored, { key, revision, waited }) : stored))
  }

  const after = (request: IdempotencyRequest<TEvent, TResult>) => uses.leave(request, { response: request.response })
  const onError = (request: IdempotencyRequest<TEvent, TResult>) => uses.leave(request)

  return { before, after, onError } as MiddlewareObj<
    TEvent,
    TResult,
    Error,
    Context & IdempotencyContext<TRequire extends true ? string : TKey>
  >
}

/**
 * This request's idempotency key, checked before anything is written; undefined when the `key`
 * function opts the event out. The key comes from the request, so whatever is wrong with it is
 * the caller's to fix: a 400 (`InvalidRequestError`), never a 500.
 */
function resolveKey<TEvent>(
  opts: { key: (event: TEvent, context: any) => string | undefined; requireKey: boolean },
  request: { event: TEvent; context: unknown },
  prefix: string,
): string | undefined {
  const key = callWithEvent('etcdIdempotency', 'key', () => opts.key(request.event, request.context))
  if (key === undefined) {
    if (!opts.requireKey) return undefined
    const source = sourceOf(opts.key)
    throw new IdempotencyKeyMissingError(
      `etcdIdempotency: this request has no idempotency key (${source ? `${source} is missing` : 'the `key` function returned undefined'}); send one, e.g. a UUID, with each request (requireKey is on)`,
    )
  }
  if (typeof key !== 'string' || key === '') {
    throw new InvalidRequestError(
      `etcdIdempotency: the \`key\` function returned ${key === '' ? '""' : key === null ? 'null' : typeof key}; it must return a non-empty string, or undefined to run the event without idempotency`,
    )
  }
  // The record key is `<prefix>/<key>`, and a key is at most MAX_NAME_BYTES.
  const most = MAX_NAME_BYTES - Buffer.byteLength(prefix) - 1
  if (most < 1)
    throw new InvalidArgumentError(
      `etcdIdempotency: the record prefix ${JSON.stringify(prefix.slice(0, 40))}… leaves no room for a key (${MAX_NAME_BYTES} bytes in all); use a shorter prefix`,
    )
  const bytes = Buffer.byteLength(key)
  if (bytes > most)
    throw new InvalidRequestError(
      `etcdIdempotency: the idempotency key is ${bytes} bytes; at most ${most} are accepted: send a shorter key (a UUID is 36)`,
    )
  return key
}

const storesOf = perClient((): Map<string, IdempotencyStore> => new Map())

/** One store per client and prefix. */
function storeFor(client: Namespace, prefix: string): IdempotencyStore {
  const byPrefix = storesOf(client)
  let store = byPrefix.get(prefix)
  if (!store) {
    store = new IdempotencyStore(client, prefix)
    byPrefix.set(prefix, store)
  }
  return store
}
