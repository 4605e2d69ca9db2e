import type { IKeyValue, IWatchResponse, Namespace, Watcher } from 'etcd3'
import { WatchLostError } from './errors.js'
import { toKeyValue, type KeyValue, type Keyspace } from './kv.js'

/**
 * Waiting on etcd: watches that end in exactly one outcome (the event, the signal's reason, or
 * a typed error) and never outlive the wait. Go's recipes return `(nil, nil)` when a watch
 * closes early and then report false success; here a lost watch is a {@link WatchLostError}.
 */

export type EventType = 'put' | 'delete'

export interface WatchTarget {
  key: string
  prefix?: boolean
}

/** The first event at or after `startRevision` on `target` that `accept` takes. */
export function waitFor(
  client: Namespace,
  target: WatchTarget,
  startRevision: bigint,
  accept: (type: EventType, kv: KeyValue) => boolean,
  signal?: AbortSignal,
): Promise<{ type: EventType; kv: KeyValue }> {
  signal?.throwIfAborted()
  const builder = client.watch().startRevision(String(startRevision))
  if (target.prefix) builder.prefix(target.key)
  else builder.key(target.key)

  return new Promise((resolve, reject) => {
    // watcher() attaches synchronously, so no event can slip past before the listeners exist.
    const watcher: Watcher = builder.watcher()
    const finish = (settle: () => void) => {
      signal?.removeEventListener('abort', onAbort)
      watcher.removeAllListeners()
      watcher.on('error', () => {})
      watcher.cancel().catch(() => {})
      settle()
    }
    const onEvent = (type: EventType) => (raw: IKeyValue) => {
      // The watcher already took the namespace off the key.
      const kv = toKeyValue(raw, raw.key.toString())
      if (accept(type, kv)) finish(() => resolve({ type, kv }))
    }
    const onAbort = () => finish(() => reject(signal!.reason))
    watcher.on('put', onEvent('put'))
    watcher.on('delete', onEvent('delete'))
    watcher.on('error', (err: Error) =>
      finish(() => reject(new WatchLostError(`watch on ${JSON.stringify(target.key)} ended: ${err.message}`, { cause: err }))),
    )
    watcher.on('end', () => finish(() => reject(new WatchLostError(`watch on ${JSON.stringify(target.key)} ended before the awaited event`))))
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** Resolves when `key` is deleted at or after `revision` (Go's `waitDelete`). */
export async function waitDelete(client: Namespace, key: string, revision: bigint, signal?: AbortSignal): Promise<void> {
  await waitFor(client, { key }, revision, (type) => type === 'delete', signal)
}

/**
 * Resolves when `target` (a key as some read saw it at revision `seenAt`) is gone: deleted, or
 * deleted and created again by its owner (a new create revision).
 *
 * etcd puts a watch whose start revision is at or below its current revision in an "unsynced"
 * group that a background loop catches up only every 100 ms, so Go's `waitDelete` (which
 * watches from the read's revision) costs 0–100 ms per handoff whatever the network. This watch
 * starts at "now" and is synced at once; the revisions between our read and the watch's start
 * are covered by its created response: if anything was written since `seenAt`, one Range tells
 * whether the key already went.
 */
export function waitGone(ks: Keyspace, target: { key: string; createRevision: bigint }, seenAt: bigint, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  const watcher: Watcher = ks.client.watch().key(target.key).watcher()
  return new Promise<void>((resolve, reject) => {
    let done = false
    const finish = (settle: () => void) => {
      if (done) return
      done = true
      signal?.removeEventListener('abort', onAbort)
      watcher.removeAllListeners()
      watcher.on('error', () => {})
      watcher.cancel().catch(() => {})
      settle()
    }
    const onAbort = () => finish(() => reject(signal!.reason))
    // Also on a reconnect: etcd3 then resumes the watch after the last revision it saw.
    watcher.on('connected', (res: IWatchResponse) => {
      if (BigInt(res.header.revision) <= seenAt) return
      ks.range(target.key).then(
        (now) => {
          if (now.kvs.length === 0 || now.kvs[0].createRevision !== target.createRevision) finish(resolve)
        },
        (err) => finish(() => reject(err)),
      )
    })
    watcher.on('delete', () => finish(resolve))
    watcher.on('error', (err: Error) =>
      finish(() => reject(new WatchLostError(`watch on ${JSON.stringify(target.key)} ended: ${err.message}`, { cause: err }))),
    )
    watcher.on('end', () => finish(() => reject(new WatchLostError(`watch on ${JSON.stringify(target.key)} ended before the awaited delete`))))
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Resolves once no key under `prefix` has a create revision <= `maxCreateRevision`: each round
 * waits only for the youngest such key (the immediate predecessor), so a release wakes one waiter.
 * Returns the revision at which the last predecessor was seen gone.
 */
export async function waitDeletes(ks: Keyspace, prefix: string, maxCreateRevision: bigint, signal?: AbortSignal): Promise<bigint> {
  for (;;) {
    signal?.throwIfAborted()
    const older = await ks.range(prefix, { prefix: true, sort: ['Create', 'Descend'], limit: 1, maxCreateRevision })
    if (older.kvs.length === 0) return older.revision
    await waitGone(ks, older.kvs[0], older.revision, signal)
  }
}

/** Our own key in a queue of contenders, and how to report its loss. */
export interface OwnKey {
  ks: Keyspace
  key: string
  createRevision: bigint
  /** A revision at which the key was known to exist (e.g. the Txn that created or read it). */
  seenAt: bigint
  /** The session's signal: its lease being lost means the key is lost too. */
  session: AbortSignal
  /** The error to reject with when the key or the session is lost. */
  lost: () => Error
}

/**
 * Runs `wait` (a wait on other keys) while watching our own key: if the key goes (lease expired
 * or revoked, or deleted) or the session ends, rejects with `own.lost()` at once, not only after
 * the others are done (etcd #19597). The caller's `signal` rejects with its reason. Every watch
 * ends with the call.
 */
export async function whileOwnKeyLives<T>(own: OwnKey, signal: AbortSignal | undefined, wait: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController()
  const combined = AbortSignal.any([stop.signal, own.session, ...(signal ? [signal] : [])])
  const ownKeyGone = new Promise<never>((_, reject) => {
    // Aborted with the call: then the other branch has settled the race.
    waitGone(own.ks, own, own.seenAt, combined).then(() => reject(own.lost()), () => {})
  })
  ownKeyGone.catch(() => {}) // it may lose the race, or `wait` may throw before the race
  try {
    return await Promise.race([Promise.resolve().then(() => wait(combined)), ownKeyGone])
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    if (own.session.aborted) throw own.lost()
    throw err
  } finally {
    stop.abort()
  }
}
