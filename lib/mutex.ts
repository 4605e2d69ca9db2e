import type { ComparatorBuilder, ICompare } from 'etcd3'
import { checkOptions, checkSession } from './check.js'
import { InvalidArgumentError, LockedError, LockReleasedError, SessionExpiredError } from './errors.js'
import { IDEMPOTENT, checkName, keyspace, type KeyValue, type Keyspace } from './kv.js'
import type { Session } from './session.js'
import { waitGone, whileOwnKeyLives } from './wait.js'

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

/**
 * A distributed lock, key-compatible with Go's `concurrency.Mutex` and `etcdctl lock`: each
 * contender puts `<name>/<leaseHex>` with its session's lease, and the key with the lowest
 * create revision holds the lock. Waiters queue FIFO, each watching only its predecessor.
 * Ownership is per session: two Mutex objects on one session and name share one key (as Go).
 */
export class Mutex {
  private readonly ks: Keyspace
  private readonly prefix: string
  private myKey = ''
  private myRev = -1n
  private heldAt = -1n
  private busy = false

  constructor(
    readonly session: Session,
    /** The lock name; keys live under `<name>/`. */
    readonly name: string,
  ) {
    checkSession(session, 'Mutex')
    checkName(name, 'Mutex name')
    this.ks = keyspace(session.client)
    this.prefix = `${name}/`
  }

  /** This contender's key, `<name>/<leaseHex>` ('' when not holding or waiting). */
  get key(): string {
    return this.myKey
  }

  /**
   * The fencing token of the current hold: the lock key's create revision, strictly increasing
   * across successive holders of this lock. Throws {@link LockReleasedError} when not held.
   */
  get fence(): bigint {
    this.assertHeld('fence')
    return this.myRev
  }

  /** The store revision when the lock was granted (etcdctl's `ETCD_LOCK_REV`; Go's `Header().Revision`). */
  get revision(): bigint {
    this.assertHeld('revision')
    return this.heldAt
  }

  /** True between a successful lock/tryLock and unlock (as far as this process knows). */
  get held(): boolean {
    return this.heldAt > 0n
  }

  /** Blocks until the lock is held. FIFO by create revision; one round trip when uncontended. */
  async lock(options?: LockOptions): Promise<void> {
    const { signal, onWaiting } = checkOptions(options, 'Mutex.lock')
    this.begin('lock')
    try {
      signal?.throwIfAborted()
      // A replayed acquire finds our own key and keeps its place: safe to resend for lock().
      const attempt = await this.tryAcquire(IDEMPOTENT)
      if (attempt.held) return this.granted(attempt.revision)
      onWaiting?.()
      try {
        this.granted(await this.waitTurn(attempt.predecessor, attempt.revision, signal))
      } catch (err) {
        await this.abandon(err)
        throw err
      }
    } finally {
      this.busy = false
    }
  }

  /** Takes the lock if it is free, else throws {@link LockedError} and leaves no key behind. */
  async tryLock(): Promise<void> {
    this.begin('tryLock')
    try {
      const attempt = await this.tryAcquire()
      if (attempt.held) return this.granted(attempt.revision)
      // Delete only a key this call created: an existing one is this session's place in the
      // queue through another Mutex object (Go deletes it anyway).
      if (attempt.created) await this.ks.txn([this.ks.compare(this.myKey, 'Create', '==', this.myRev)], [this.ks.delete(this.myKey)], [], IDEMPOTENT)
      this.reset()
      throw new LockedError(`lock ${JSON.stringify(this.name)} is held by another session`)
    } finally {
      this.busy = false
    }
  }

  /** Releases the lock; deletes the key only if it is still this hold's (fenced by create revision). */
  async unlock(): Promise<void> {
    this.assertHeld('unlock')
    const key = this.myKey
    const rev = this.myRev
    await this.ks.txn([this.ks.compare(key, 'Create', '==', rev)], [this.ks.delete(key)], [], IDEMPOTENT)
    this.reset()
  }

  /** A compare that holds while this hold is current: guard writes with it (Go's `IsOwner`). */
  isOwner(): ICompare {
    return this.ks.compare(this.myKey || '\0', 'Create', '==', this.myRev)
  }

  /**
   * An etcd3 transaction builder already guarded by ownership:
   * `await m.fenced().then(client.put('k').value('v')).commit()` writes only while held.
   */
  fenced(): ComparatorBuilder {
    this.assertHeld('fenced')
    return this.session.client.if(this.myKey, 'Create', '==', this.myRev.toString())
  }

  /**
   * One Txn: create my key if absent, and in the same round trip read the current owner and
   * the two youngest keys (ours and, when we must wait, the predecessor to watch).
   */
  private async tryAcquire(txnOptions: { idempotent?: boolean } = {}) {
    this.session.signal.throwIfAborted()
    const key = `${this.prefix}${this.session.leaseHex}`
    const owner = this.ks.get(this.prefix, { prefix: true, sort: ['Create', 'Ascend'], limit: 1 })
    const youngest = this.ks.get(this.prefix, { prefix: true, sort: ['Create', 'Descend'], limit: 2 })
    const res = await this.ks.txn(
      [this.ks.compare(key, 'Create', '==', 0)],
      [this.ks.put(key, '', this.session.leaseId), owner, youngest],
      [this.ks.get(key), owner, youngest],
      txnOptions,
    )
    this.myKey = key
    this.myRev = res.succeeded ? res.revision : res.results[0].range!.kvs[0].createRevision
    const first = res.results[1].range!.kvs[0]
    // A re-lock of an old key may have younger keys behind it: then the Range in waitTurn finds the predecessor.
    const predecessor = res.results[2].range!.kvs.find((kv) => kv.createRevision < this.myRev)
    return { held: !first || first.createRevision === this.myRev, created: res.succeeded, revision: res.revision, predecessor }
  }

  /**
   * Waits until every older contender is gone, watching only the immediate predecessor each
   * round. Ends early with {@link SessionExpiredError} when our own key vanishes (lease expired
   * or revoked) instead of only after the predecessors leave (etcd issue #19597). Returns the
   * revision the lock was granted at. `seenAt` is the acquire Txn's revision.
   */
  private async waitTurn(predecessor: KeyValue | undefined, seenAt: bigint, signal?: AbortSignal): Promise<bigint> {
    const own = { ks: this.ks, key: this.myKey, createRevision: this.myRev, seenAt, session: this.session.signal, lost: () => this.expired() }
    return whileOwnKeyLives(own, signal, async (wait) => {
      let gone = predecessor ? waitGone(this.ks, predecessor, seenAt, wait) : Promise.resolve()
      for (;;) {
        await gone
        // One round trip: is anyone older still there, and is my key still mine?
        const res = await this.ks.txn([], [
          this.ks.get(this.prefix, { prefix: true, sort: ['Create', 'Descend'], limit: 1, maxCreateRevision: this.myRev - 1n }),
          this.ks.get(this.myKey),
        ])
        const mine = res.results[1].range!.kvs[0]
        if (!mine || mine.createRevision !== this.myRev) throw this.expired()
        const older = res.results[0].range!.kvs[0]
        if (!older) return res.revision
        gone = waitGone(this.ks, older, res.revision, wait)
      }
    })
  }

  /** After a failed wait: remove our waiter key (if it is still ours) and forget it. */
  private async abandon(cause: unknown) {
    if (!(cause instanceof SessionExpiredError)) {
      await this.ks.txn([this.ks.compare(this.myKey, 'Create', '==', this.myRev)], [this.ks.delete(this.myKey)], [], IDEMPOTENT).catch(() => {})
    }
    this.reset()
  }

  private expired() {
    return new SessionExpiredError(`lock ${JSON.stringify(this.name)}: session ${this.session.leaseHex} expired while waiting; create a new Session and lock again`)
  }

  private granted(revision: bigint) {
    this.heldAt = revision
  }

  private begin(op: string) {
    if (this.busy) throw new InvalidArgumentError(`Mutex ${JSON.stringify(this.name)}: ${op}() called while another lock call on the same object is running; use one Mutex per concurrent caller`)
    if (this.held) throw new InvalidArgumentError(`Mutex ${JSON.stringify(this.name)}: ${op}() on a lock this object already holds; unlock() first`)
    this.busy = true
  }

  private reset() {
    this.myKey = ''
    this.myRev = -1n
    this.heldAt = -1n
  }

  private assertHeld(what: string) {
    if (!this.held) throw new LockReleasedError(`Mutex ${JSON.stringify(this.name)}: ${what} needs the lock held; call lock() first`)
  }
}
