import type { ComparatorBuilder } from 'etcd3'
import { checkOptions, checkSession } from '../core/check.js'
import { InvalidStateError, KeyExistsError, LockedError, LockReleasedError, SessionExpiredError } from '../errors.js'
import { putUnique, rwContenders, unixNano } from '../core/keys.js'
import { checkName, keyspace, prefixEnd, type Compare, type Keyspace } from '../core/kv.js'
import { CallGuard, createOnLease, lostWhileWaiting, OwnedKey, ownerCompareOf } from '../wait/owned-key.js'
import { heldSignal } from '../fencing.js'
import type { Session } from '../session/session.js'
import { AHEAD_READ_LIMIT, readAhead, type TurnView, waitTurn } from '../wait/turn.js'
import type { LockOptions } from '../wait/wait.js'
import { startHold, startWait, type HoldProbe, type WaitProbe } from '../telemetry/coordination.js'
import type { Primitive } from '../telemetry/names.js'

/** The mode an {@link RWMutex} is held in. */
export type RWMode = 'read' | 'write'

/** Fresh keys a try-lock tries before giving up on nanosecond clashes. */
const MAX_TRY_ATTEMPTS = 16

/**
 * A readers-writer lock, key-compatible with Go's `recipe.RWMutex`: readers put
 * `<name>/read/<unixNano>`, writers `<name>/write/<unixNano>` (empty value, session lease,
 * create-only). A reader waits for older writers only; a writer waits for every older key. So
 * readers share, a waiting writer holds back later readers (no writer starvation), and order
 * is FIFO by revision. Unlike Go, waits can be aborted, a lost session is reported
 * ({@link SessionExpiredError}, etcd #16221), and releases are fenced by create revision.
 */
export class RWMutex {
  private readonly ks: Keyspace
  private readonly guard: CallGuard
  private own?: OwnedKey
  private myMode: RWMode | undefined
  /** The span and timer of the current hold (undefined when telemetry is off). */
  private hold?: HoldProbe

  constructor(
    readonly session: Session,
    /** The lock name; keys live under `<name>/read/` and `<name>/write/`. */
    readonly name: string,
  ) {
    checkSession(session, 'RWMutex')
    checkName(name, 'RWMutex name')
    this.ks = keyspace(session.client)
    this.guard = new CallGuard(
      (op) =>
        new InvalidStateError(
          `RWMutex ${JSON.stringify(name)}: ${op}() called while another lock call on the same object is running; use one RWMutex per concurrent caller`,
        ),
    )
  }

  /** This contender's key, `<name>/read|write/<unixNano>` ('' when not holding or waiting). */
  get key(): string {
    return this.own?.key ?? ''
  }

  /** The mode the lock is held in, or undefined when not held. */
  get mode(): RWMode | undefined {
    return this.myMode
  }

  /** True between a successful (r)lock and its unlock (as far as this process knows). */
  get held(): boolean {
    return this.myMode !== undefined
  }

  /**
   * The fencing token of the current hold: the lock key's create revision. A writer's token is
   * greater than that of every hold (read or write) before it. Throws {@link LockReleasedError}
   * when not held.
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

  /** Blocks until held for reading: waits only for writers that queued earlier. */
  rLock(options?: LockOptions): Promise<void> {
    return this.acquire('read', checkOptions(options, 'RWMutex.rLock'))
  }

  /** Blocks until held for writing: waits for every reader and writer that queued earlier. */
  lock(options?: LockOptions): Promise<void> {
    return this.acquire('write', checkOptions(options, 'RWMutex.lock'))
  }

  /** Takes a read hold if no writer holds or waits, else throws {@link LockedError}; leaves no key behind. */
  tryRLock(): Promise<void> {
    return this.tryAcquire('read')
  }

  /** Takes a write hold if nobody holds or waits, else throws {@link LockedError}; leaves no key behind. */
  tryLock(): Promise<void> {
    return this.tryAcquire('write')
  }

  /** Releases a read hold. */
  rUnlock(): Promise<void> {
    return this.release('read')
  }

  /** Releases a write hold. */
  unlock(): Promise<void> {
    return this.release('write')
  }

  /** A compare that holds while this hold is current: put it in your Txns to write only while held. */
  ownerCompare(): Compare {
    return ownerCompareOf(this.own, this.ks)
  }

  /** An etcd3 transaction builder guarded by ownership (see `Mutex.fenced`). */
  fenced(): ComparatorBuilder {
    return this.heldKey('fenced()').fenced()
  }

  private async acquire(mode: RWMode, { signal, onWaiting }: LockOptions) {
    const op = mode === 'read' ? 'rLock' : 'lock'
    this.notHeld(op)
    const probe = startWait(primitiveOf(mode), this.name)
    try {
      await this.acquireOnce(mode, op, signal, onWaiting)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    this.granted(mode, probe)
  }

  private acquireOnce(mode: RWMode, op: string, signal: AbortSignal | undefined, onWaiting: (() => void) | undefined) {
    return this.guard.run(op, async () => {
      signal?.throwIfAborted()
      this.session.signal.throwIfAborted()
      // One Txn: read the youngest blockers, then create my key (the read runs before the put,
      // so every key it sees is older and ahead of mine): an uncontended acquire is one round
      // trip, and a waiter that saw every blocker takes its turn with no read (lib/wait/turn.ts).
      // Keys only: the turn needs keys and create revisions, and the keys carry no value.
      const created = await putUnique(this.ks, rwContenders.modePrefix(this.name, mode), '', {
        lease: this.session.leaseId,
        reads: {
          blockers: this.ks.get(this.blockers(mode), {
            prefix: true,
            sort: ['Create', 'Descend'],
            limit: AHEAD_READ_LIMIT,
            keysOnly: true,
          }),
        },
        onExhausted: () => this.clashes(mode),
        onUnknownOutcome: (key) => this.session.strand(key),
      })
      const own = new OwnedKey(this.session, created.key, created.revision)
      this.own = own
      const blockers = created.reads.blockers
      if (blockers.kvs.length > 0) {
        try {
          onWaiting?.()
          await this.waitForTurn(mode, own, { ahead: blockers.kvs, complete: !blockers.more, revision: created.revision }, signal)
        } catch (err) {
          this.own = undefined
          await own.abandon()
          throw err
        }
      }
      this.myMode = mode
    })
  }

  /** One Txn: create my key only if no blocker exists at all (a range compare), else nothing. */
  private async tryAcquire(mode: RWMode) {
    const op = mode === 'read' ? 'tryRLock' : 'tryLock'
    this.notHeld(op)
    const probe = startWait(primitiveOf(mode), this.name)
    try {
      await this.tryAcquireOnce(mode, op)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    this.granted(mode, probe)
  }

  /** Ends the wait's span and starts the hold's (telemetry only; nothing when it is off). */
  private granted(mode: RWMode, probe: WaitProbe | undefined) {
    const fence = this.own!.createRevision
    probe?.end('acquired', fence)
    this.hold = startHold(primitiveOf(mode), this.name, fence, this.session.signal)
  }

  private tryAcquireOnce(mode: RWMode, op: string) {
    return this.guard.run(op, async () => {
      this.session.signal.throwIfAborted()
      const blockers = this.blockers(mode)
      // create_revision < 1 over a range holds only when the range is empty.
      const noBlocker: Compare = { ...this.ks.compare(blockers, 'Create', '<', 1), range_end: prefixEnd(this.ks.full(blockers)) }
      for (let attempt = 0; attempt < MAX_TRY_ATTEMPTS; attempt++) {
        const key = `${rwContenders.modePrefix(this.name, mode)}${unixNano()}`
        const absent = this.ks.compare(key, 'Version', '==', 0)
        const res = await createOnLease(
          this.session,
          key,
          [absent, noBlocker],
          { mine: this.ks.put(key, '', this.session.leaseId) },
          { collided: this.ks.get(key, { countOnly: true }) },
        )
        if (res.succeeded) {
          this.own = new OwnedKey(this.session, key, res.revision)
          this.myMode = mode
          return
        }
        if (res.results.collided.count > 0n) continue // nanosecond collision: try a new key
        throw new LockedError(
          `RWMutex ${JSON.stringify(this.name)} is ${mode === 'read' ? 'held or awaited by a writer' : 'held or awaited by another session'}`,
        )
      }
      throw this.clashes(mode)
    })
  }

  /** Readers are blocked by writers; writers by everyone. */
  private blockers(mode: RWMode): string {
    return mode === 'read' ? rwContenders.modePrefix(this.name, 'write') : rwContenders.prefix(this.name)
  }

  private async release(mode: RWMode) {
    const op = mode === 'read' ? 'rUnlock' : 'unlock'
    if (this.myMode !== mode) {
      const hint = this.myMode
        ? `it is held for ${this.myMode}ing; call ${this.myMode === 'read' ? 'rUnlock' : 'unlock'}()`
        : `it is not held; call ${mode === 'read' ? 'rLock' : 'lock'}() first`
      throw new LockReleasedError(`RWMutex ${JSON.stringify(this.name)}: ${op}() but ${hint}`)
    }
    await this.heldKey(op).delete()
    this.own = undefined
    this.myMode = undefined
    this.hold?.end()
    this.hold = undefined
  }

  private clashes(mode: RWMode) {
    return new KeyExistsError(
      `RWMutex ${JSON.stringify(this.name)}: 16 fresh keys in a row already existed; check for clock problems or another writer of <name>/${mode}/ keys`,
    )
  }

  /**
   * Waits until every blocker older than our key is gone (a reader: older writers; a writer:
   * every older key), as a Mutex waiter does (lib/wait/turn.ts, on the delete feed of `<name>/`,
   * which also carries our own key's delete).
   */
  private waitForTurn(mode: RWMode, own: OwnedKey, view: TurnView, signal?: AbortSignal): Promise<bigint> {
    const blockers = this.blockers(mode)
    return waitTurn({
      ks: this.ks,
      prefix: rwContenders.prefix(this.name),
      own,
      isAhead: (kv) => kv.key.startsWith(blockers) && kv.createRevision < own.createRevision,
      view,
      reread: () => readAhead(this.ks, blockers, own),
      check: () => {},
      signal,
      lost: (cause) => this.expired(cause),
    })
  }

  private expired(cause?: unknown) {
    return lostWhileWaiting(`RWMutex ${JSON.stringify(this.name)}`, this.session, 'lock', cause)
  }

  private notHeld(op: string) {
    if (this.held)
      throw new InvalidStateError(`RWMutex ${JSON.stringify(this.name)}: ${op}() on a lock this object already holds; release it first`)
  }

  /** The key of the current hold; throws {@link LockReleasedError} when not held. */
  private heldKey(what: string): OwnedKey {
    if (!this.held || !this.own)
      throw new LockReleasedError(`RWMutex ${JSON.stringify(this.name)}: ${what} needs the lock held; call lock() or rLock() first`)
    return this.own
  }
}

function primitiveOf(mode: RWMode): Primitive {
  return mode === 'read' ? 'rwlock.read' : 'rwlock.write'
}
