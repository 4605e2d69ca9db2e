import type { IKeyValue, IWatchResponse, Watcher } from 'etcd3'
import { closedSignal } from '../core/client-closed.js'
import { WatchLostError } from '../errors.js'
import type { KeyValue, Keyspace } from '../core/kv.js'
import { perClient } from '../core/per-client.js'
import { startTimer, type Timer } from '../timers.js'

/**
 * One watch of the deletes under a prefix, shared by every waiter of this process on that prefix
 * (all waiters of one lock, say). A watch per waiter costs two stream messages (create, cancel)
 * and etcd3 attaches a client's watches one at a time, so a burst of 100 waiters queued 200
 * attaches behind each other; here the first waiter opens the feed and the rest join it.
 *
 * The watch starts "from now", so etcd puts it in its synced group (events as they commit, not on
 * the 100 ms catch-up tick; see lib/wait/wait.ts `waitGone`). A subscriber knows the prefix as of some
 * revision (`seenAt`: the read that told it whom to wait for) and must hear of every delete after
 * it. The feed keeps a log of recent deletes, so one that committed after the subscriber's read
 * but reached us before the subscriber did is replayed; when the subscriber's read is older than
 * what the feed covers (it started later, or the log was trimmed), the feed reads the whole
 * prefix once (one Range for every such subscriber) and hands it over (`resync`).
 */

/** Someone waiting on deletes under the prefix. */
export interface FeedSubscriber {
  /** The revision as of which the subscriber knows the prefix: it hears of deletes after it. */
  readonly seenAt: bigint
  /** A key under the prefix was deleted at `revision` (> seenAt; in revision order). */
  deleted(key: string, revision: bigint): void
  /** Every key under the prefix at `revision`: start over from this view. */
  resync(kvs: KeyValue[], revision: bigint): void
  /** The feed ended (watch lost, client closed, read failed): the wait cannot go on. */
  failed(error: unknown): void
}

/** Deletes kept for subscribers that arrive after them (their read was older than the event). */
const LOG_MAX = 4096
/** How long an unused feed stays open: a hot lock's waiters come and go between handoffs. */
const LINGER_MS = 500

interface Entry {
  sub: FeedSubscriber
  /** Hears events after this revision (moves to the resync's revision). */
  from: bigint
  state: 'pending' | 'resync' | 'live'
}

class DeleteFeed {
  private readonly watcher: Watcher
  private readonly subs = new Set<Entry>()
  /** Deletes after {@link covered}, in order. */
  private readonly log: { key: string; revision: bigint }[] = []
  /** Every delete after this revision is in the log (undefined until the watch is created). */
  private covered?: bigint
  /** Subscribers waiting for the next whole-prefix read. */
  private resyncBatch: Entry[] = []
  private resyncScheduled = false
  private linger?: Timer
  private closed = false
  private readonly onClientClosed = () => this.fail(closedSignal(this.ks.client).reason)

  constructor(
    private readonly ks: Keyspace,
    private readonly prefix: string,
    private readonly onClose: () => void,
  ) {
    // `only('delete')`: etcd's NOPUT filter (etcd3's deprecated `ignore` does the opposite of its name).
    this.watcher = ks.client.watch().prefix(prefix).only('delete').watcher()
    // Only the first answer: on a reconnect etcd3 resumes after the last revision it saw.
    this.watcher.once('connected', (res: IWatchResponse) => this.created(BigInt(res.header.revision)))
    this.watcher.on('delete', (raw: IKeyValue) => this.onDelete(raw.key.toString(), BigInt(raw.mod_revision)))
    // Both only for a watcher etcd3 has dropped already: cancelling it would crash (lib/wait/wait.ts `watching`).
    this.watcher.on('error', (err: Error) =>
      this.fail(new WatchLostError(`watch on ${JSON.stringify(prefix)} ended: ${err.message}`, { cause: err }), true),
    )
    this.watcher.on('end', () => this.fail(new WatchLostError(`watch on ${JSON.stringify(prefix)} ended before the awaited event`), true))
    closedSignal(ks.client).addEventListener('abort', this.onClientClosed, { once: true })
  }

  /** Starts delivering to `sub`; returns the function that stops it. */
  subscribe(sub: FeedSubscriber): () => void {
    this.linger?.cancel()
    this.linger = undefined
    const entry: Entry = { sub, from: sub.seenAt, state: 'pending' }
    this.subs.add(entry)
    // Not synchronously: the subscriber may settle on the replay before it has its handle.
    if (this.covered !== undefined) queueMicrotask(() => this.join(entry))
    return () => this.unsubscribe(entry)
  }

  private unsubscribe(entry: Entry) {
    if (!this.subs.delete(entry) || this.subs.size > 0 || this.closed) return
    this.linger = startTimer(LINGER_MS, () => this.subs.size === 0 && this.close())
  }

  private created(revision: bigint) {
    this.covered = revision
    for (const entry of this.subs) if (entry.state === 'pending') this.join(entry)
  }

  /** Replays the log to a new subscriber, or queues it for a whole-prefix read if the log cannot. */
  private join(entry: Entry) {
    if (!this.subs.has(entry) || entry.state !== 'pending') return
    if (entry.from < this.covered!) return this.queueResync(entry)
    entry.state = 'live'
    for (const e of this.log) {
      if (!this.subs.has(entry)) return
      if (e.revision > entry.from) entry.sub.deleted(e.key, e.revision)
    }
  }

  private onDelete(key: string, revision: bigint) {
    this.log.push({ key, revision })
    if (this.log.length > LOG_MAX) this.covered = this.log.shift()!.revision
    for (const entry of [...this.subs]) {
      if (entry.state === 'live' && revision > entry.from && this.subs.has(entry)) entry.sub.deleted(key, revision)
    }
  }

  private queueResync(entry: Entry) {
    entry.state = 'resync'
    this.resyncBatch.push(entry)
    if (this.resyncScheduled) return
    this.resyncScheduled = true
    // Gather the subscribers that arrive in the same turn (a burst of waiters) into one read.
    setImmediate(() => this.resync())
  }

  private resync() {
    this.resyncScheduled = false
    const batch = this.resyncBatch.filter((e) => this.subs.has(e))
    this.resyncBatch = []
    if (batch.length === 0 || this.closed) return
    // With values, not keys only: etcd 3.7 answers a keys-only range from its in-memory index,
    // which has no leases (every key reads as lease 0), and subscribers check leases (a key
    // without one under a lock's prefix is foreign). Contenders' values are empty or small.
    this.ks.range(this.prefix, { prefix: true }).then(
      (now) => {
        for (const entry of batch) {
          if (!this.subs.has(entry) || this.closed) continue
          entry.from = now.revision
          entry.sub.resync(now.kvs, now.revision)
          entry.state = 'pending'
          // The read came after the watch was created, so the log covers it unless trimmed since.
          this.join(entry)
        }
      },
      (error: unknown) => {
        for (const entry of batch) if (this.subs.has(entry)) entry.sub.failed(error)
      },
    )
  }

  /** Ends every subscription with `error` and closes the watch (`dropped`: etcd3 already did). */
  private fail(error: unknown, dropped = false) {
    if (this.closed) return
    const subs = [...this.subs]
    this.close(dropped)
    for (const entry of subs) entry.sub.failed(error)
  }

  private close(dropped = false) {
    if (this.closed) return
    this.closed = true
    this.linger?.cancel()
    this.subs.clear()
    this.log.length = 0
    closedSignal(this.ks.client).removeEventListener('abort', this.onClientClosed)
    this.watcher.removeAllListeners()
    this.watcher.on('error', () => {})
    if (!dropped) this.watcher.cancel().catch(() => {})
    this.onClose()
  }
}

/** The open delete feeds of a client, by prefix. */
const feedsOf = perClient((): Map<string, DeleteFeed> => new Map())

/**
 * Subscribes `sub` to the deletes under `prefix` on `ks`'s client, opening the shared watch if
 * none is open; returns the function that ends the subscription.
 */
export function onDeletes(ks: Keyspace, prefix: string, sub: FeedSubscriber): () => void {
  closedSignal(ks.client).throwIfAborted()
  const byPrefix = feedsOf(ks.client)
  let feed = byPrefix.get(prefix)
  if (!feed) {
    const map = byPrefix
    const created: DeleteFeed = new DeleteFeed(ks, prefix, () => {
      if (map.get(prefix) === created) map.delete(prefix)
    })
    feed = created
    map.set(prefix, feed)
  }
  return feed.subscribe(sub)
}
