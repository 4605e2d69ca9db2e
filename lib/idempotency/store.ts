import type { ComparatorBuilder, Namespace } from 'etcd3'
import { checkClient, checkOptions, checkSession } from '../core/check.js'
import {
  IdempotencyClaimLostError,
  IdempotencyKeyMismatchError,
  InvalidArgumentError,
  InvalidStateError,
  type SingleFlightError,
  WatchLostError,
} from '../errors.js'
import {
  checkHash,
  checkLeaseTtl,
  checkRecordTtl,
  decodeRecord,
  encodeRecord,
  hashField,
  ownerId,
  finishedOutcome,
  type SharedError,
  toSharedError,
} from './record.js'
import { idempotencyKeys } from '../core/keys.js'
import { IDEMPOTENT, checkName, keyspace, type Compare, type KeyValue, type Keyspace } from '../core/kv.js'
import { grantLease, revokeLease } from '../core/leases.js'
import { createOnLease, OwnedKey } from '../wait/owned-key.js'
import { Session } from '../session/session.js'
import { untilAborted, waitChange, type KeyChange, type WaitOptions } from '../wait/wait.js'
import { startWait } from '../telemetry/coordination.js'
import type { Outcome } from '../telemetry/names.js'

/** Options of {@link IdempotencyStore.begin}. */
export interface BeginOptions {
  /** The caller's payload hash (`hashPayload(part)`): a record written with another is a mismatch. Omitted: not checked. */
  payloadHash?: string
  /** The session whose lease the in-progress record carries, so it goes when the caller dies. */
  session?: Session
  /** Without `session`: TTL in seconds of the lease the store grants for this call (default 10). */
  leaseTtl?: number
}

/** Options of {@link IdempotencyStore.complete}. */
export interface CompleteOptions {
  /** Seconds the completed record is kept, on a lease of its own; 0: only handed to callers waiting now. */
  ttl: number
}

/** Options of {@link IdempotencyStore.fail}. */
export interface FailOptions {
  /** Hand this error to the callers waiting now (as a {@link SingleFlightError}) before the record goes. */
  error?: unknown
}

/** What a wait on an in-progress record ends with. `gone`: the owner failed or died — begin again. */
export type WaitOutcome =
  | { status: 'completed'; result: unknown; revision: bigint }
  | { status: 'failed'; error: SingleFlightError }
  | { status: 'gone' }

/** What {@link IdempotencyStore.begin} found. */
export type BeginResult =
  | { status: 'owned'; claim: IdempotencyClaim }
  | { status: 'completed'; result: unknown; revision: bigint }
  | { status: 'failed'; error: SingleFlightError }
  | { status: 'in-progress'; fence: bigint; wait(options?: WaitOptions): Promise<WaitOutcome> }

/** What a begin's span records for each status: a record found completed or failed is a duplicate call. */
const BEGIN_OUTCOME: Record<BeginResult['status'], Outcome> = {
  owned: 'acquired',
  completed: 'duplicate',
  failed: 'duplicate',
  'in-progress': 'in_progress',
}

/** Longest leader error message a record carries. */
const MAX_ERROR_MESSAGE = 4096

/**
 * The right to run the call of one idempotency key: an in-progress record on the caller's lease.
 * Only the store that issued it can complete or fail it, and every write it makes is fenced by
 * the record's create revision, so a duplicate can never change or delete the owner's record.
 */
export class IdempotencyClaim {
  private done = false

  /** @internal Issued by {@link IdempotencyStore.begin} only. */
  constructor(
    /** @internal */ readonly store: IdempotencyStore,
    /** The idempotency key. */
    readonly key: string,
    /** @internal */ readonly own: OwnedKey,
    /** @internal */ readonly hash: string | undefined,
    /** @internal Whether the store granted the session for this claim (and ends it with the claim). */
    readonly ownsSession: boolean,
  ) {}

  /** The record's etcd key, `<prefix>/<key>`: its create revision is the {@link fence}. */
  get recordKey(): string {
    return this.own.key
  }

  /** The record's create revision: strictly increasing across successive owners of this key. */
  get fence(): bigint {
    return this.own.createRevision
  }

  /** Aborted when the claim's lease is lost: a duplicate may then take the key, so stop writing. */
  get signal(): AbortSignal {
    return this.own.session.signal
  }

  /** True once completed or failed. */
  get finished(): boolean {
    return this.done
  }

  /** @deprecated Use {@link finished}: "settle" is the queue's word (ack/nack a message). */
  get settled(): boolean {
    return this.finished
  }

  /** A compare that holds while this claim is current: put it in your Txns to write only while you own the key. */
  ownerCompare(): Compare {
    return this.own.ownerCompare()
  }

  /** An etcd3 transaction builder guarded by this claim (see `Mutex.fenced`): writes only while you own the key. */
  fenced(): ComparatorBuilder {
    return this.own.fenced()
  }

  /** @internal Marks the claim finished (completed or failed); throws if it already was. */
  finish(op: string): void {
    if (this.done)
      throw new InvalidStateError(
        `idempotency key ${JSON.stringify(this.key)}: ${op}() on a claim that was already completed or failed; begin() again for a new claim`,
      )
    this.done = true
  }
}

/**
 * Idempotency records in etcd under `prefix`: `begin` a key and you either own it (run the work,
 * then `complete` or `fail`), or find it completed (the stored result), or find it in progress
 * (wait for the result: a watch, no polling). An in-progress record lives on the owner's lease,
 * so a crashed owner's key is free again as soon as its lease ends; a completed one lives `ttl`
 * seconds on a lease of its own. No decision reads a clock.
 */
export class IdempotencyStore {
  private readonly ks: Keyspace
  /** Watches on in-progress records, shared by this process's waiters of each record. */
  private readonly waits = new Map<string, { outcome: Promise<WaitOutcome>; waiters: number; stop: AbortController }>()

  constructor(
    readonly client: Namespace,
    /** Records live at `<prefix>/<key>`. */
    readonly prefix: string,
  ) {
    checkClient(client, 'IdempotencyStore')
    checkName(prefix, 'IdempotencyStore prefix')
    this.ks = keyspace(client)
  }

  /**
   * Claims `key`, or reports what is there: one Txn (create the in-progress record if absent,
   * else read it). Throws {@link IdempotencyKeyMismatchError} when the record was written with
   * another payload hash — nothing is run then.
   */
  async begin(key: string, options?: BeginOptions): Promise<BeginResult> {
    const o = checkOptions(options, 'IdempotencyStore.begin')
    checkName(key, 'idempotency key')
    const recordKey = checkName(idempotencyKeys.record(this.prefix, key), 'idempotency record key')
    const hash = checkHash(o.payloadHash)
    if (o.session !== undefined) checkSession(o.session, 'IdempotencyStore.begin')
    const session = o.session ?? (await Session.create(this.client, { ttl: checkLeaseTtl(o.leaseTtl) }))
    const ownsSession = o.session === undefined
    const probe = startWait('idempotency', key)
    try {
      const found = await this.claimOrRead(key, recordKey, hash, session, ownsSession)
      if (ownsSession && found.status !== 'owned') await session.close().catch(() => {})
      probe?.end(BEGIN_OUTCOME[found.status], found.status === 'owned' ? found.claim.fence : undefined)
      return found
    } catch (err) {
      probe?.fail(err)
      // A put whose answer was lost may have landed: revoking the lease takes it away again.
      if (ownsSession) await session.close().catch(() => {})
      throw err
    }
  }

  /**
   * Stores `result` for `ttl` seconds in place of the claim's in-progress record (fenced by its
   * create revision) and hands it to every caller waiting. With `ttl` 0 the waiting callers get
   * it and the record goes at once. Throws `IdempotencyResultNotStorableError` before writing
   * anything when etcd cannot keep the result (the claim stays open: `fail` it), and
   * {@link IdempotencyClaimLostError} when the claim's lease ended meanwhile.
   */
  async complete(claim: IdempotencyClaim, result: unknown, options: CompleteOptions): Promise<void> {
    this.checkClaim(claim, 'complete')
    const { ttl } = checkOptions(options, 'IdempotencyStore.complete')
    checkRecordTtl(ttl)
    const value = encodeRecord({ state: 'completed', ...hashField(claim.hash), result })
    claim.finish('complete')
    try {
      if (ttl > 0) await this.keep(claim, value, ttl)
      else await this.handOver(claim, value)
    } finally {
      // The record no longer needs the claim's lease: it was moved to its own, or went.
      if (claim.ownsSession) await claim.own.session.close().catch(() => {})
    }
  }

  /**
   * Gives the claim up: deletes the in-progress record (only this claim's, fenced by its create
   * revision), so the next caller of the key runs the work. With `error`, the callers waiting now
   * get it first. Never throws for etcd trouble: a record it cannot delete is recorded on the
   * session as stranded and goes when the lease ends.
   */
  async fail(claim: IdempotencyClaim, options?: FailOptions): Promise<void> {
    this.checkClaim(claim, 'fail')
    const o = checkOptions(options, 'IdempotencyStore.fail')
    claim.finish('fail')
    if (o.error !== undefined) await this.publishFailure(claim, toSharedError(o.error)).catch(() => {})
    if (claim.ownsSession) {
      // Revoking the lease removes the record; if that fails, the lease (no keepalive any more) does.
      await claim.own.session.close().catch(() => {})
      return
    }
    await claim.own.abandon()
  }

  private async claimOrRead(
    key: string,
    recordKey: string,
    hash: string | undefined,
    session: Session,
    ownsSession: boolean,
  ): Promise<BeginResult> {
    session.signal.throwIfAborted()
    const owner = ownerId()
    const value = encodeRecord({ state: 'in-progress', ...hashField(hash), owner })
    const ks = this.ks
    // Safe to resend: a resent Txn finds the record with our owner id and takes it as ours.
    const absent = ks.compare(recordKey, 'Version', '==', 0)
    const res = await createOnLease(
      session,
      recordKey,
      [absent],
      { mine: ks.put(recordKey, value, session.leaseId) },
      { record: ks.get(recordKey) },
      IDEMPOTENT,
    )
    if (res.succeeded) return this.owned(key, recordKey, res.revision, hash, session, ownsSession)
    const kv = res.results.record.kvs[0]
    const record = decodeRecord(kv)
    if (record.state === 'in-progress' && record.owner === owner)
      return this.owned(key, recordKey, kv.createRevision, hash, session, ownsSession)
    if (hash !== undefined && record.hash !== undefined && record.hash !== hash) {
      throw new IdempotencyKeyMismatchError(
        `idempotency key ${JSON.stringify(key)} was used before with a different payload (hash ${record.hash}, this call ${hash}); nothing was run. Use a new key for a different request, or leave the payload out of the check`,
      )
    }
    if (record.state === 'in-progress') {
      return { status: 'in-progress', fence: kv.createRevision, wait: (options) => this.waitObserved(key, kv, res.revision, options) }
    }
    return finishedOutcome(record, kv)
  }

  private owned(
    key: string,
    recordKey: string,
    createRevision: bigint,
    hash: string | undefined,
    session: Session,
    ownsSession: boolean,
  ): BeginResult {
    return { status: 'owned', claim: new IdempotencyClaim(this, key, new OwnedKey(session, recordKey, createRevision), hash, ownsSession) }
  }

  /**
   * Waits until the in-progress record `seen` (read at `seenAt`) completes, fails or goes. A
   * watch that etcd ends (e.g. compaction) reports `gone`: beginning again reads afresh. A later
   * waiter may join a watch started from an earlier `seenAt`: it saw the record still in
   * progress, so every outcome that watch can report comes after its own read too.
   */
  /** {@link waitFor} in a wait span of its own (the caller's key as its name). */
  private async waitObserved(key: string, seen: KeyValue, seenAt: bigint, options?: WaitOptions): Promise<WaitOutcome> {
    const probe = startWait('idempotency', key)
    try {
      const outcome = await this.waitFor(seen, seenAt, options)
      probe?.end(outcome.status === 'gone' ? 'gone' : 'duplicate')
      return outcome
    } catch (err) {
      probe?.fail(err)
      throw err
    }
  }

  private async waitFor(seen: KeyValue, seenAt: bigint, options?: WaitOptions): Promise<WaitOutcome> {
    const { signal } = checkOptions(options, 'in-progress wait')
    signal?.throwIfAborted()
    // Waiters of one record in this process share one watch: one event to handle, not one each.
    const id = `${seen.key}\0${seen.createRevision}`
    let shared = this.waits.get(id)
    if (!shared) {
      const stop = new AbortController()
      const entry = { outcome: this.watchOutcome(seen, seenAt, stop.signal), waiters: 0, stop }
      entry.outcome.then(
        () => this.waits.get(id) === entry && this.waits.delete(id),
        () => this.waits.get(id) === entry && this.waits.delete(id),
      )
      shared = entry
      this.waits.set(id, entry)
    }
    const joined = shared
    joined.waiters++
    try {
      return await untilAborted(joined.outcome, signal)
    } finally {
      // The last waiter to leave ends the watch (a later one starts a new one).
      if (--joined.waiters === 0) {
        joined.stop.abort()
        if (this.waits.get(id) === joined) this.waits.delete(id)
      }
    }
  }

  /** The outcome of the in-progress record `seen`, from one watch (ended by `signal`). */
  private async watchOutcome(seen: KeyValue, seenAt: bigint, signal: AbortSignal): Promise<WaitOutcome> {
    const sameRecord = (kv?: KeyValue) => kv !== undefined && kv.createRevision === seen.createRevision
    const decide = (change: KeyChange): WaitOutcome | undefined => {
      if (change.kv) {
        if (!sameRecord(change.kv)) return { status: 'gone' }
        const record = decodeRecord(change.kv)
        return record.state === 'in-progress' ? undefined : finishedOutcome(record, change.kv)
      }
      // Deleted: after a result was handed over (ttl 0), the value before the delete carries it.
      if (!sameRecord(change.prev)) return { status: 'gone' }
      const before = decodeRecord(change.prev!)
      return before.state === 'in-progress' ? { status: 'gone' } : finishedOutcome(before, change.prev!)
    }
    try {
      return await waitChange(this.ks, seen, seenAt, decide, signal)
    } catch (err) {
      if (err instanceof WatchLostError && err.reason === 'ended') return { status: 'gone' }
      throw err
    }
  }

  /** Moves the record to a lease of `ttl` seconds with its final value (the lease is granted first). */
  private async keep(claim: IdempotencyClaim, value: string, ttl: number): Promise<void> {
    const ks = this.ks
    let leaseId: string
    try {
      leaseId = await grantLease(this.client, ttl)
    } catch (err) {
      await claim.own.abandon() // nothing stored: free the key for the next caller
      throw err
    }
    let res
    try {
      // Safe to resend: the put keeps the create revision, so a second one changes nothing.
      res = await ks.txn([claim.ownerCompare()], [ks.put(claim.own.key, value, leaseId)], [], IDEMPOTENT)
    } catch (err) {
      // Unknown outcome: the lease may carry the record now (so it stays), and the session may
      // still carry the in-progress record (so it must not be lent again).
      claim.own.session.strand(claim.own.key)
      throw err
    }
    if (!res.succeeded) {
      await revokeLease(this.client, leaseId).catch(() => {}) // an empty lease: it would expire anyway
      throw this.lost(claim)
    }
  }

  /** ttl 0: puts the final value (waiting callers see it), then deletes the record. */
  private async handOver(claim: IdempotencyClaim, value: string): Promise<void> {
    const ks = this.ks
    try {
      const res = await ks.txn([claim.ownerCompare()], [ks.put(claim.own.key, value, claim.own.session.leaseId)])
      if (!res.succeeded) throw this.lost(claim)
    } finally {
      // Handed over or not, the record goes now (deleted, or stranded until its lease ends).
      if (!claim.ownsSession) await claim.own.abandon()
    }
  }

  /** Puts a failed state for the callers waiting now (fenced; nothing if the claim is lost). */
  private async publishFailure(claim: IdempotencyClaim, error: SharedError): Promise<void> {
    const ks = this.ks
    const shared = { ...error, message: error.message.slice(0, MAX_ERROR_MESSAGE) }
    const value = encodeRecord({ state: 'failed', ...hashField(claim.hash), error: shared })
    await ks.txn([claim.ownerCompare()], [ks.put(claim.own.key, value, claim.own.session.leaseId)])
  }

  private lost(claim: IdempotencyClaim) {
    return new IdempotencyClaimLostError(
      `idempotency key ${JSON.stringify(claim.key)}: the in-progress record of this claim is gone (its lease ${claim.own.session.leaseHex} ended while the work ran), so another caller may have run it too; nothing was stored. Use a lease TTL that outlasts pauses, and fence side effects with claim.ownerCompare()`,
    )
  }

  private checkClaim(claim: IdempotencyClaim, op: string) {
    if (!(claim instanceof IdempotencyClaim) || claim.store !== this) {
      throw new InvalidArgumentError(
        `IdempotencyStore.${op} needs a claim that this store's begin() returned (status 'owned'), got ${claim === null ? 'null' : typeof claim}`,
      )
    }
  }
}
