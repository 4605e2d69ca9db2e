import type { IKeyValue, IWatchResponse, Namespace, Watcher } from 'etcd3'
import { closedSignal } from '../core/client-closed.js'
import { WatchLostError } from '../errors.js'
import { onDeletes } from './delete-feed.js'
import { toKeyValue, type KeyValue, type Keyspace } from '../core/kv.js'
import { sleep } from '../timers.js'

/**
 * Every way the primitives wait on etcd (Go keeps them in `concurrency/key.go`): watches that
 * end in exactly one outcome (the event, the signal's reason, or a typed error) and never
 * outlive the wait. Go's recipes return `(nil, nil)` when a watch closes early and then report
 * false success; here a lost watch is a {@link WatchLostError}, and a closed client ends every
 * wait at once (`reason: 'client-closed'`) instead of leaving it pending forever.
 */

/** Options of a wait. */
export interface WaitOptions {
  /** Aborting it stops the wait, removes what the wait created and rejects with its reason. */
  signal?: AbortSignal
}

/** Options of a blocking lock call. */
export interface LockOptions extends WaitOptions {
  /** Called once if the lock is not free at the first attempt, before queueing (for logs and metrics). */
  onWaiting?: () => void
}

export type EventType = 'put' | 'delete'

export interface WatchTarget {
  key: string
  prefix?: boolean
}

/** `dropped`: the watcher emitted 'error' or 'end', so it must not be cancelled (see watching). */
type Settle<T> = (outcome: { value: T } | { error: unknown }, dropped?: boolean) => void

/**
 * Settles a promise around an etcd3 watcher exactly once: when `listen`'s handlers call
 * `settle`, when the watch ends, on the caller's abort, or when the client is closed. The
 * watcher is cancelled in every case.
 */
function watching<T>(
  client: Namespace,
  watcher: Watcher,
  target: string,
  signal: AbortSignal | undefined,
  listen: (settle: Settle<T>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const closed = closedSignal(client)
    let done = false
    const settle: Settle<T> = (outcome, dropped = false) => {
      if (done) return
      done = true
      signal?.removeEventListener('abort', onAbort)
      closed.removeEventListener('abort', onClosed)
      watcher.removeAllListeners()
      watcher.on('error', () => {})
      if (!dropped) watcher.cancel().catch(() => {})
      if ('value' in outcome) resolve(outcome.value)
      else reject(outcome.error)
    }
    const onAbort = () => settle({ error: signal!.reason })
    const onClosed = () => settle({ error: closed.reason })
    // etcd3 emits 'error' and 'end' only for a watcher it has already dropped (etcd cancelled
    // it, e.g. its start revision was compacted). Cancelling it then sends a cancel for a watch
    // id etcd3 no longer knows; while another watch keeps the client's stream open, etcd answers
    // it and etcd3 throws "Failed to find watcher for IWatchResponse" from the stream's data
    // handler: an uncaught exception that ends the process.
    watcher.on('error', (err: Error) =>
      settle({ error: new WatchLostError(`watch on ${JSON.stringify(target)} ended: ${err.message}`, { cause: err }) }, true),
    )
    watcher.on('end', () =>
      settle({ error: new WatchLostError(`watch on ${JSON.stringify(target)} ended before the awaited event`) }, true),
    )
    listen(settle)
    if (signal?.aborted) return onAbort()
    if (closed.aborted) return onClosed()
    signal?.addEventListener('abort', onAbort, { once: true })
    closed.addEventListener('abort', onClosed, { once: true })
  })
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
  // watcher() attaches synchronously, so no event can slip past before the listeners exist.
  const watcher = builder.watcher()
  return watching(client, watcher, target.key, signal, (settle) => {
    const onEvent = (type: EventType) => (raw: IKeyValue) => {
      // The watcher already took the namespace off the key.
      const kv = toKeyValue(raw, raw.key.toString())
      if (accept(type, kv)) settle({ value: { type, kv } })
    }
    watcher.on('put', onEvent('put'))
    watcher.on('delete', onEvent('delete'))
  })
}

/** Resolves when `key` is deleted at or after `revision` (Go's `waitDelete`). */
export async function waitDelete(client: Namespace, key: string, revision: bigint, signal?: AbortSignal): Promise<void> {
  await waitFor(client, { key }, revision, (type) => type === 'delete', signal)
}

/**
 * Resolves when `target` (a key under `prefix` as some read saw it at revision `seenAt`) is
 * gone: deleted, or deleted and created again (a new create revision). Resolves with a revision
 * at which the key was gone.
 *
 * It listens on the shared delete feed of `prefix` (lib/wait/delete-feed.ts) rather than opening a
 * watch of its own: a watch per waiter costs two stream messages, and etcd3 attaches a client's
 * watches one at a time, so a burst of waiters would each wait for the others' attaches. The
 * feed's watch starts at "now" and is synced at once (Go's `waitDelete` watches from the read's
 * revision, lands in etcd's "unsynced" group and pays 0–100 ms per handoff); deletes between
 * `seenAt` and the feed's start are replayed from its log or found by one whole-prefix read.
 */
export function waitGone(
  ks: Keyspace,
  prefix: string,
  target: { key: string; createRevision: bigint },
  seenAt: bigint,
  signal?: AbortSignal,
): Promise<bigint> {
  signal?.throwIfAborted()
  return new Promise<bigint>((resolve, reject) => {
    let done = false
    let unsubscribe = () => {}
    const finish = (settle: () => void) => {
      if (done) return
      done = true
      unsubscribe()
      signal?.removeEventListener('abort', onAbort)
      settle()
    }
    const onAbort = () => finish(() => reject(signal!.reason))
    unsubscribe = onDeletes(ks, prefix, {
      seenAt,
      deleted: (key, revision) => {
        if (key === target.key) finish(() => resolve(revision))
      },
      resync: (kvs, revision) => {
        if (!kvs.some((kv) => kv.key === target.key && kv.createRevision === target.createRevision)) finish(() => resolve(revision))
      },
      failed: (error) => finish(() => reject(error)),
    })
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Resolves when a key under `prefix` that a read at revision `seenAt` returned (`seen`) is
 * deleted or written again, or when any key under `prefix` is deleted: the wait of a
 * semaphore's head for a permit to come free. Keys created meanwhile do not wake it. Like
 * {@link waitGone}, the watch starts at "now" (synced at once) and one Range covers the
 * revisions between the read and the watch. Resolves with the deleted key when a delete event
 * woke it; other wake-ups may be spurious, the caller reads again.
 */
export function waitRangeChange(
  ks: Keyspace,
  prefix: string,
  seenAt: bigint,
  seen: readonly KeyValue[],
  signal?: AbortSignal,
): Promise<RangeChange> {
  signal?.throwIfAborted()
  const known = new Map(seen.map((kv) => [kv.key, kv.modRevision]))
  const changed = (now: readonly KeyValue[]) => {
    const after = new Map(now.map((kv) => [kv.key, kv.modRevision]))
    return [...known].some(([key, mod]) => after.get(key) !== mod)
  }
  const watcher: Watcher = ks.client.watch().prefix(prefix).watcher()
  // Whether revisions between `seenAt` and the watch's start were written: until the Range over
  // them says nothing seen changed, a delete event is not the only change since `seen`, so it
  // wakes the caller to read again instead of naming the deleted key. (Reported as "this key
  // went, at this revision", it let the caller keep a key already deleted in that gap and wait
  // on that stale view for ever: slots 0-2 released in a row, one delete before the watch
  // started, the head kept seeing 3 of 3 in use.)
  let unread = false
  return watching<RangeChange>(ks.client, watcher, prefix, signal, (settle) => {
    watcher.on('connected', (res: IWatchResponse) => {
      if (BigInt(res.header.revision) <= seenAt) return
      unread = true
      ks.range(prefix, { prefix: true }).then(
        (now) => {
          if (changed(now.kvs)) settle({ value: {} })
          else unread = false
        },
        (error) => settle({ error }),
      )
    })
    watcher.on('delete', (raw: IKeyValue) =>
      settle({ value: unread ? {} : { deleted: raw.key.toString(), revision: BigInt(raw.mod_revision) } }),
    )
    watcher.on('put', (raw: IKeyValue) => {
      if (known.has(raw.key.toString())) settle({ value: {} })
    })
  })
}

/** What woke {@link waitRangeChange}: a key deleted at `revision` (the first one), or some other change. */
export interface RangeChange {
  deleted?: string
  revision?: bigint
}

/**
 * Like {@link waitGone}, on a watch of the one key (our own key, which no other waiter of this
 * process follows): the watch starts at "now" and one Range covers the revisions between
 * `seenAt` and its start, if anything was written meanwhile.
 */
function keyGone(ks: Keyspace, target: { key: string; createRevision: bigint }, seenAt: bigint, signal?: AbortSignal): Promise<bigint> {
  signal?.throwIfAborted()
  const watcher: Watcher = ks.client.watch().key(target.key).watcher()
  return watching<bigint>(ks.client, watcher, target.key, signal, (settle) => {
    // Also on a reconnect: etcd3 then resumes the watch after the last revision it saw.
    watcher.on('connected', (res: IWatchResponse) => {
      if (BigInt(res.header.revision) <= seenAt) return
      ks.range(target.key).then(
        (now) => {
          if (now.kvs.length === 0 || now.kvs[0].createRevision !== target.createRevision) settle({ value: now.revision })
        },
        (error) => settle({ error }),
      )
    })
    watcher.on('delete', (raw: IKeyValue) => settle({ value: BigInt(raw.mod_revision) }))
  })
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
  /** The error to reject with when the key or the session is lost (`cause`: the session's reason, if it ended). */
  lost: (cause?: unknown) => Error
}

/** Pause before the own-key watch is set up again after a failed read (etcd briefly unreachable). */
const OWN_KEY_RETRY_MS = 250

/**
 * Resolves when our own key is gone. A failed read (etcd briefly unreachable) does not turn the
 * early-loss detection off: the watch is set up again from a fresh read until `signal` aborts.
 */
async function ownKeyGone(own: OwnKey, signal: AbortSignal): Promise<void> {
  let seenAt = own.seenAt
  for (;;) {
    try {
      await keyGone(own.ks, own, seenAt, signal)
      return
    } catch (err) {
      if (signal.aborted || (err instanceof WatchLostError && err.reason === 'client-closed')) throw err
    }
    await sleep(OWN_KEY_RETRY_MS)
    try {
      const now = await own.ks.range(own.key)
      if (now.kvs.length === 0 || now.kvs[0].createRevision !== own.createRevision) return
      seenAt = now.revision
    } catch {
      // still unreachable: try again
    }
  }
}

/**
 * Runs `wait` (a wait on other keys) while watching our own key: if the key goes (lease expired
 * or revoked, or deleted) or the session ends, rejects with `own.lost()` at once, not only after
 * the others are done (etcd #19597). The caller's `signal` rejects with its reason. Every watch
 * ends with the call.
 */
export async function whileOwnKeyLives<T>(
  own: OwnKey,
  signal: AbortSignal | undefined,
  wait: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const stop = new AbortController()
  const combined = AbortSignal.any([stop.signal, own.session, ...(signal ? [signal] : [])])
  const gone = new Promise<never>((_, reject) => {
    // Aborted with the call: then the other branch has settled the race.
    ownKeyGone(own, combined).then(
      () => reject(own.lost()),
      (err) => {
        if (err instanceof WatchLostError && err.reason === 'client-closed') reject(err)
      },
    )
  })
  gone.catch(() => {}) // it may lose the race, or `wait` may throw before the race
  try {
    return await Promise.race([Promise.resolve().then(() => wait(combined)), gone])
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    const closed = closedSignal(own.ks.client)
    if (closed.aborted) throw closed.reason
    if (own.session.aborted) throw own.lost(own.session.reason)
    throw err
  } finally {
    stop.abort()
  }
}

/** One change of a watched key: its new value (none when deleted) and, for a delete, the value it had. */
export interface KeyChange {
  kv?: KeyValue
  prev?: KeyValue
}

/** The watch started after the key had already changed: replay from history instead. */
const CHANGED_MEANWHILE = Symbol('changed before the watch started')

/**
 * Resolves with the first change of `seen.key` after revision `seenAt` (a revision at which it
 * was `seen`) that `decide` maps to a value; undefined means keep waiting. Like {@link waitGone}
 * the watch starts "from now", so it is synced at once and a change reaches us as soon as etcd
 * applies it. If the key changed between `seenAt` and the watch's start, its changes since
 * `seenAt` are replayed in order from etcd's history instead (a watch from `seenAt + 1`: slower
 * to start, but nothing is missed — not even a value that was put and deleted in between, which
 * a delete's previous value shows).
 */
export async function waitChange<T>(
  ks: Keyspace,
  seen: KeyValue,
  seenAt: bigint,
  decide: (change: KeyChange) => T | undefined,
  signal?: AbortSignal,
): Promise<T> {
  try {
    return await watchChanges(ks, seen.key, { seen, seenAt }, decide, signal)
  } catch (err) {
    if (err !== CHANGED_MEANWHILE) throw err
    return watchChanges(ks, seen.key, { from: seenAt + 1n }, decide, signal)
  }
}

/**
 * Feeds every change of `key` to `decide` until it returns a value. Either from now, checking
 * once (one Range) that nothing changed since `seenAt` — events that arrive meanwhile are held
 * back until that is known — or from revision `from` (history, in order).
 */
function watchChanges<T>(
  ks: Keyspace,
  key: string,
  start: { seen: KeyValue; seenAt: bigint } | { from: bigint },
  decide: (change: KeyChange) => T | undefined,
  signal?: AbortSignal,
): Promise<T> {
  signal?.throwIfAborted()
  const builder = ks.client.watch().key(key).withPreviousKV()
  if ('from' in start) builder.startRevision(String(start.from))
  const watcher: Watcher = builder.watcher()
  return watching<T>(ks.client, watcher, key, signal, (settle) => {
    // Changes held back while the gap since `seenAt` is being checked (undefined: pass them on).
    let held: KeyChange[] | undefined = 'seen' in start ? [] : undefined
    const offer = (change: KeyChange) => {
      if (held) return void held.push(change)
      try {
        const value = decide(change)
        if (value !== undefined) settle({ value })
      } catch (error) {
        settle({ error }) // never let it escape into etcd3's event emitter
      }
    }
    const release = () => {
      const changes = held ?? []
      held = undefined
      for (const change of changes) offer(change)
    }
    if ('seen' in start) {
      // Only the first answer: on a reconnect etcd3 resumes after the last revision it saw.
      watcher.once('connected', (res: IWatchResponse) => {
        if (BigInt(res.header.revision) <= start.seenAt) return release()
        ks.range(key).then(
          (now) => {
            const unchanged = now.kvs.length > 0 && now.kvs[0].modRevision === start.seen.modRevision
            if (unchanged) release()
            else settle({ error: CHANGED_MEANWHILE })
          },
          (error) => settle({ error }),
        )
      })
    }
    watcher.on('put', (raw: IKeyValue) => offer({ kv: toKeyValue(raw, raw.key.toString()) }))
    watcher.on('delete', (_raw: IKeyValue, prev?: IKeyValue) => offer({ prev: prev && toKeyValue(prev, prev.key.toString()) }))
  })
}

/** `promise`, or a rejection with the signal's reason as soon as it aborts (the promise itself runs on). */
export function untilAborted<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (error) => {
        signal.removeEventListener('abort', onAbort)
        reject(error)
      },
    )
  })
}
