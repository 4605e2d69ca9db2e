import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { ComparatorBuilder, Namespace } from 'etcd3'
import { sharedClient } from '../lib/client.js'
import { IdempotencyClaimLostError, IdempotencyInProgressError, IdempotencyResultNotStorableError, InvalidArgumentError } from '../lib/errors.js'
import { IdempotencyStore, type IdempotencyClaim, type WaitOutcome } from '../lib/idempotency.js'
import { hashPayload } from '../lib/idempotency-record.js'
import { idempotencyKeys } from '../lib/keys.js'
import { checkName, type Compare } from '../lib/kv.js'
import { DEFAULT_IN_PROGRESS_TTL_S, MAX_TTL_S } from '../lib/limits.js'
import type { WaitOptions } from '../lib/wait.js'
import { emit, type EtcdEvent, type OnEvent } from './events.js'
import { validateOptions, type Schema } from './options.js'
import { InvocationScope } from './scope.js'

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

export interface EtcdIdempotencyOptions<TEvent = any, TResult = any, TKey extends string | undefined = string | undefined> {
  /** The idempotency key of an event; `undefined` runs that event without idempotency (and without `context.etcd.idempotency`). */
  key: (event: TEvent, context: any) => TKey
  /** The part of the event that must match for a duplicate (its hash is stored); default: not checked. */
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

export const defaults = { ttl: 3600, onInProgress: 'wait', waitMs: Infinity, leaseTtl: DEFAULT_IN_PROGRESS_TTL_S } as const

export const schema: Schema = {
  key: { type: 'function', required: true },
  payload: { type: 'function' },
  ttl: { type: 'integer', min: 0, max: MAX_TTL_S },
  onInProgress: { type: 'enum', values: ['wait', 'reject'] },
  waitMs: { type: 'number', min: 0 },
  responseHook: { type: 'function' },
  leaseTtl: { type: 'integer', min: 1, max: MAX_TTL_S },
  prefix: { type: 'string' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

type Resolved<TEvent, TResult> = EtcdIdempotencyOptions<TEvent, TResult> & { ttl: number; onInProgress: 'wait' | 'reject'; waitMs: number; leaseTtl: number }
/**
 * What the middleware adds to the context: the grant, which is absent for an event whose `key`
 * function returned undefined — so it is optional exactly when the `key` function may return that.
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
export function etcdIdempotency<TEvent = any, TResult = any, TKey extends string | undefined = string | undefined>(
  options: EtcdIdempotencyOptions<TEvent, TResult, TKey>,
): MiddlewareObj<TEvent, TResult, Error, Context & IdempotencyContext<TKey>> {
  const opts = validateOptions<Resolved<TEvent, TResult>>('etcdIdempotency', schema, defaults, options)
  const self = {}
  const client = () => opts.client ?? sharedClient()
  /** The claim each request owns: only that request completes or fails it. */
  const owned = new WeakMap<object, { claim: IdempotencyClaim; store: IdempotencyStore; event: Omit<EtcdEvent, 'type'> }>()

  const before = async (request: IdempotencyRequest<TEvent, TResult>) => {
    const key = resolveKey(opts, request)
    if (key === undefined) {
      request.context.etcd = { ...request.context.etcd, idempotency: undefined }
      return void emit(opts.onEvent, { type: 'skipped', primitive: 'idempotency', name: '', detail: { reason: 'no-key' } })
    }
    const payloadHash = opts.payload ? hashPayload(opts.payload(request.event)) : undefined
    const store = storeFor(client(), opts.prefix ?? idempotencyKeys.functionPrefix(request.context?.functionName || 'default'))
    const scope = InvocationScope.of(request, client(), request.context, self)
    const budget = scope.waitBudget(opts.waitMs)
    const started = performance.now()
    let waited = false
    for (;;) {
      const begun = await scope.withSession(opts.leaseTtl, (session) => store.begin(key, { payloadHash, session }))
      if (begun.status === 'owned') return hold(request, scope, store, key, begun.claim, performance.now() - started)
      const outcome = begun.status === 'in-progress' ? await waitFor(request, key, begun.wait, budget, waited) : begun
      waited ||= begun.status === 'in-progress'
      if (outcome.status === 'completed') return respond(request, key, outcome.result as TResult, outcome.revision, waited)
      if (outcome.status === 'failed') throw outcome.error
      // gone: the first invocation failed or died: begin again (this one may run the handler now)
    }
  }

  /** A duplicate of a running invocation: reject, or wait within the budget for its outcome. */
  const waitFor = async (request: IdempotencyRequest<TEvent, TResult>, key: string, wait: (o: WaitOptions) => Promise<WaitOutcome>, budget: { signal: AbortSignal; ms: number }, waited: boolean) => {
    if (opts.onInProgress === 'reject') {
      emit(opts.onEvent, { type: 'skipped', primitive: 'idempotency', name: key, detail: { reason: 'in-progress' } })
      await InvocationScope.endAll(request)
      throw new IdempotencyInProgressError(`idempotency key ${JSON.stringify(key)} is being processed by another invocation; retry later (or use onInProgress: 'wait')`)
    }
    if (!waited) emit(opts.onEvent, { type: 'waiting', primitive: 'idempotency', name: key })
    try {
      return await wait({ signal: budget.signal })
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      await InvocationScope.endAll(request)
      throw new IdempotencyInProgressError(`idempotency key ${JSON.stringify(key)} was still being processed by another invocation after ${budget.ms} ms; retry later, or raise waitMs or the function timeout`)
    }
  }

  /** This invocation owns the key: the handler runs with `context.etcd.idempotency`. */
  const hold = (request: IdempotencyRequest<TEvent, TResult>, scope: InvocationScope, store: IdempotencyStore, key: string, claim: IdempotencyClaim, waitedMs: number) => {
    const event = { primitive: 'idempotency' as const, name: key, key: claim.own.key, fence: String(claim.fence) }
    owned.set(request, { claim, store, event })
    // Runs on every path that does not complete the claim: onError, a guard's short-circuit, etcdPlugin.
    scope.hold(self, async () => {
      if (claim.settled) return
      await store.fail(claim)
      emit(opts.onEvent, { ...event, type: 'released', detail: { stored: false } })
    })
    const grant: IdempotencyGrant = {
      key,
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

  /** A duplicate: the stored response, without running the handler (Middy's early response). */
  const respond = async (request: IdempotencyRequest<TEvent, TResult>, key: string, stored: TResult, revision: bigint, waited: boolean) => {
    emit(opts.onEvent, { type: 'skipped', primitive: 'idempotency', name: key, detail: { reason: 'duplicate', waited } })
    // Middy skips every `after` now: release what outer middlewares hold first.
    await InvocationScope.endAll(request)
    const response = opts.responseHook ? await opts.responseHook(stored, { key, revision, waited }) : stored
    request.earlyResponse = response
    return response
  }

  /** Stores the response; never fails the invocation because it could not. */
  const after = async (request: IdempotencyRequest<TEvent, TResult>) => {
    const mine = owned.get(request)
    if (mine && !mine.claim.settled) {
      const { claim, store, event } = mine
      try {
        await store.complete(claim, request.response, { ttl: opts.ttl })
        emit(opts.onEvent, { ...event, type: 'released', detail: { stored: true } })
      } catch (err) {
        if (err instanceof IdempotencyClaimLostError) emit(opts.onEvent, { ...event, type: 'lost', detail: { stored: false } })
        else emit(opts.onEvent, { ...event, type: 'not-stored', detail: { reason: err instanceof IdempotencyResultNotStorableError ? err.reason : 'etcd', error: (err as Error).name } })
        if (!claim.settled) await store.fail(claim)
      }
    }
    await InvocationScope.settle(request, client(), self)
  }

  const onError = (request: IdempotencyRequest<TEvent, TResult>) => InvocationScope.settle(request, client(), self)

  return { before, after, onError } as MiddlewareObj<TEvent, TResult, Error, Context & IdempotencyContext<TKey>>
}

/** This request's idempotency key, checked; undefined when the `key` function opts the event out. */
function resolveKey<TEvent>(opts: { key: (event: TEvent, context: any) => string | undefined }, request: { event: TEvent; context: unknown }): string | undefined {
  const key = opts.key(request.event, request.context)
  if (key === undefined) return undefined
  if (typeof key !== 'string' || key === '') {
    throw new InvalidArgumentError(`etcdIdempotency: the \`key\` function returned ${key === '' ? '""' : key === null ? 'null' : typeof key}; it must return a non-empty string, or undefined to run the event without idempotency`)
  }
  return checkName(key, 'etcdIdempotency: the key returned by the `key` function')
}

const stores = new WeakMap<Namespace, Map<string, IdempotencyStore>>()

/** One store per client and prefix. */
function storeFor(client: Namespace, prefix: string): IdempotencyStore {
  let byPrefix = stores.get(client)
  if (!byPrefix) stores.set(client, (byPrefix = new Map()))
  let store = byPrefix.get(prefix)
  if (!store) byPrefix.set(prefix, (store = new IdempotencyStore(client, prefix)))
  return store
}
