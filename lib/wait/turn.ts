import { closedSignal } from '../core/client-closed.js'
import { onDeletes, type FeedSubscriber } from './delete-feed.js'
import type { KeyValue, Keyspace } from '../core/kv.js'
import type { OwnedKey } from './owned-key.js'

/**
 * Waiting for one's turn in a queue of keys ordered by create revision (Mutex; Go's
 * `waitDeletes`): the turn comes when every key ahead of ours is gone. The keys ahead are read
 * with the enqueue, then followed on the shared delete feed of the prefix (lib/wait/delete-feed.ts),
 * which also carries the delete of our own key (lease expired or revoked: etcd #19597). No key can
 * join the queue ahead of us (create revisions only grow), so when every key ahead that the read
 * returned has been deleted and the read was not cut by its limit, it is our turn — at the
 * revision of that delete, with no read in between. A read cut by its limit is read again (off
 * the critical path: while one known key is still ahead).
 */

/**
 * How many of the youngest keys ahead an enqueue reads (the Mutex's lock Txn, an Election's
 * campaign, an RWMutex's blockers): a waiter that sees every key ahead of it needs no read when
 * its turn comes; one further back reads again once, while {@link REREAD_AT} of the keys it knows
 * are still ahead — several handoffs before its turn, off the critical path. The keys it knows
 * are the youngest ahead, the last of them to go, so by then the older ones are gone and the
 * second read sees the rest of the queue.
 * etcd reads and sorts every key of the prefix for a sorted Range whatever the limit, so the
 * limit costs only the answer's size — which every enqueue pays: 128 made a lock handoff with
 * 200 waiters receive 7x the bytes of one with 10 (bench "scaling"); 16 with the second read
 * at 8 keeps that within 1.15x, and was faster than 128 read again at 1 key left on the
 * contended rows (`bench/run.ts --only lock-contended,scaling`, 2 runs each on a busy machine:
 * 100 x 1 at 0.74-0.77x Go's handoffs/s in the same run vs 0.61-0.65x; 4 processes x 25 at
 * 0.52-0.53x vs 0.40-0.47x; 8 read again at 4 was between).
 */
export const AHEAD_READ_LIMIT = 16
/** A cut view is read again when this many of its keys are still ahead (see {@link AHEAD_READ_LIMIT}). */
export const REREAD_AT = AHEAD_READ_LIMIT / 2

/** What a waiter knows about the keys ahead of it, as of one revision. */
export interface TurnView {
  /** The keys ahead of ours as read (a limited read returns the youngest of them). */
  ahead: KeyValue[]
  /** Whether `ahead` is all of them (false when the read's limit cut it). */
  complete: boolean
  /** The revision of that read. */
  revision: bigint
}

/**
 * One round trip: the youngest keys under `prefix` created before `own` (at most
 * {@link AHEAD_READ_LIMIT}), and whether `own` is still ours. With values when the caller checks
 * the keys' leases: etcd 3.7 answers keys-only reads without them (etcd #22209).
 */
export async function readAhead(
  ks: Keyspace,
  prefix: string,
  own: OwnedKey,
  options: { leases?: boolean } = {},
): Promise<TurnView & { mine: boolean }> {
  const { results, revision } = await ks.reads({
    ahead: ks.get(prefix, {
      prefix: true,
      sort: ['Create', 'Descend'],
      limit: AHEAD_READ_LIMIT,
      maxCreateRevision: own.createRevision - 1n,
      keysOnly: !options.leases,
    }),
    mine: ks.get(own.key, { keysOnly: true }),
  })
  const mine = results.mine.kvs[0]
  return {
    ahead: results.ahead.kvs,
    complete: !results.ahead.more,
    revision,
    mine: mine !== undefined && mine.createRevision === own.createRevision,
  }
}

/** One wait for a turn. */
export interface Turn {
  ks: Keyspace
  /** The prefix whose deletes are followed: every key ahead, and our own key, lie under it. */
  prefix: string
  own: OwnedKey
  /** Whether a key of a whole-prefix read stands ahead of ours. */
  isAhead(kv: KeyValue): boolean
  /** What the enqueue read. */
  view: TurnView
  /** Reads the keys ahead again, and whether our key is still ours. */
  reread(): Promise<TurnView & { mine: boolean }>
  /** Throws if a key ahead can never go (e.g. it has no lease). */
  check(ahead: KeyValue[]): void
  signal?: AbortSignal
  /** The error for a lost own key or session (`cause`: the session's reason, if it ended). */
  lost(cause?: unknown): Error
}

/**
 * Resolves with the revision at which no key is ahead of ours any more. Rejects with `lost()`
 * as soon as our key goes or the session ends, with the signal's reason on abort, and with the
 * client-closed error when the client is closed. Ends its feed subscription in every case.
 */
export function waitTurn(t: Turn): Promise<bigint> {
  return new Promise<bigint>((resolve, reject) => {
    const session = t.own.session.signal
    const closed = closedSignal(t.ks.client)
    let ahead = new Set<string>()
    let complete = false
    let asOf = t.view.revision
    /** Deletes heard while a re-read is on its way (they may postdate its revision). */
    let heardDuring: { key: string; revision: bigint }[] | undefined
    let done = false
    let unsubscribe = () => {}

    const finish = (settle: () => void) => {
      if (done) return
      done = true
      unsubscribe()
      t.signal?.removeEventListener('abort', onAbort)
      session.removeEventListener('abort', onSessionEnd)
      settle()
    }
    const fail = (err: unknown) => finish(() => reject(explain(err)))
    const explain = (err: unknown) => {
      if (t.signal?.aborted) return t.signal.reason
      if (closed.aborted) return closed.reason
      if (session.aborted) return t.lost(session.reason)
      return err
    }
    const onAbort = () => fail(t.signal!.reason)
    const onSessionEnd = () => fail(t.lost(session.reason))

    /** Takes a fresh view; false if it failed the check (then the wait has failed). */
    const adopt = (view: TurnView): boolean => {
      try {
        t.check(view.ahead)
      } catch (err) {
        fail(err)
        return false
      }
      ahead = new Set(view.ahead.map((kv) => kv.key))
      complete = view.complete
      asOf = view.revision
      return true
    }
    /** Our turn if nothing is ahead; a cut view is read again while REREAD_AT of its keys are left. */
    const evaluate = (revision: bigint) => {
      if (done) return
      if (ahead.size === 0 && complete) return finish(() => resolve(revision))
      if (!complete && ahead.size <= REREAD_AT) reread()
    }
    const apply = (key: string, revision: bigint) => {
      if (key === t.own.key) return fail(t.lost())
      if (ahead.delete(key)) evaluate(revision)
    }
    const reread = () => {
      if (heardDuring) return
      heardDuring = []
      t.reread().then((view) => {
        const heard = heardDuring!
        heardDuring = undefined
        if (done) return
        if (!view.mine) return fail(t.lost())
        // A whole-prefix resync may have overtaken it: then that view is the newer one.
        if (view.revision > asOf) {
          if (!adopt(view)) return
          for (const e of heard) if (e.revision > asOf && !done) apply(e.key, e.revision)
        }
        evaluate(asOf)
      }, fail)
    }

    const sub: FeedSubscriber = {
      seenAt: t.view.revision,
      deleted(key, revision) {
        if (done) return
        heardDuring?.push({ key, revision })
        if (revision > asOf) apply(key, revision)
      },
      resync(kvs, revision) {
        if (done || revision <= asOf) return
        const mine = kvs.find((kv) => kv.key === t.own.key)
        if (!mine || mine.createRevision !== t.own.createRevision) return fail(t.lost())
        if (adopt({ ahead: kvs.filter((kv) => t.isAhead(kv)), complete: true, revision })) evaluate(revision)
      },
      failed: fail,
    }

    if (t.signal?.aborted) return reject(t.signal.reason)
    if (closed.aborted) return reject(closed.reason)
    if (session.aborted) return reject(t.lost(session.reason))
    if (!adopt(t.view)) return
    t.signal?.addEventListener('abort', onAbort, { once: true })
    session.addEventListener('abort', onSessionEnd, { once: true })
    try {
      unsubscribe = onDeletes(t.ks, t.prefix, sub)
    } catch (err) {
      return fail(err)
    }
    evaluate(asOf)
  })
}
