import { checkOptions, checkSession } from './check.js'
import { InvalidArgumentError, SessionExpiredError, TooManyClientsError } from './errors.js'
import { IDEMPOTENT, checkName, keyspace, type Keyspace } from './kv.js'
import type { WaitOptions } from './mutex.js'
import type { Session } from './session.js'
import { waitDelete, waitFor, whileOwnKeyLives } from './wait.js'

/**
 * A double barrier, key-compatible with Go's `recipe.DoubleBarrier`: `count` participants
 * `enter()`, and nobody gets past `enter()` until all `count` have arrived; then each
 * `leave()`s, and nobody gets past `leave()` until all have left.
 *
 * Keys: each participant puts `<name>/waiters/<unixNano>` (empty value, the session's lease, so
 * a crashed participant drops out when its lease ends); the count-th participant puts
 * `<name>/ready` (no lease) to release the others. Follows Go 3.5.6+/HEAD: an extra participant
 * gets {@link TooManyClientsError} and leaves no key, and only the last one out deletes
 * `/ready`. Unlike Go, `leave()` loops instead of recursing, waits take an AbortSignal, and a
 * lost watch is an error rather than a false success.
 */
export class DoubleBarrier {
  private readonly ks: Keyspace
  private readonly waiters: string
  private readonly ready: string
  private myKey = ''
  private myRev = -1n
  private busy = false

  constructor(
    readonly session: Session,
    /** The barrier name; keys live under `<name>/`. */
    readonly name: string,
    /** How many participants the barrier waits for (a whole number >= 1). */
    readonly count: number,
  ) {
    checkSession(session, 'DoubleBarrier')
    checkName(name, 'DoubleBarrier name')
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) {
      throw new InvalidArgumentError(`DoubleBarrier count must be a whole number >= 1, got ${String(count)}`)
    }
    this.ks = keyspace(session.client)
    // Go ranges `<name>/waiters` without the slash; its keys all carry it, so this is the same set
    // minus unrelated keys such as `<name>/waitersX`.
    this.waiters = `${name}/waiters/`
    this.ready = `${name}/ready`
  }

  /** This participant's waiter key ('' before enter() and after leave()). */
  get key(): string {
    return this.myKey
  }

  /** True between a successful enter() and the end of leave(). */
  get entered(): boolean {
    return this.myKey !== ''
  }

  /**
   * Joins the barrier and blocks until `count` participants have joined. Throws
   * {@link TooManyClientsError} (leaving no key) if `count` are already in, and
   * {@link SessionExpiredError} if the session's lease ends while waiting. On abort, removes the
   * waiter key and rejects with the signal's reason.
   */
  async enter(options?: WaitOptions): Promise<void> {
    const { signal } = checkOptions(options, 'DoubleBarrier.enter')
    this.begin('enter')
    try {
      if (this.myKey !== '') throw new InvalidArgumentError(`DoubleBarrier ${JSON.stringify(this.name)}: enter() twice; leave() first`)
      signal?.throwIfAborted()
      this.session.signal.throwIfAborted()
      // Refuse early when full, so an extra participant never writes a key (Go 3.5.6+).
      const before = await this.ks.range(this.waiters, { prefix: true, countOnly: true })
      if (before.count >= BigInt(this.count)) throw this.tooMany()
      await this.createKey()
      try {
        await this.arrive(signal)
      } catch (err) {
        await this.abandon(err)
        throw err
      }
    } finally {
      this.busy = false
    }
  }

  /**
   * Leaves the barrier and blocks until every participant has left (or its lease ended). The
   * participant with the oldest key leaves last and deletes `/ready`. On abort, removes the
   * waiter key (the others are not held up) and rejects with the signal's reason.
   */
  async leave(options?: WaitOptions): Promise<void> {
    const { signal } = checkOptions(options, 'DoubleBarrier.leave')
    this.begin('leave')
    try {
      if (this.myKey === '') throw new InvalidArgumentError(`DoubleBarrier ${JSON.stringify(this.name)}: leave() without a successful enter(); call enter() first`)
      try {
        await this.depart(signal)
      } catch (err) {
        if (signal?.aborted) await this.abandon(err)
        throw err
      }
      this.reset()
    } finally {
      this.busy = false
    }
  }

  /** After creating our key: release everyone if we are the count-th, else wait for `/ready`. */
  private async arrive(signal?: AbortSignal) {
    const first = await this.ks.range(this.waiters, { prefix: true, sort: ['Create', 'Ascend'], limit: this.count })
    if (first.kvs.length >= this.count) {
      const last = first.kvs[this.count - 1].createRevision
      if (this.myRev > last) throw this.tooMany() // lost a race for the last place
      if (this.myRev === last) {
        await this.ks.txn([], [this.ks.put(this.ready, '')])
        return
      }
    }
    await this.waitReady(signal)
  }

  /**
   * Waits for a PUT of `/ready` at or after our key's revision, so a `/ready` left by an earlier
   * round does not count. Ends early with {@link SessionExpiredError} if our key vanishes.
   */
  private async waitReady(signal?: AbortSignal) {
    const own = { ks: this.ks, key: this.myKey, createRevision: this.myRev, seenAt: this.myRev, session: this.session.signal, lost: () => this.expired() }
    await whileOwnKeyLives(own, signal, (wait) => waitFor(this.session.client, { key: this.ready }, this.myRev, (type) => type === 'put', wait))
  }

  /**
   * Go's Leave as a loop. The oldest-written participant (lowest mod revision) waits for the
   * newest one to go; everyone else deletes their key and waits for the oldest to go; each
   * wakes to re-read. A dead participant's key goes with its lease, so it blocks nobody.
   */
  private async depart(signal?: AbortSignal) {
    for (;;) {
      signal?.throwIfAborted()
      const all = await this.ks.range(this.waiters, { prefix: true })
      if (all.kvs.length === 0) return
      let lowest = all.kvs[0]
      let highest = all.kvs[0]
      for (const kv of all.kvs) {
        if (kv.modRevision < lowest.modRevision) lowest = kv
        if (kv.modRevision > highest.modRevision) highest = kv
      }
      const isLowest = lowest.key === this.myKey
      if (isLowest && all.kvs.length === 1) {
        // Last one out: take `/ready` down together with our key.
        await this.ks.txn([], [this.ks.delete(this.ready), this.ks.delete(this.myKey)])
        return
      }
      // Each awaited key exists at `all.revision`, so its deletion comes later: watch from the
      // next revision (an old mod revision may already be compacted).
      if (isLowest) {
        await waitDelete(this.session.client, highest.key, all.revision + 1n, signal)
      } else {
        await this.removeKey()
        await waitDelete(this.session.client, lowest.key, all.revision + 1n, signal)
      }
    }
  }

  /** Creates `<name>/waiters/<unixNano>` with the session lease; retries on a name clash. */
  private async createKey() {
    for (;;) {
      const key = `${this.waiters}${unixNano()}`
      const res = await this.ks.txn([this.ks.compare(key, 'Version', '==', 0)], [this.ks.put(key, '', this.session.leaseId)])
      if (res.succeeded) {
        this.myKey = key
        this.myRev = res.revision
        return
      }
    }
  }

  /** Deletes our waiter key if it is still ours (fenced by create revision). */
  private async removeKey() {
    await this.ks.txn([this.ks.compare(this.myKey, 'Create', '==', this.myRev)], [this.ks.delete(this.myKey)], [], IDEMPOTENT)
  }

  /** After a failed enter/leave: remove our key (best effort; an expired one is gone already). */
  private async abandon(cause: unknown) {
    if (!(cause instanceof SessionExpiredError)) await this.removeKey().catch(() => {})
    this.reset()
  }

  private tooMany() {
    return new TooManyClientsError(`DoubleBarrier ${JSON.stringify(this.name)} already has its ${this.count} participants; wait for them to leave() or use a larger count`)
  }

  private expired() {
    return new SessionExpiredError(`DoubleBarrier ${JSON.stringify(this.name)}: session ${this.session.leaseHex} expired while waiting to enter; create a new Session and enter again`)
  }

  private begin(op: string) {
    if (this.busy) throw new InvalidArgumentError(`DoubleBarrier ${JSON.stringify(this.name)}: ${op}() called while another call on the same object is running; use one DoubleBarrier per participant`)
    this.busy = true
  }

  private reset() {
    this.myKey = ''
    this.myRev = -1n
  }
}

/**
 * Nanoseconds since the Unix epoch as Go's `time.Now().UnixNano()` prints them (19 digits today,
 * so keys sort by time); sub-millisecond digits come from the monotonic clock.
 */
function unixNano(): string {
  const now = performance.timeOrigin + performance.now()
  const ms = Math.floor(now)
  const sub = Math.floor((now - ms) * 1e6)
  return (BigInt(ms) * 1_000_000n + BigInt(sub)).toString()
}
