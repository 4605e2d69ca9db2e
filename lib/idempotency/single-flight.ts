import type { Namespace } from 'etcd3'
import { checkClient, checkOptions, checkSeconds } from '../core/check.js'
import { IdempotencyResultNotStorableError, InvalidArgumentError, SessionExpiredError } from '../errors.js'
import { IdempotencyStore, type BeginResult, type IdempotencyClaim } from './store.js'
import { idempotencyKeys } from '../core/keys.js'
import { checkName } from '../core/kv.js'
import { perClient } from '../core/per-client.js'
import { DEFAULT_IN_PROGRESS_TTL_S } from '../limits.js'
import { Session } from '../session/session.js'
import { untilAborted } from '../wait/wait.js'

/** Options of {@link singleFlight}. */
export interface SingleFlightOptions {
  /** Seconds the result stays for later callers (default 0: only the callers in flight share it). */
  ttl?: number
  /** Stops this caller's wait; for the leader, also aborts the signal `fn` gets (the others then take over). */
  signal?: AbortSignal
  /** TTL in seconds of the lease that marks a flight in progress: how long a crashed leader keeps the others waiting (default 10). */
  leaseTtl?: number
}

/** Flights running in this process, per client and key: their callers share one etcd flight. */
const localFlightsOf = perClient((): Map<string, { promise: Promise<unknown>; signal?: AbortSignal }> => new Map())
/** One long-lived session per client and lease TTL for flight records (replaced when it ends). */
const sessionsOf = perClient((): Map<number, Promise<Session>> => new Map())
const storeOf = perClient((client) => new IdempotencyStore(client, idempotencyKeys.singleFlightPrefix))
/** How many flights are beginning or leading on each shared session right now. */
const inUse = new WeakMap<Session, number>()

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
export async function singleFlight<T>(
  client: Namespace,
  key: string,
  fn: (signal: AbortSignal) => T | Promise<T>,
  options?: SingleFlightOptions,
): Promise<T> {
  checkClient(client, 'singleFlight')
  checkName(key, 'singleFlight key')
  if (typeof fn !== 'function')
    throw new InvalidArgumentError(`singleFlight: fn must be a function (signal) => result, got ${fn === null ? 'null' : typeof fn}`)
  const o = checkOptions(options, 'singleFlight')
  const ttl = checkSeconds(o.ttl, 'singleFlight: ttl', 0, { fallback: 0 })
  const leaseTtl = checkSeconds(o.leaseTtl, 'singleFlight: leaseTtl', 1, { fallback: DEFAULT_IN_PROGRESS_TTL_S })
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
async function fly<T>(
  client: Namespace,
  key: string,
  fn: (signal: AbortSignal) => T | Promise<T>,
  ttl: number,
  leaseTtl: number,
  signal?: AbortSignal,
): Promise<T> {
  const store = storeOf(client)
  let freshSessions = 0
  for (;;) {
    signal?.throwIfAborted()
    const session = await sharedSession(client, leaseTtl)
    let step: Exclude<BeginResult, { status: 'owned' }> | { status: 'led'; result: T }
    try {
      step = await using(session, async () => {
        const begun = await store.begin(key, { session })
        return begun.status === 'owned' ? { status: 'led' as const, result: await lead(store, begun.claim, fn, ttl, signal) } : begun
      })
    } catch (err) {
      // The shared session's lease was gone (e.g. it expired while the process was frozen): once more on a fresh one.
      if (freshSessions++ === 0 && err instanceof SessionExpiredError && !session.active) continue
      throw err
    }
    if (step.status === 'led') return step.result
    const outcome = step.status === 'in-progress' ? await step.wait({ signal }) : step
    if (outcome.status === 'completed') return outcome.result as T
    if (outcome.status === 'failed') throw outcome.error
    // gone: the leader failed without an answer for us, or died; begin again
  }
}

/** Runs `fn` as the leader and hands its outcome to the followers. */
async function lead<T>(
  store: IdempotencyStore,
  claim: IdempotencyClaim,
  fn: (signal: AbortSignal) => T | Promise<T>,
  ttl: number,
  signal?: AbortSignal,
): Promise<T> {
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
}

/**
 * Runs `work` on a shared session, counting it as in use. A session that holds a stranded key
 * (a record some clean-up could not delete) is no longer handed out, and is orphaned when the
 * last work on it ends, so its lease — no longer kept alive — takes the key with it.
 */
async function using<T>(session: Session, work: () => Promise<T>): Promise<T> {
  inUse.set(session, (inUse.get(session) ?? 0) + 1)
  try {
    return await work()
  } finally {
    const left = inUse.get(session)! - 1
    inUse.set(session, left)
    if (left === 0 && session.stranded.length > 0) session.orphan()
  }
}

/** The client's flight session for `ttl`: reused while it lives and holds no stranded key. */
async function sharedSession(client: Namespace, ttl: number): Promise<Session> {
  const byTtl = sessionsOf(client)
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
    if (session && !inUse.get(session)) session.orphan()
    if (byTtl.get(ttl) === pending) byTtl.delete(ttl)
  }
}
