import { closedSignal } from '../core/client-closed.js'
import { KeyExistsError } from '../errors.js'
import { permitKeys, unixNano } from '../core/keys.js'
import { IDEMPOTENT, type KeyValue } from '../core/kv.js'
import { createOnLease, lostWhileWaiting, OwnedKey } from '../wait/owned-key.js'
import { PermitStore, type Plan, type SlotChoice, type StepResult, type Taker, type View } from './permit-txn.js'
import type { Session } from '../session/session.js'
import { timeoutSignal } from '../timers.js'
import { waitGone, waitRangeChange } from '../wait/wait.js'

/**
 * The FIFO queue and the permit slots that {@link Semaphore} and {@link RateLimiter} share.
 * Under `<name>/`: `config` (the settings every contender compares), `waiters/<unixNano>` (one
 * key per queued call, on the caller's lease) and one key per permit in use, named by its slot
 * number (`holders/<i>` or `tokens/<i>`). A permit is taken by one Txn that puts its slot key,
 * compared on the slot's mod revision, so two calls can never take one slot.
 *
 * Fairness without a thundering herd: a call takes a slot at once only while nobody queues;
 * otherwise it queues, and each waiter watches only its predecessor (as a Mutex waiter does).
 * Only the head of the queue watches the slots, and it takes a slot and deletes its own queue
 * key in one Txn — that delete is what wakes the next waiter. So a release wakes exactly one
 * call: the head, which can proceed.
 *
 * Which slot may be taken, and when, is the primitive's {@link SlotPolicy}. A grant is kept only
 * if the grant Txn's own read of the slots, right after its put, shows at most the policy's
 * `capacity` keys; else it is given back at once. Slot numbers alone would not bound the count
 * once `permits` (or `burst`) is lowered: keys of the higher slots stay until their holders go,
 * and a call that knew nothing of them could fill the lower ones beside them. Since every kept
 * grant saw at most `capacity` keys when it committed, including every earlier grant still
 * held, no more than `capacity` are ever kept at once.
 */

/** What a policy decides from the slots it saw. */
export type Decision =
  /** Take these slots together (one Txn). */
  | { kind: 'take'; slots: SlotChoice[] }
  /** Delete this slot's key (an expired rate-limiter token), then look again. */
  | { kind: 'expire'; slot: SlotChoice }
  /** Nothing to take: look again when a slot seen changes, or at `wakeAt` (`performance.now()`). */
  | { kind: 'wait'; wakeAt?: number }

export type { SlotChoice, Taker, View } from './permit-txn.js'

/** How a primitive picks its slots. */
export interface SlotPolicy {
  /** The slots' key prefix. */
  readonly slots: string
  /** Most slot keys at once (whatever their numbers): `permits`, or a rate limiter's `burst + 1`. */
  readonly capacity: number
  /**
   * Slots to try without having read anything new (the first Txn of a call that wants one
   * slot, the Txn of a waiter whose predecessor went): none while the last read showed keys
   * above `capacity`, since only a count of a fresh read can tell what may be taken then.
   */
  guesses(): SlotChoice[]
  /** Decides from the slots a read returned (`view.receivedAt`: when its answer came, `performance.now()`). */
  decide(view: View, need: number): Decision
  /** Records what a read showed, without deciding: the next guesses start from it. */
  saw(view: View): void
  /**
   * Whether a new head wants the slots as they were when its predecessor left, dated by when
   * it saw that happen (a rate limiter's clock starts there rather than one read later).
   */
  readonly observesHandoff?: boolean
}

/** Slots taken: their keys and the Txn's revision (each slot's mod revision). */
export interface TakenSlots {
  keys: string[]
  revision: bigint
}

/** A call that could not take its slots without queueing. */
export interface Blocked extends View {
  /** Calls queued ahead (0 when the slots are simply in use). */
  waiters: bigint
  decision: Decision
}

/** Blind slots tried by the first Txn (nested Txns: the first one that is free is taken). */
const MAX_GUESSES = 16
/** Fast-path Txns before a call queues instead (each one saw the slots move under it). */
const MAX_FAST_STEPS = 8
/** Fresh queue keys tried before giving up on nanosecond clashes. */
const MAX_ENQUEUE_ATTEMPTS = 16

/** One primitive's queue of calls for the permit slots of `name` (see the file comment). */
export class PermitQueue {
  private readonly store: PermitStore
  /** Calls of this object queued right now. */
  private queued = 0
  /** Whether a call of this object is on the fast path right now. */
  private trying = false

  constructor(
    client: Session['client'],
    readonly name: string,
    /** 'semaphore' or 'rate limiter', for messages. */
    kind: string,
    /** This contender's settings as stored, e.g. `permits=5`. */
    readonly config: string,
    private readonly policy: SlotPolicy,
  ) {
    this.store = new PermitStore(client, name, kind, config, policy.slots)
  }

  /** Creates or checks the stored settings once per process (see {@link PermitStore.ready}). */
  ready(): Promise<void> {
    return this.store.ready()
  }

  /** Takes `need` slots if that is possible without queueing; else reports what blocks. */
  async decide(need: number, taker: () => Taker): Promise<{ granted: TakenSlots } | { blocked: Blocked }> {
    await this.store.ready()
    let plan: Plan = { take: this.guesses(need) }
    for (let step = 0; step <= MAX_FAST_STEPS; step++) {
      const t = taker()
      let res = await this.store.step(this.store.nobodyQueues(), plan, t)
      if (res.taken) {
        const grant = await this.kept(res, t)
        if (grant) return { granted: grant }
        res = withoutTaken(res)
      }
      if (!res.ok) {
        this.policy.saw(res)
        const waiters = res.failed!.waiters.count
        if ((await this.store.settingsAgree(res.config)) && waiters > 0n)
          return { blocked: { ...res, waiters, decision: { kind: 'wait' } } }
        continue
      }
      const decision = this.policy.decide(res, need)
      if (decision.kind === 'wait' || step === MAX_FAST_STEPS) return { blocked: { ...res, waiters: 0n, decision } }
      plan = decision.kind === 'take' ? { take: [decision.slots] } : { expire: decision.slot }
    }
    // Settings created or the queue emptied under us every time: let the queue sort it out.
    const now = await this.store.ks.range(this.store.slots, { prefix: true })
    return { blocked: { slots: now.kvs, revision: now.revision, receivedAt: performance.now(), waiters: 0n, decision: { kind: 'wait' } } }
  }

  /**
   * Takes `need` slots: at once if nobody queues and they are free, else after queueing behind
   * every earlier call. On abort or a lost session the queue key goes and nothing is taken.
   */
  async acquire(
    need: number,
    waiterSession: () => Promise<Session>,
    taker: () => Taker,
    options: { signal?: AbortSignal; onWaiting?: () => void },
  ): Promise<TakenSlots> {
    // Calls of this object already queue, or try the fast path: this one queues at once (a
    // burst of calls would otherwise each pay for a Txn that can only fail).
    if (this.queued === 0 && !this.trying) {
      this.trying = true
      try {
        const tried = await this.decide(need, taker)
        if ('granted' in tried) return tried.granted
      } finally {
        this.trying = false
      }
    }
    options.onWaiting?.()
    options.signal?.throwIfAborted()
    this.queued++
    try {
      const session = await waiterSession()
      for (;;) {
        const grant = await this.queue(need, session, taker, options.signal)
        if (grant) return grant
      }
    } finally {
      this.queued--
    }
  }

  /**
   * Queues once and waits for the slots; undefined when the slots taken had to be given back
   * (see {@link kept}): our queue key went with that Txn, so the call queues again.
   */
  private async queue(need: number, session: Session, taker: () => Taker, signal?: AbortSignal): Promise<TakenSlots | undefined> {
    await this.store.ready()
    const queued = await this.enqueue(need, session)
    const own = queued.own
    this.policy.saw(queued.view)
    let pending: { step: Promise<StepResult>; taker: Taker } | undefined
    const send = (step: (t: Taker) => Promise<StepResult>) => {
      const t = taker()
      pending = { step: step(t), taker: t }
      return pending.step
    }
    try {
      return await this.whileQueued(own, signal, async (wait) => {
        let predecessor: KeyValue | undefined = queued.predecessor
        let view: View = queued.view
        for (;;) {
          let res: StepResult
          // Once the wait is over (abort, lost session) no new Txn may take slots: the caller
          // is about to delete our queue key and report failure. A Txn in flight then may still
          // take some: the outcome is read from `pending`.
          if (predecessor) {
            const goneAt = await waitGone(this.store.ks, this.store.waiters, predecessor, view.revision, wait)
            const seenAt = performance.now()
            wait.throwIfAborted()
            res = await send((t) => this.firstInLineStep(own, need, goneAt, seenAt, t))
            if (!res.ok) predecessor = res.failed!.older.kvs[0]
            else predecessor = undefined
          } else {
            const decision = this.policy.decide(view, need)
            if (decision.kind === 'wait') {
              view = await this.waitForSlots(view, decision.wakeAt, wait)
              continue
            }
            wait.throwIfAborted()
            // A view may be stale: the guesses behind the choice spare a round trip when it is.
            const plan = decision.kind === 'take' ? { take: [decision.slots, ...this.guesses(need)] } : { expire: decision.slot }
            res = await send((t) => this.store.step(this.store.stillQueued(own), plan, t, [this.store.ks.deleteOp(own.key)]))
          }
          if (res.taken) return await this.kept(res, pending!.taker)
          if (!res.ok) {
            if (res.failed!.mine.kvs.length === 0) throw this.lost(session)
            await this.store.settingsAgree(res.config)
          }
          view = res
        }
      })
    } catch (err) {
      const last = await pending?.step.catch(() => undefined)
      const grant = last?.taken ? await this.kept(last, pending!.taker) : undefined
      if (grant) return grant
      await own.abandon()
      throw err
    }
  }

  /**
   * The grant of a step that took slots, if its read right after the put shows no more than
   * `capacity` slot keys. Else (keys above `capacity` held since it was lowered, or a call that
   * guessed without knowing of them) the slots are given back at once — they were never
   * granted — and undefined is returned.
   */
  private async kept(res: StepResult, taker: Taker): Promise<TakenSlots | undefined> {
    const grant = granted(res)
    const held = res.slots.filter((kv) => permitKeys.slotIndex(this.policy.slots, kv.key) !== undefined).length
    if (held <= this.policy.capacity) return grant
    this.policy.saw(withoutTaken(res))
    const ks = this.store.ks
    const giveBack = grant.keys.map((key) => ks.txnOp([ks.compare(key, 'Mod', '==', grant.revision)], [ks.deleteOp(key)]))
    // Unanswered, it may have applied or not: the slots are then the taker's to sort out.
    await ks.txn([], giveBack, [], IDEMPOTENT).catch(() => taker.ambiguous(grant.keys).catch(() => {}))
    return undefined
  }

  /**
   * Runs `wait` until it ends, the caller aborts, or the session ends (then: lost). No watch on
   * our own key (as `OwnedKey.whileAlive` keeps): etcd3 attaches a client's watches one at a
   * time, so a burst of waiters would queue twice as many attaches and every handoff would
   * wait longer. Our key is compared by every step instead, and its lease's loss is the
   * session's signal.
   */
  private async whileQueued<T>(own: OwnedKey, signal: AbortSignal | undefined, wait: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const session = own.session.signal
    try {
      return await wait(signal ? AbortSignal.any([session, signal]) : session)
    } catch (err) {
      if (signal?.aborted) throw signal.reason
      // A closed client ends its sessions too: report the close, as every other wait does.
      const closed = closedSignal(own.session.client)
      if (closed.aborted) throw closed.reason
      if (session.aborted) throw this.lost(own.session, session.reason)
      throw err
    }
  }

  /** Puts our queue key, reading in the same Txn the youngest older waiter and the slots. */
  private async enqueue(need: number, session: Session) {
    session.signal.throwIfAborted()
    for (let attempt = 0; attempt < MAX_ENQUEUE_ATTEMPTS; attempt++) {
      const key = `${this.store.waiters}${unixNano()}`
      const ks = this.store.ks
      // The reads run before the put: the older waiter they find is our predecessor.
      const success = {
        predecessor: ks.get(this.store.waiters, { prefix: true, sort: ['Create', 'Descend'], limit: 1 }),
        slots: ks.get(this.store.slots, { prefix: true }),
        mine: ks.put(key, String(need), session.leaseId),
      }
      const failure = { collided: ks.get(key, { countOnly: true }), config: ks.get(this.store.configKey) }
      const res = await createOnLease(session, key, [ks.compare(key, 'Version', '==', 0), this.store.settingsCompare()], success, failure)
      const receivedAt = performance.now()
      if (res.succeeded) {
        const own = new OwnedKey(session, key, res.revision)
        const view = { slots: res.results.slots.kvs, revision: res.revision, receivedAt }
        return { own, predecessor: res.results.predecessor.kvs[0], view }
      }
      if (res.results.collided.count === 0n) await this.store.settingsAgree(res.results.config.kvs[0])
    }
    throw new KeyExistsError(
      `${this.store.kind} ${JSON.stringify(this.name)}: ${MAX_ENQUEUE_ATTEMPTS} fresh queue keys in a row already existed; check for clock problems or another writer of ${this.store.waiters} keys`,
    )
  }

  /**
   * The first step after the predecessor went (at revision `goneAt`, seen at `seenAt`): if no
   * older waiter is left, try the policy's guesses at once (one Txn: a handoff costs one round
   * trip), and read the slots — also as of `goneAt` when the policy dates its observations from
   * the handoff. Else the failure read names the next older waiter.
   */
  private async firstInLineStep(own: OwnedKey, need: number, goneAt: bigint, seenAt: number, taker: Taker): Promise<StepResult> {
    // The read as of `goneAt` goes beside the write Txn, not inside it: a write Txn that ranges at
    // a pinned revision can make members diverge on etcd before 3.7 (etcd #18667, fixed by PR
    // #21432) when the revision is compacted on some members and not yet on others.
    // It never fails the step: the Txn may have taken a permit meanwhile, which a thrown read
    // would hide from the caller. Without it (compacted away, etcd did not answer) the policy
    // does without this observation, as it does on every path that has none.
    const before = this.policy.observesHandoff
      ? this.store.ks.range(this.store.slots, { prefix: true, revision: goneAt }).catch(() => undefined)
      : undefined
    const [res, seen] = await Promise.all([
      this.store.step(this.store.firstInLine(own), { take: this.guesses(need) }, taker, [this.store.ks.deleteOp(own.key)]),
      before,
    ])
    return seen ? { ...res, before: { slots: seen.kvs, receivedAt: seenAt } } : res
  }

  /**
   * Waits until a slot seen in `view` changes or `wakeAt` passes; returns the view to decide on
   * next. A timer wake keeps the view (a Txn on stale slots fails and reads them anew); a delete
   * event removes the deleted slot from it, dated when the event arrived; else the slots are read.
   */
  private async waitForSlots(view: View, wakeAt: number | undefined, signal: AbortSignal): Promise<View> {
    // A refill can be due months ahead (a long `per`): no AbortSignal.timeout(), which throws past 2^32 − 1 ms.
    const timer = wakeAt === undefined ? undefined : timeoutSignal(wakeAt - performance.now())
    let change: { deleted?: string; revision?: bigint }
    try {
      change = await waitRangeChange(
        this.store.ks,
        this.store.slots,
        view.revision,
        view.slots,
        timer ? AbortSignal.any([signal, timer.signal]) : signal,
      )
    } catch (err) {
      if (signal.aborted || !timer?.signal.aborted) throw err
      return view
    } finally {
      timer?.cancel()
    }
    if (change.deleted !== undefined && change.revision !== undefined) {
      return { slots: view.slots.filter((kv) => kv.key !== change.deleted), revision: change.revision, receivedAt: performance.now() }
    }
    const now = await this.store.ks.range(this.store.slots, { prefix: true })
    return { slots: now.kvs, revision: now.revision, receivedAt: performance.now() }
  }

  /** Blind options for a first Txn: one guessed slot each (only when one slot is wanted). */
  private guesses(need: number): SlotChoice[][] {
    return need === 1 ? distinct(this.policy.guesses()).map((c) => [c]) : []
  }

  private lost(session: Session, cause?: unknown) {
    return lostWhileWaiting(`${this.store.kind} ${JSON.stringify(this.name)}`, session, 'acquire', cause)
  }
}

/** The slots a step took, as a grant. */
function granted(res: StepResult): TakenSlots {
  return { keys: res.taken!.map((c) => c.key), revision: res.revision }
}

/** A step's view with the slots it took given back. */
function withoutTaken(res: StepResult): StepResult {
  const taken = new Set(res.taken?.map((c) => c.key))
  return { ...res, taken: undefined, slots: res.slots.filter((kv) => !taken.has(kv.key)) }
}

/** The first choice per key, at most {@link MAX_GUESSES}. */
function distinct(choices: SlotChoice[]): SlotChoice[] {
  const seen = new Set<string>()
  return choices.filter((c) => !seen.has(c.key) && seen.add(c.key)).slice(0, MAX_GUESSES)
}
