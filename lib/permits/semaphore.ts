import type { ComparatorBuilder } from 'etcd3'
import { checkInteger, checkOptions, checkSession } from '../core/check.js'
import { InvalidStateError, LockedError, LockReleasedError } from '../errors.js'
import { permitKeys, unixNano } from '../core/keys.js'
import { checkName, keyspace, type Compare, type KeyValue, type Keyspace } from '../core/kv.js'
import { MAX_PERMITS } from '../limits.js'
import { CallGuard, OwnedKey, ownerCompareOf } from '../wait/owned-key.js'
import { PermitQueue, type Decision, type TakenSlots, type SlotChoice, type SlotPolicy, type Taker, type View } from './permit-queue.js'
import { heldSignal } from '../fencing.js'
import type { Session } from '../session/session.js'
import type { LockOptions } from '../wait/wait.js'
import { startHold, startWait, type HoldProbe } from '../telemetry/coordination.js'

/**
 * A counting semaphore: at most `permits` holders at once, across every process. Go's etcd
 * recipes have none; the layout is ours (see `permitKeys`): `<name>/config` = `permits=<n>`,
 * `<name>/waiters/<unixNano>` (queued calls), `<name>/holders/<slot>` (permits in use, on the
 * holder's lease — a crashed holder's permit goes with its lease).
 *
 * FIFO by queueing order, and a release wakes one call: the head of the queue, which takes the
 * freed permit (see {@link PermitQueue}). Every grant creates its slot key, so its create
 * revision — the {@link fence} — is strictly increasing across grants of this semaphore.
 *
 * Every contender must use the same `permits`: it is stored by the first one, compared by every
 * Txn, and a contender with another number fails with a `ConfigMismatchError` having written
 * nothing. To change it: `etcdctl put <name>/config permits=<n>`, then deploy the new number
 * (contenders with the old one fail meanwhile, never over-admit). After lowering it, holders
 * of the higher slots count until they release: a permit is granted only while fewer than
 * `permits` are held, whatever their slots.
 */
export class Semaphore {
  private readonly ks: Keyspace
  private readonly queue: PermitQueue
  private readonly guard: CallGuard
  private readonly slots: string
  private own?: OwnedKey
  /** The span and timer of the current hold (undefined when telemetry is off). */
  private hold?: HoldProbe

  constructor(
    readonly session: Session,
    /** The semaphore name; its keys live under `<name>/`. */
    readonly name: string,
    /** How many holders at once; every contender of `name` must use the same number. */
    readonly permits: number,
  ) {
    checkSession(session, 'Semaphore')
    checkName(name, 'Semaphore name')
    checkPermits(permits)
    this.ks = keyspace(session.client)
    this.slots = permitKeys.holders(name)
    this.queue = new PermitQueue(
      session.client,
      name,
      'semaphore',
      permitKeys.semaphoreSettings(permits),
      new FreePermits(this.slots, permits),
    )
    this.guard = new CallGuard(
      (op) =>
        new InvalidStateError(
          `Semaphore ${JSON.stringify(name)}: ${op}() called while another call on the same object is running; use one Semaphore object per concurrent caller`,
        ),
    )
  }

  /** The permit's key, `<name>/holders/<slot>` ('' when not held). */
  get key(): string {
    return this.own?.key ?? ''
  }

  /** True between a successful acquire/tryAcquire and release (as far as this process knows). */
  get held(): boolean {
    return this.own !== undefined
  }

  /**
   * The fencing token of this hold: the permit key's create revision, strictly increasing
   * across all grants of this semaphore. Throws {@link LockReleasedError} when not held.
   */
  get fence(): bigint {
    return this.heldKey('fence').createRevision
  }

  /**
   * Aborted when this permit's lease is lost (the session's signal, {@link LeaseLostError} as
   * reason), and already aborted with a {@link LockReleasedError} when no permit is held: read it before
   * each write of the hold.
   */
  get signal(): AbortSignal {
    return heldSignal(() => this.heldKey('signal'))
  }

  /** Blocks until one of the permits is held by this session. FIFO; aborting leaves no key. */
  async acquire(options?: LockOptions): Promise<void> {
    const { signal, onWaiting } = checkOptions(options, 'Semaphore.acquire')
    this.notHeld('acquire')
    const probe = startWait('semaphore', this.name)
    try {
      await this.acquireOnce(signal, onWaiting)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', this.own?.createRevision)
  }

  private acquireOnce(signal: AbortSignal | undefined, onWaiting: (() => void) | undefined) {
    return this.guard.run('acquire', async () => {
      signal?.throwIfAborted()
      this.session.signal.throwIfAborted()
      this.granted(
        await this.queue.acquire(
          1,
          async () => this.session,
          () => this.taker(),
          { signal, onWaiting },
        ),
      )
    })
  }

  /** Takes a free permit if nobody is queued for one, else throws {@link LockedError}; leaves no key behind. */
  async tryAcquire(): Promise<void> {
    this.notHeld('tryAcquire')
    const probe = startWait('semaphore', this.name)
    try {
      await this.tryAcquireOnce()
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', this.own?.createRevision)
  }

  private tryAcquireOnce() {
    return this.guard.run('tryAcquire', async () => {
      this.session.signal.throwIfAborted()
      const tried = await this.queue.decide(1, () => this.taker())
      if ('granted' in tried) return this.granted(tried.granted)
      const why = tried.blocked.waiters > 0n ? `${tried.blocked.waiters} call(s) are queued` : `all ${this.permits} permits are held`
      throw new LockedError(`semaphore ${JSON.stringify(this.name)}: ${why}`)
    })
  }

  /** Gives the permit back; deletes its key only if it is still this hold's (fenced by create revision). */
  async release(): Promise<void> {
    await this.heldKey('release').delete()
    this.own = undefined
    this.hold?.end()
    this.hold = undefined
  }

  /** A compare that holds while this hold is current: put it in your Txns to write only while you hold a permit. */
  ownerCompare(): Compare {
    return ownerCompareOf(this.own, this.ks)
  }

  /** An etcd3 transaction builder guarded by this hold (see `Mutex.fenced`). */
  fenced(): ComparatorBuilder {
    return this.heldKey('fenced()').fenced()
  }

  private granted(grant: TakenSlots) {
    this.own = new OwnedKey(this.session, grant.keys[0], grant.revision)
    this.hold = startHold('semaphore', this.name, grant.revision, this.session.signal)
  }

  /** What a grant puts: the session's lease, and a value that tells this call's slot apart. */
  private taker(): Taker {
    const value = `${this.session.leaseHex}/${unixNano()}`
    return { lease: this.session.leaseId, value, ambiguous: (keys) => this.giveBack(keys, value) }
  }

  /**
   * A grant Txn got no answer: any slot it took (it carries `value`) is deleted, since the caller
   * will not learn it holds it; if that fails too, the keys are stranded on the session (its
   * lease, not a later holder, then frees them).
   */
  private async giveBack(keys: string[], value: string) {
    try {
      const ours = (await this.ks.getKeys(keys)).filter((kv) => kv.value.toString() === value)
      for (const kv of ours) await new OwnedKey(this.session, kv.key, kv.createRevision).delete()
    } catch {
      for (const key of keys) this.session.strand(key)
    }
  }

  private notHeld(op: string) {
    if (this.held)
      throw new InvalidStateError(
        `Semaphore ${JSON.stringify(this.name)}: ${op}() on a semaphore this object already holds a permit of; release() first`,
      )
  }

  private heldKey(what: string): OwnedKey {
    if (!this.own) throw new LockReleasedError(`Semaphore ${JSON.stringify(this.name)}: ${what} needs a permit held; call acquire() first`)
    return this.own
  }
}

/**
 * A Semaphore's policy: a free slot below `permits` while fewer than `permits` slot keys are
 * held. Keys above `permits` (held since it was lowered) count too.
 */
class FreePermits implements SlotPolicy {
  /** The slots as last seen: the next blind guesses start from them. */
  private last?: KeyValue[]

  constructor(
    readonly slots: string,
    private readonly permits: number,
  ) {}

  get capacity(): number {
    return this.permits
  }

  /**
   * Without a read: the slots free when last seen; before any read, every slot (up to 16) from a
   * random start. Only likely ones: a Txn with nothing to put is a read, which etcd answers
   * without a raft round and a disk write — the "am I first" Txn of every handoff. None while
   * keys above `permits` were seen: what may be taken then depends on a fresh count.
   */
  guesses(): SlotChoice[] {
    const slot = (i: number) => ({ key: permitKeys.slot(this.slots, i), mod: 0n })
    if (!this.last) {
      const start = Math.floor(Math.random() * this.permits)
      return Array.from({ length: Math.min(this.permits, 16) }, (_, i) => slot((start + i) % this.permits))
    }
    const { free, above } = this.count(this.last)
    return above > 0 ? [] : free.slice(0, 8)
  }

  decide(view: View): Decision {
    this.saw(view)
    const { free, held } = this.count(view.slots)
    return held < this.permits ? { kind: 'take', slots: [free[0]] } : { kind: 'wait' }
  }

  saw({ slots }: View): void {
    this.last = slots
  }

  /** The free slots below `permits`; how many slot keys are held, and how many of them above `permits`. */
  private count(slots: KeyValue[]) {
    const used = new Set<number>()
    for (const kv of slots) {
      const index = permitKeys.slotIndex(this.slots, kv.key)
      if (index !== undefined) used.add(index)
    }
    const free: SlotChoice[] = []
    for (let i = 0; i < this.permits; i++) if (!used.has(i)) free.push({ key: permitKeys.slot(this.slots, i), mod: 0n })
    return { free, held: used.size, above: [...used].filter((i) => i >= this.permits).length }
  }
}

/** `permits` must be a whole number from 1 to {@link MAX_PERMITS}. */
export function checkPermits(permits: unknown): number {
  return checkInteger(permits, 'Semaphore permits', 1, MAX_PERMITS)
}
