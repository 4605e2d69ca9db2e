import { checkInteger, checkOptions, checkSession } from '../core/check.js'
import { InvalidStateError, KeyExistsError, SessionExpiredError, TooManyClientsError } from '../errors.js'
import { doubleBarrier, putUnique } from '../core/keys.js'
import { checkName, keyspace, type Keyspace } from '../core/kv.js'
import { CallGuard, lostWhileWaiting, OwnedKey } from '../wait/owned-key.js'
import type { Session } from '../session/session.js'
import { waitDelete, waitFor, type WaitOptions } from '../wait/wait.js'
import { startWait } from '../telemetry/coordination.js'

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
  private readonly guard: CallGuard
  /** Our waiter key between enter() and the end of leave(). */
  private own?: OwnedKey

  constructor(
    readonly session: Session,
    /** The barrier name; keys live under `<name>/`. */
    readonly name: string,
    /** How many participants the barrier waits for (a whole number >= 1). */
    readonly count: number,
  ) {
    checkSession(session, 'DoubleBarrier')
    checkName(name, 'DoubleBarrier name')
    checkInteger(count, 'DoubleBarrier count', 1, Number.MAX_SAFE_INTEGER)
    this.ks = keyspace(session.client)
    // Go ranges `<name>/waiters` without the slash; its keys all carry it, so this is the same set
    // minus unrelated keys such as `<name>/waitersX`.
    this.waiters = doubleBarrier.waiters(name)
    this.ready = doubleBarrier.ready(name)
    this.guard = new CallGuard(
      (op) =>
        new InvalidStateError(
          `DoubleBarrier ${JSON.stringify(name)}: ${op}() called while another call on the same object is running; use one DoubleBarrier per participant`,
        ),
    )
  }

  /** This participant's waiter key ('' before enter() and after leave()). */
  get key(): string {
    return this.own?.key ?? ''
  }

  /** True between a successful enter() and the end of leave(). */
  get entered(): boolean {
    return this.own !== undefined
  }

  /**
   * Joins the barrier and blocks until `count` participants have joined. Throws
   * {@link TooManyClientsError} (leaving no key) if `count` are already in, and
   * {@link SessionExpiredError} if the session's lease ends while waiting. On abort, removes the
   * waiter key and rejects with the signal's reason.
   */
  async enter(options?: WaitOptions): Promise<void> {
    const { signal } = checkOptions(options, 'DoubleBarrier.enter')
    const probe = startWait('double_barrier.enter', this.name)
    try {
      await this.enterOnce(signal)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', this.own?.createRevision)
  }

  private enterOnce(signal: AbortSignal | undefined) {
    return this.guard.run('enter', async () => {
      if (this.own) throw new InvalidStateError(`DoubleBarrier ${JSON.stringify(this.name)}: enter() twice; leave() first`)
      signal?.throwIfAborted()
      this.session.signal.throwIfAborted()
      // Refuse early when full, so an extra participant never writes a key (Go 3.5.6+).
      const before = await this.ks.range(this.waiters, { prefix: true, countOnly: true })
      if (before.count >= BigInt(this.count)) throw this.tooMany()
      const created = await putUnique(this.ks, this.waiters, '', {
        lease: this.session.leaseId,
        onExhausted: () =>
          new KeyExistsError(
            `DoubleBarrier ${JSON.stringify(this.name)}: 16 fresh waiter keys in a row already existed; check for clock problems`,
          ),
        onUnknownOutcome: (key) => this.session.strand(key),
      })
      const own = new OwnedKey(this.session, created.key, created.revision)
      this.own = own
      try {
        await this.arrive(own, signal)
      } catch (err) {
        this.own = undefined
        await own.abandon()
        throw err
      }
    })
  }

  /**
   * Leaves the barrier and blocks until every participant has left (or its lease ended). The
   * participant with the oldest key leaves last and deletes `/ready`. On abort, removes the
   * waiter key (the others are not held up) and rejects with the signal's reason.
   */
  async leave(options?: WaitOptions): Promise<void> {
    const { signal } = checkOptions(options, 'DoubleBarrier.leave')
    const probe = startWait('double_barrier.leave', this.name)
    try {
      await this.leaveOnce(signal)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired')
  }

  private leaveOnce(signal: AbortSignal | undefined) {
    return this.guard.run('leave', async () => {
      const own = this.own
      if (!own)
        throw new InvalidStateError(`DoubleBarrier ${JSON.stringify(this.name)}: leave() without a successful enter(); call enter() first`)
      try {
        await this.depart(own, signal)
      } catch (err) {
        if (signal?.aborted) {
          this.own = undefined
          await own.abandon()
        }
        throw err
      }
      this.own = undefined
    })
  }

  /** After creating our key: release everyone if we are the count-th, else wait for `/ready`. */
  private async arrive(own: OwnedKey, signal?: AbortSignal) {
    const first = await this.ks.range(this.waiters, { prefix: true, sort: ['Create', 'Ascend'], limit: this.count })
    if (first.kvs.length >= this.count) {
      const last = first.kvs[this.count - 1].createRevision
      if (own.createRevision > last) throw this.tooMany() // lost a race for the last place
      if (own.createRevision === last) {
        await this.ks.txn([], [this.ks.put(this.ready, '')])
        return
      }
    }
    // Wait for a PUT of `/ready` at or after our key's revision, so a `/ready` left by an
    // earlier round does not count; end early if our key vanishes.
    await own.whileAlive(
      own.createRevision,
      signal,
      (cause) => this.expired(cause),
      (wait) => waitFor(this.session.client, { key: this.ready }, own.createRevision, (type) => type === 'put', wait),
    )
  }

  /**
   * Go's Leave as a loop. The oldest-written participant (lowest mod revision) waits for the
   * newest one to go; everyone else deletes their key and waits for the oldest to go; each
   * wakes to re-read. A dead participant's key goes with its lease, so it blocks nobody.
   */
  private async depart(own: OwnedKey, signal?: AbortSignal) {
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
      const isLowest = lowest.key === own.key
      if (isLowest && all.kvs.length === 1) {
        // Last one out: take `/ready` down together with our key.
        await this.ks.txn([], [this.ks.deleteOp(this.ready), this.ks.deleteOp(own.key)])
        return
      }
      // Each awaited key exists at `all.revision`, so its deletion comes later: watch from the
      // next revision (an old mod revision may already be compacted).
      if (isLowest) {
        await waitDelete(this.session.client, highest.key, all.revision + 1n, signal)
      } else {
        await own.delete()
        await waitDelete(this.session.client, lowest.key, all.revision + 1n, signal)
      }
    }
  }

  private tooMany() {
    return new TooManyClientsError(
      `DoubleBarrier ${JSON.stringify(this.name)} already has its ${this.count} participants; wait for them to leave() or use a larger count`,
    )
  }

  private expired(cause?: unknown) {
    return lostWhileWaiting(`DoubleBarrier ${JSON.stringify(this.name)}`, this.session, 'enter', cause, ' to enter')
  }
}
