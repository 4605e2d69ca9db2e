import type { ComparatorBuilder } from 'etcd3'
import { checkOptions, checkSession } from './check.js'
import { InvalidArgumentError, KeyExistsError, LockedError, LockReleasedError, SessionExpiredError } from './errors.js'
import { IDEMPOTENT, checkName, keyspace, prefixEnd, type Compare, type Keyspace } from './kv.js'
import type { LockOptions } from './mutex.js'
import type { Session } from './session.js'
import { waitDeletes, whileOwnKeyLives } from './wait.js'

/** The mode an {@link RWMutex} is held in. */
export type RWMode = 'read' | 'write'

/** How many fresh `<unixNano>` keys to try before giving up on collisions. */
const MAX_CREATE_ATTEMPTS = 16

/** Wall-clock nanoseconds at the monotonic clock's zero: unixNano() = base + hrtime. */
const wallBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint()
let lastNano = 0n

/** Go's `time.Now().UnixNano()` as 19 decimal digits, strictly increasing within this process. */
function unixNano(): bigint {
  let now = wallBase + process.hrtime.bigint()
  if (now <= lastNano) now = lastNano + 1n
  lastNano = now
  return now
}

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
  private readonly prefix: string
  private myKey = ''
  private myRev = -1n
  private myMode: RWMode | undefined
  private busy = false

  constructor(
    readonly session: Session,
    /** The lock name; keys live under `<name>/read/` and `<name>/write/`. */
    readonly name: string,
  ) {
    checkSession(session, 'RWMutex')
    checkName(name, 'RWMutex name')
    this.ks = keyspace(session.client)
    this.prefix = `${name}/`
  }

  /** This contender's key, `<name>/read|write/<unixNano>` ('' when not holding or waiting). */
  get key(): string {
    return this.myKey
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
    if (!this.held) throw new LockReleasedError(`RWMutex ${JSON.stringify(this.name)}: fence needs the lock held; call lock() or rLock() first`)
    return this.myRev
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

  /** A compare that holds while this hold is current: guard writes with it. */
  isOwner(): Compare {
    return this.ks.compare(this.myKey || '\0', 'Create', '==', this.myRev)
  }

  /** An etcd3 transaction builder guarded by ownership (see `Mutex.fenced`). */
  fenced(): ComparatorBuilder {
    if (!this.held) throw new LockReleasedError(`RWMutex ${JSON.stringify(this.name)}: fenced() needs the lock held; call lock() or rLock() first`)
    return this.session.client.if(this.myKey, 'Create', '==', this.myRev.toString())
  }

  private async acquire(mode: RWMode, { signal, onWaiting }: LockOptions) {
    this.begin(mode === 'read' ? 'rLock' : 'lock')
    try {
      signal?.throwIfAborted()
      this.session.signal.throwIfAborted()
      const created = await this.create(mode)
      if (created.free) {
        this.myMode = mode
        return
      }
      onWaiting?.()
      try {
        await this.waitTurn(mode, created.revision, signal)
        this.myMode = mode
      } catch (err) {
        await this.abandon(err)
        throw err
      }
    } finally {
      this.busy = false
    }
  }

  /**
   * One Txn per attempt: read the youngest blocker, then create my key, so an uncontended
   * acquire is one round trip (the read runs before the put, so every key it sees is older).
   * A key taken by someone else at the same nanosecond is retried with a new one (as Go).
   */
  private async create(mode: RWMode) {
    for (let attempt = 0; attempt < MAX_CREATE_ATTEMPTS; attempt++) {
      const key = `${this.prefix}${mode}/${unixNano()}`
      const res = await this.ks.txn(
        [this.ks.compare(key, 'Version', '==', 0)],
        [this.ks.get(this.blockers(mode), { prefix: true, sort: ['Create', 'Descend'], limit: 1 }), this.ks.put(key, '', this.session.leaseId)],
      )
      if (!res.succeeded) continue
      this.myKey = key
      this.myRev = res.revision
      return { free: res.results[0].range!.kvs.length === 0, revision: res.revision }
    }
    throw new KeyExistsError(`RWMutex ${JSON.stringify(this.name)}: ${MAX_CREATE_ATTEMPTS} fresh keys in a row already existed; check for clock problems or another writer of <name>/${mode}/ keys`)
  }

  /** One Txn: create my key only if no blocker exists at all (a range compare), else nothing. */
  private async tryAcquire(mode: RWMode) {
    this.begin(mode === 'read' ? 'tryRLock' : 'tryLock')
    try {
      this.session.signal.throwIfAborted()
      const blockers = this.blockers(mode)
      // create_revision < 1 over a range holds only when the range is empty.
      const noBlocker: Compare = { ...this.ks.compare(blockers, 'Create', '<', 1), range_end: prefixEnd(this.ks.full(blockers)) }
      for (let attempt = 0; attempt < MAX_CREATE_ATTEMPTS; attempt++) {
        const key = `${this.prefix}${mode}/${unixNano()}`
        const res = await this.ks.txn(
          [this.ks.compare(key, 'Version', '==', 0), noBlocker],
          [this.ks.put(key, '', this.session.leaseId)],
          [this.ks.get(key, { countOnly: true })],
        )
        if (res.succeeded) {
          this.myKey = key
          this.myRev = res.revision
          this.myMode = mode
          return
        }
        if (res.results[0].range!.count > 0n) continue // nanosecond collision: try a new key
        throw new LockedError(`RWMutex ${JSON.stringify(this.name)} is ${mode === 'read' ? 'held or awaited by a writer' : 'held or awaited by another session'}`)
      }
      throw new KeyExistsError(`RWMutex ${JSON.stringify(this.name)}: ${MAX_CREATE_ATTEMPTS} fresh keys in a row already existed; check for clock problems`)
    } finally {
      this.busy = false
    }
  }

  /** Readers are blocked by writers; writers by everyone. */
  private blockers(mode: RWMode): string {
    return mode === 'read' ? `${this.prefix}write/` : this.prefix
  }

  /**
   * Waits until no blocker older than my key is left (each round watches the youngest older
   * one). Ends early with {@link SessionExpiredError} when my own key vanishes.
   */
  private async waitTurn(mode: RWMode, createdAt: bigint, signal?: AbortSignal): Promise<void> {
    const own = { ks: this.ks, key: this.myKey, createRevision: this.myRev, seenAt: createdAt, session: this.session.signal, lost: () => this.expired() }
    await whileOwnKeyLives(own, signal, (wait) => waitDeletes(this.ks, this.blockers(mode), this.myRev - 1n, wait))
    const mine = await this.ks.range(this.myKey)
    if (mine.kvs.length === 0) throw this.expired()
  }

  /** After a failed wait: remove our waiter key (if it is still ours) and forget it. */
  private async abandon(cause: unknown) {
    if (!(cause instanceof SessionExpiredError)) {
      await this.ks.txn([this.isOwner()], [this.ks.delete(this.myKey)], [], IDEMPOTENT).catch(() => {})
    }
    this.reset()
  }

  private async release(mode: RWMode) {
    const op = mode === 'read' ? 'rUnlock' : 'unlock'
    if (this.myMode !== mode) {
      const hint = this.myMode ? `it is held for ${this.myMode}ing; call ${this.myMode === 'read' ? 'rUnlock' : 'unlock'}()` : `it is not held; call ${mode === 'read' ? 'rLock' : 'lock'}() first`
      throw new LockReleasedError(`RWMutex ${JSON.stringify(this.name)}: ${op}() but ${hint}`)
    }
    await this.ks.txn([this.isOwner()], [this.ks.delete(this.myKey)], [], IDEMPOTENT)
    this.reset()
  }

  private expired() {
    return new SessionExpiredError(`RWMutex ${JSON.stringify(this.name)}: session ${this.session.leaseHex} expired while waiting; create a new Session and lock again`)
  }

  private begin(op: string) {
    if (this.busy) throw new InvalidArgumentError(`RWMutex ${JSON.stringify(this.name)}: ${op}() called while another lock call on the same object is running; use one RWMutex per concurrent caller`)
    if (this.held) throw new InvalidArgumentError(`RWMutex ${JSON.stringify(this.name)}: ${op}() on a lock this object already holds; release it first`)
    this.busy = true
  }

  private reset() {
    this.myKey = ''
    this.myRev = -1n
    this.myMode = undefined
  }
}
