import type { ComparatorBuilder } from 'etcd3'
import { checkOptions, checkSession } from '../core/check.js'
import { ForeignKeyError, InvalidStateError, LockedError, LockReleasedError, SessionExpiredError } from '../errors.js'
import { contenders } from '../core/keys.js'
import { IDEMPOTENT, checkName, keyspace, type Compare, type KeyValue, type Keyspace, type RangeResult } from '../core/kv.js'
import { CallGuard, createOnLease, lostWhileWaiting, OwnedKey, ownerCompareOf } from '../wait/owned-key.js'
import { heldSignal } from '../fencing.js'
import type { Session } from '../session/session.js'
import { AHEAD_READ_LIMIT, readAhead, waitTurn, type TurnView } from '../wait/turn.js'
import type { LockOptions } from '../wait/wait.js'
import { startHold, startWait, type HoldProbe } from '../telemetry/coordination.js'

/** What the lock Txn found: our key, whether it holds the lock, and what is ahead of it. */
interface Attempt {
  own: OwnedKey
  held: boolean
  /** Whether this call created the key (else it was this session's already). */
  created: boolean
  revision: bigint
  view: TurnView
}

/**
 * A distributed lock, key-compatible with Go's `concurrency.Mutex` and `etcdctl lock`: each
 * contender puts `<name>/<leaseHex>` with its session's lease, and the key with the lowest
 * create revision holds the lock. Waiters queue FIFO; those of one process share one watch of
 * the deletes under `<name>/` (lib/wait/delete-feed.ts), and a release wakes only the next in line.
 * Ownership is per session: two Mutex objects on one session and name share one key (as Go).
 * Nothing else may be written under `<name>/`: a key there without a lease is refused with an
 * {@link ForeignKeyError} (it would never go, and every later lock would wait behind it).
 */
export class Mutex {
  private readonly ks: Keyspace
  private readonly prefix: string
  private readonly guard: CallGuard
  /** Our key while waiting or holding. */
  private own?: OwnedKey
  private heldAt = -1n
  /** The span and timer of the current hold (undefined when telemetry is off). */
  private hold?: HoldProbe

  constructor(
    readonly session: Session,
    /** The lock name; keys live under `<name>/`. */
    readonly name: string,
  ) {
    checkSession(session, 'Mutex')
    checkName(name, 'Mutex name')
    this.ks = keyspace(session.client)
    this.prefix = contenders.prefix(name)
    this.guard = new CallGuard(
      (op) =>
        new InvalidStateError(
          `Mutex ${JSON.stringify(name)}: ${op}() called while another lock call on the same object is running; use one Mutex per concurrent caller`,
        ),
    )
  }

  /** This contender's key, `<name>/<leaseHex>` ('' when not holding or waiting). */
  get key(): string {
    return this.own?.key ?? ''
  }

  /**
   * The fencing token of the current hold: the lock key's create revision, strictly increasing
   * across successive holders of this lock. Throws {@link LockReleasedError} when not held.
   */
  get fence(): bigint {
    return this.heldKey('fence').createRevision
  }

  /**
   * Aborted when this hold's lease is lost (the session's signal, {@link LeaseLostError} as
   * reason), and already aborted with a {@link LockReleasedError} when not held: read it before
   * each write of the hold.
   */
  get signal(): AbortSignal {
    return heldSignal(() => this.heldKey('signal'))
  }

  /** The store revision when the lock was granted (etcdctl's `ETCD_LOCK_REV`; Go's `Header().Revision`). */
  get revision(): bigint {
    this.heldKey('revision')
    return this.heldAt
  }

  /** True between a successful lock/tryLock and unlock (as far as this process knows). */
  get held(): boolean {
    return this.heldAt > 0n
  }

  /** Blocks until the lock is held. FIFO by create revision; one round trip when uncontended. */
  async lock(options?: LockOptions): Promise<void> {
    const { signal, onWaiting } = checkOptions(options, 'Mutex.lock')
    this.notHeld('lock')
    const probe = startWait('lock', this.name)
    try {
      await this.lockOnce(signal, onWaiting)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', this.own?.createRevision)
  }

  private lockOnce(signal: AbortSignal | undefined, onWaiting: (() => void) | undefined): Promise<void> {
    return this.guard.run('lock', async () => {
      signal?.throwIfAborted()
      // A replayed acquire finds our own key and keeps its place: safe to resend for lock().
      const attempt = await this.tryAcquire(IDEMPOTENT)
      try {
        if (attempt.held) return this.granted(attempt.revision)
        onWaiting?.()
        this.granted(await this.waitTurn(attempt.own, attempt.view, signal))
      } catch (err) {
        await attempt.own.abandon()
        this.own = undefined
        throw err
      }
    })
  }

  /** Takes the lock if it is free, else throws {@link LockedError} and leaves no key behind. */
  async tryLock(): Promise<void> {
    this.notHeld('tryLock')
    const probe = startWait('lock', this.name)
    try {
      await this.tryLockOnce()
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', this.own?.createRevision)
  }

  private tryLockOnce(): Promise<void> {
    return this.guard.run('tryLock', async () => {
      const attempt = await this.tryAcquire()
      if (attempt.held) return this.granted(attempt.revision)
      this.own = undefined
      // Delete only a key this call created: an existing one is this session's place in the
      // queue through another Mutex object (Go deletes it anyway).
      if (attempt.created) await attempt.own.delete()
      throw new LockedError(`lock ${JSON.stringify(this.name)} is held by another session`)
    })
  }

  /** Releases the lock; deletes the key only if it is still this hold's (fenced by create revision). */
  async unlock(): Promise<void> {
    await this.heldKey('unlock').delete()
    this.own = undefined
    this.heldAt = -1n
    this.hold?.end()
    this.hold = undefined
  }

  /**
   * A compare that holds while this hold is current: put it in your Txns to write only while
   * the lock is yours (Go's `IsOwner`). It is a compare for etcd to evaluate, not a boolean.
   */
  ownerCompare(): Compare {
    return ownerCompareOf(this.own, this.ks)
  }

  /**
   * An etcd3 transaction builder already guarded by ownership:
   * `await m.fenced().then(client.put('k').value('v')).commit()` writes only while held.
   */
  fenced(): ComparatorBuilder {
    return this.heldKey('fenced').fenced()
  }

  /**
   * One Txn: create my key if absent, and in the same round trip read the youngest keys of the
   * prefix: ours and those queued ahead of it. Held when none is ahead. Not a keys-only read:
   * etcd 3.7 answers those from its in-memory index, whose entries carry no lease (every key
   * reads as lease 0), and a key without a lease is how a foreign key under the prefix shows.
   * Contenders' values are empty, so the answer is no larger.
   */
  private async tryAcquire(txnOptions: { idempotent?: boolean } = {}, retries = 2): Promise<Attempt> {
    this.session.signal.throwIfAborted()
    const key = contenders.key(this.name, this.session.leaseHex)
    const youngest = this.ks.get(this.prefix, { prefix: true, sort: ['Create', 'Descend'], limit: AHEAD_READ_LIMIT })
    const absent = this.ks.compare(key, 'Create', '==', 0)
    const res = await createOnLease(
      this.session,
      key,
      [absent],
      { mine: this.ks.put(key, '', this.session.leaseId), youngest },
      { youngest },
      txnOptions,
    )
    const read = res.results.youngest
    const createRevision = res.succeeded ? res.revision : await this.existingKey(key, read)
    // Our key went between the Txn and a read that followed (another Mutex object of this session unlocked): again.
    const again = () => {
      if (retries === 0) throw this.expired()
      return this.tryAcquire(txnOptions, retries - 1)
    }
    if (createRevision === undefined) return again()
    const own = new OwnedKey(this.session, key, createRevision)
    let view: TurnView = {
      ahead: read.kvs.filter((kv) => kv.createRevision < own.createRevision),
      complete: !read.more,
      revision: res.revision,
    }
    // Only a re-lock of an old key can have its whole read filled by younger keys: read what is ahead.
    if (!view.complete && view.ahead.length === 0) {
      const ahead = await readAhead(this.ks, this.prefix, own, { leases: true })
      if (!ahead.mine) return again()
      view = ahead
    }
    this.own = own
    const attempt = { own, held: view.complete && view.ahead.length === 0, created: res.succeeded, revision: view.revision, view }
    const foreign = view.ahead.find((kv) => kv.lease === '0')
    if (foreign) {
      this.own = undefined
      if (attempt.created) await own.abandon()
      throw this.foreignKey(foreign)
    }
    return attempt
  }

  /**
   * The create revision of our key, which the lock Txn found already there (a replayed acquire,
   * or another Mutex object of this session): from the Txn's read of the youngest keys, or, when
   * more than that many keys are younger than ours, from one more read.
   */
  private async existingKey(key: string, youngest: RangeResult): Promise<bigint | undefined> {
    const seen = youngest.kvs.find((kv) => kv.key === key) ?? (await this.ks.range(key, { keysOnly: true })).kvs[0]
    return seen?.createRevision
  }

  /**
   * Waits until every older contender is gone (see lib/wait/turn.ts: no read per handoff when the
   * enqueue saw every key ahead). Ends early with {@link SessionExpiredError} when our own key
   * vanishes (lease expired or revoked) instead of only after the others leave (etcd issue
   * #19597). Returns the revision the lock was granted at.
   */
  private waitTurn(own: OwnedKey, view: TurnView, signal?: AbortSignal): Promise<bigint> {
    return waitTurn({
      ks: this.ks,
      prefix: this.prefix,
      own,
      isAhead: (kv) => kv.createRevision < own.createRevision,
      view,
      reread: () => readAhead(this.ks, this.prefix, own, { leases: true }),
      check: (ahead) => {
        const foreign = ahead.find((kv) => kv.lease === '0')
        if (foreign) throw this.foreignKey(foreign)
      },
      signal,
      lost: (cause) => this.expired(cause),
    })
  }

  private foreignKey(kv: KeyValue) {
    return new ForeignKeyError(
      `lock ${JSON.stringify(this.name)}: key ${JSON.stringify(kv.key)} under the lock's prefix ${JSON.stringify(this.prefix)} is not a lock contender (it has no lease), so it would never be released; keep your own data outside ${JSON.stringify(this.prefix)} (e.g. ${JSON.stringify(`${this.name}-data/…`)}) and delete that key`,
    )
  }

  private expired(cause?: unknown) {
    return lostWhileWaiting(`lock ${JSON.stringify(this.name)}`, this.session, 'lock', cause)
  }

  private granted(revision: bigint) {
    this.heldAt = revision
    this.hold = startHold('lock', this.name, this.own!.createRevision, this.session.signal)
  }

  private notHeld(op: string) {
    if (this.held)
      throw new InvalidStateError(`Mutex ${JSON.stringify(this.name)}: ${op}() on a lock this object already holds; unlock() first`)
  }

  /** The key of the current hold; throws {@link LockReleasedError} when not held. */
  private heldKey(what: string): OwnedKey {
    if (!this.held || !this.own)
      throw new LockReleasedError(`Mutex ${JSON.stringify(this.name)}: ${what} needs the lock held; call lock() first`)
    return this.own
  }
}
