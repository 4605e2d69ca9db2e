import type { ComparatorBuilder } from 'etcd3'
import { EtcdUnavailableError, SessionExpiredError } from '../errors.js'
import { IDEMPOTENT, keyspace, type Compare, type Keyspace, type NamedOps, type NamedTxnResult } from '../core/kv.js'
import type { Session } from '../session/session.js'
import { whileOwnKeyLives } from './wait.js'

/**
 * The Txn that creates a key on `session`'s lease (a contender's, a waiter's, a record's), as
 * {@link Keyspace.namedTxn}. When etcd's answer is lost the put may have applied, so the key is
 * recorded as stranded on the session before the error goes on: the session is then not lent
 * to other work while a key of it we do not know of could block others (`Session.stranded`).
 */
export function createOnLease<S extends NamedOps, F extends NamedOps = Record<never, never>>(
  session: Session,
  key: string,
  compare: Compare[],
  success: S,
  failure?: F,
  options: { idempotent?: boolean } = {},
): Promise<NamedTxnResult<S, F>> {
  return keyspace(session.client)
    .namedTxn(compare, success, failure, options)
    .catch((err: unknown) => {
      if (err instanceof EtcdUnavailableError) session.strand(key)
      throw err
    })
}

/**
 * What a primitive's `ownerCompare()` gives while it holds nothing: a compare that never holds
 * (no key has create revision -1), so a write guarded by it fails instead of landing unguarded.
 */
export function ownerCompareOf(own: OwnedKey | undefined, ks: Keyspace): Compare {
  return own?.ownerCompare() ?? ks.compare('\0', 'Create', '==', -1)
}

/**
 * The error of a wait whose session lost its lease meanwhile: `what` names the primitive
 * (`lock "jobs"`), `again` what to call on a new session (`lock`), `cause` why, if known.
 */
export function lostWhileWaiting(what: string, session: Session, again: string, cause?: unknown, waitingTo = ''): SessionExpiredError {
  const why = cause instanceof Error ? `: ${cause.message}` : ''
  return new SessionExpiredError(
    `${what}: session ${session.leaseHex} lost its lease while waiting${waitingTo}${why}; create a new Session and ${again} again`,
    { cause },
  )
}

/**
 * A key that one session created and owns (Go's `EphemeralKV`): a lock or candidate key, a
 * reader's or writer's place, a barrier participant. Its create revision tells this key apart
 * from a later one of the same name, so every write that must only happen while we still own
 * it — the release, a user's guarded write — is fenced by it.
 */
export class OwnedKey {
  private readonly ks: Keyspace

  constructor(
    readonly session: Session,
    /** The key, relative to the client's namespace. */
    readonly key: string,
    /** The key's create revision: the fencing token of whatever it stands for. */
    readonly createRevision: bigint,
  ) {
    this.ks = keyspace(session.client)
  }

  /** A compare that holds while the key is still this one: put it in a Txn's compares. */
  ownerCompare(): Compare {
    return this.ks.compare(this.key, 'Create', '==', this.createRevision)
  }

  /**
   * An etcd3 transaction builder guarded by {@link ownerCompare}. Throws the session's
   * `LeaseLostError` (a `SessionExpiredError`) once the session has ended or is past its
   * conservative bound (`aliveUntil`), checked now, not by a timer: from then on etcd may give
   * the key to someone else at any moment, so the holder must stop, as its signal says.
   */
  fenced(): ComparatorBuilder {
    this.session.signal.throwIfAborted()
    return this.session.client.if(this.key, 'Create', '==', this.createRevision.toString())
  }

  /**
   * Deletes the key if it is still this one (one Txn, sent again if its answer is lost: a
   * second application changes nothing). Resolves with whether it was there to delete.
   */
  async delete(): Promise<boolean> {
    const res = await this.ks.txn([this.ownerCompare()], [this.ks.deleteOp(this.key)], [], IDEMPOTENT)
    return res.succeeded
  }

  /**
   * Gives the key up after a failed or aborted wait. Never fails silently: when the delete
   * cannot be sent (etcd unreachable), the key is recorded on the session as stranded, so the
   * session is not lent to other work while a ghost key of it could block others (see
   * `Session.stranded`). A session that has ended needs nothing: its lease takes the key.
   */
  async abandon(): Promise<void> {
    if (!this.session.active) return
    try {
      await this.delete()
    } catch {
      this.session.strand(this.key)
    }
  }

  /**
   * Runs `wait` while watching this key: if the key vanishes (lease expired or revoked, key
   * deleted) or the session ends, rejects at once with `lost()` — not only after `wait` is done.
   * `seenAt` is a revision at which the key was known to exist.
   */
  whileAlive<T>(
    seenAt: bigint,
    signal: AbortSignal | undefined,
    lost: (cause?: unknown) => Error,
    wait: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const own = { ks: this.ks, key: this.key, createRevision: this.createRevision, seenAt, session: this.session.signal, lost }
    return whileOwnKeyLives(own, signal, wait)
  }

  /** Whether the key still exists as this one (one Range). */
  async exists(): Promise<boolean> {
    const now = await this.ks.range(this.key)
    return now.kvs.length > 0 && now.kvs[0].createRevision === this.createRevision
  }
}

/**
 * One call at a time per primitive object: Go's recipes are not goroutine-safe either, but here
 * a second concurrent call fails with a clear error instead of corrupting the object's state.
 */
export class CallGuard {
  private busy = false

  constructor(private readonly misuse: (op: string) => Error) {}

  async run<T>(op: string, call: () => Promise<T>): Promise<T> {
    if (this.busy) throw this.misuse(op)
    this.busy = true
    try {
      return await call()
    } finally {
      this.busy = false
    }
  }
}
