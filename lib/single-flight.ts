import type { Namespace } from 'etcd3'
import { checkClient, checkOptions } from './check.js'
import { IdempotencyResultNotStorableError, InvalidArgumentError, SessionExpiredError } from './errors.js'
import { IdempotencyStore, type BeginResult, type IdempotencyClaim } from './idempotency.js'
import { idempotencyKeys } from './keys.js'
import { checkName } from './kv.js'
import { MAX_TTL_S } from './limits.js'
import { Session } from './session.js'
import { untilAborted } from './wait.js'

/** Options of {@link singleFlight}. */
export interface SingleFlightOptions {
  /** Seconds the result stays for later callers (default 0: only the callers in flight share it). */
  ttl?: number
  /** Stops this caller's wait; for the leader, also aborts the signal `fn` gets (the others then take over). */
  signal?: AbortSignal
  /** TTL in seconds of the lease that marks a flight in progress: how long a crashed leader keeps the others waiting (default 10). */
  leaseTtl?: number
}

const DEFAULT_LEASE_TTL = 10

/** Flights running in this process, per client and key: their callers share one etcd flight. */
const localFlights = new WeakMap<Namespace, Map<string, { promise: Promise<unknown>; signal?: AbortSignal }>>()
/** One long-lived session per client and lease TTL for flight records (replaced when it ends). */
const sessions = new WeakMap<Namespace, Map<number, Promise<Session>>>()
const stores = new WeakMap<Namespace, IdempotencyStore>()

/**
 * Runs `fn` once for all concurrent callers of `key`, across processes: one caller (the leader)
 * runs it, the others get its result — or its error — as soon as it is done (a watch: no
 * polling). Callers in this process share the leader's promise itself; callers elsewhere get
 * the result through etcd — so it must be plain JSON under etcd's value limit, or they fail
 * with a `SingleFlightError` naming `IdempotencyResultNotStorableError` — and a failure as a
 * `SingleFlightError` carrying the leader's error name, message and code. If the
 * leader dies, its record goes with its lease and another caller runs `fn`. The result is kept
 * for callers arriving within `ttl` seconds after; with `ttl` 0 nothing is kept.
 */
export async function singleFlight<T>(client: Namespace, key: string, fn: (signal: AbortSignal) => T | Promise<T>, options?: SingleFlightOptions): Promise<T> {
  checkClient(client, 'singleFlight')
  checkName(key, 'singleFlight key')
  if (typeof fn !== 'function') throw new InvalidArgumentError(`singleFlight: fn must be a function (signal) => result, got ${fn === null ? 'null' : typeof fn}`)
  const o = checkOptions(options, 'singleFlight')
  const ttl = checkSeconds(o.ttl, 'ttl', 0, 0)
  const leaseTtl = checkSeconds(o.leaseTtl, 'leaseTtl', 1, DEFAULT_LEASE_TTL)
  const local = localFlightsOf(client)
  for (;;) {
    o.signal?.throwIfAborted()
    const running = local.get(key)
    if (!running) break
    try {
      return (await untilAborted(running.promise, o.signal)) as T
    } catch (err) {
      // The local leader gave up on its own signal, not on fn's merits: fly again.
      if (!(running.signal?.aborted && err === running.signal.reason)) throw err
      if (local.get(key) === running) local.delete(key)
    }
  }
  const flight = { promise: fly(client, key, fn, ttl, leaseTtl, o.signal), signal: o.signal }
  local.set(key, flight)
  flight.promise.then(
    () => local.get(key) === flight && local.delete(key),
    () => local.get(key) === flight && local.delete(key),
  )
  return flight.promise
}

/** One caller's way through etcd: lead, or follow whoever leads until they finish or go. */
async function fly<T>(client: Namespace, key: string, fn: (signal: AbortSignal) => T | Promise<T>, ttl: number, leaseTtl: number, signal?: AbortSignal): Promise<T> {
  const store = storeOf(client)
  for (;;) {
    signal?.throwIfAborted()
    const begun = await begin(store, client, key, leaseTtl)
    if (begun.status === 'owned') return lead(store, begun.claim, fn, ttl, signal)
    const outcome = begun.status === 'in-progress' ? await begun.wait({ signal }) : begun
    if (outcome.status === 'completed') return outcome.result as T
    if (outcome.status === 'failed') throw outcome.error
    // gone: the leader failed without an answer for us, or died; begin again
  }
}

/** Runs `fn` as the leader and hands its outcome to the followers. */
async function lead<T>(store: IdempotencyStore, claim: IdempotencyClaim, fn: (signal: AbortSignal) => T | Promise<T>, ttl: number, signal?: AbortSignal): Promise<T> {
  const session = claim.own.session
  try {
    let result: T
    try {
      result = await fn(signal ? AbortSignal.any([signal, claim.signal]) : claim.signal)
    } catch (err) {
      // Our own abort is no answer for the others: they take over. Anything else is their answer too.
      await store.fail(claim, signal?.aborted ? {} : { error: err })
      throw err
    }
    try {
      await store.complete(claim, result, { ttl })
    } catch (err) {
      // The leader has its result either way; followers elsewhere get this error, or begin again.
      if (err instanceof IdempotencyResultNotStorableError) await store.fail(claim, { error: err })
    }
    return result
  } finally {
    // A record it could not delete must not outlive the flight on a lease kept alive for ever.
    if (session.stranded.length > 0) session.orphan()
  }
}

/** Begins on the shared session; once more on a fresh one if its lease turns out gone. */
async function begin(store: IdempotencyStore, client: Namespace, key: string, leaseTtl: number): Promise<BeginResult> {
  for (let attempt = 0; ; attempt++) {
    const session = await sharedSession(client, leaseTtl)
    try {
      return await store.begin(key, { session })
    } catch (err) {
      if (attempt > 0 || !(err instanceof SessionExpiredError) || session.active) throw err
    }
  }
}

/** The client's flight session for `ttl`: reused while it lives and holds no stranded key. */
async function sharedSession(client: Namespace, ttl: number): Promise<Session> {
  let byTtl = sessions.get(client)
  if (!byTtl) sessions.set(client, (byTtl = new Map()))
  for (;;) {
    const pending = byTtl.get(ttl)
    if (!pending) {
      const created = Session.create(client, { ttl })
      byTtl.set(ttl, created)
      created.catch(() => byTtl.get(ttl) === created && byTtl.delete(ttl))
      return created
    }
    const session = await pending.catch(() => undefined)
    if (session?.active && session.stranded.length === 0) return session
    session?.orphan()
    if (byTtl.get(ttl) === pending) byTtl.delete(ttl)
  }
}

function storeOf(client: Namespace): IdempotencyStore {
  let store = stores.get(client)
  if (!store) stores.set(client, (store = new IdempotencyStore(client, idempotencyKeys.singleFlightPrefix)))
  return store
}

function localFlightsOf(client: Namespace) {
  let flights = localFlights.get(client)
  if (!flights) localFlights.set(client, (flights = new Map()))
  return flights
}

function checkSeconds(value: unknown, name: string, min: number, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TTL_S) {
    throw new InvalidArgumentError(`singleFlight: ${name} must be a whole number of seconds between ${min} and ${MAX_TTL_S}, got ${String(value)}`)
  }
  return value
}
