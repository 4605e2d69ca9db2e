import { ConfigMismatchError, EtcdUnavailableError, KeyExistsError, SessionExpiredError } from './errors.js'
import { permitKeys, unixNano } from './keys.js'
import { keyspace, prefixEnd, type Compare, type KeyValue, type Keyspace, type Op, type OpResult, type TxnResult } from './kv.js'
import { OwnedKey } from './owned-key.js'
import type { Session } from './session.js'
import { waitGone, waitRangeChange } from './wait.js'

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
 * Which slot may be taken, and when, is the primitive's {@link SlotPolicy}.
 */

/** Take the slot `key` if its mod revision is still `mod` (0n: the slot is free). */
export interface SlotChoice {
  key: string
  mod: bigint
}

/** What a policy decides from the slots it saw. */
export type Decision =
  /** Take these slots together (one Txn). */
  | { kind: 'take'; slots: SlotChoice[] }
  /** Delete this slot's key (an expired rate-limiter token), then look again. */
  | { kind: 'expire'; slot: SlotChoice }
  /** Nothing to take: look again when a slot seen changes, or at `wakeAt` (`performance.now()`). */
  | { kind: 'wait'; wakeAt?: number }

/** How a primitive picks its slots. */
export interface SlotPolicy {
  /** The slots' key prefix. */
  readonly slots: string
  /** Slots to try without having read anything (the first Txn of a call that wants one slot). */
  guesses(): SlotChoice[]
  /** Decides from the slots a read returned (`view.receivedAt`: when its answer came, `performance.now()`). */
  decide(view: View, need: number): Decision
  /**
   * Whether a new head wants the slots as they were when its predecessor left, dated by when
   * it saw that happen (a rate limiter's clock starts there rather than one read later).
   */
  readonly observesHandoff?: boolean
}

/** What a taken slot carries, and what to do when a Txn that may have taken slots got no answer. */
export interface Taker {
  /** The lease to put the slot keys with (undefined: none). */
  lease?: string
  /** The slot keys' value: unique per call, so that an unanswered Txn's slots can be recognised. */
  value: string
  /** The Txn that may have put `value` on these keys got no answer. */
  ambiguous(keys: string[]): Promise<void>
}

/** Slots taken: their keys and the Txn's revision (each slot's mod revision). */
export interface Grant {
  keys: string[]
  revision: bigint
}

/** The slots as a read saw them. */
export interface View {
  slots: KeyValue[]
  revision: bigint
  /** `performance.now()` when the read's answer arrived. */
  receivedAt: number
  /** The slots as they were at an earlier revision that had committed by `receivedAt` (see {@link SlotPolicy.observesHandoff}). */
  before?: { slots: KeyValue[]; receivedAt: number }
}

/** A call that could not take its slots without queueing. */
export interface Blocked extends View {
  /** Calls queued ahead (0 when the slots are simply in use). */
  waiters: bigint
  decision: Decision
}

/** What a step compares besides the settings, and what it reads when that fails. */
interface Guard {
  compares: Compare[]
  reads: Op[]
}

/** Take the first option that fits, or delete an expired slot. */
type Plan = { take: SlotChoice[][] } | { expire: SlotChoice }

interface StepResult extends View {
  /** The guard held (settings match; nobody queues / our queue key is still ours / none older). */
  ok: boolean
  taken?: SlotChoice[]
  /** With `ok` false: the stored settings, and the guard's reads. */
  config?: KeyValue
  failed?: OpResult[]
  /** With `ok`: the results of the extra reads. */
  extra?: OpResult[]
}

/** Blind slots tried by the first Txn (nested Txns: the first one that is free is taken). */
const MAX_GUESSES = 16
/** Fast-path Txns before a call queues instead (each one saw the slots move under it). */
const MAX_FAST_STEPS = 8
/** Fresh queue keys tried before giving up on nanosecond clashes. */
const MAX_ENQUEUE_ATTEMPTS = 16

export class PermitQueue {
  private readonly ks: Keyspace
  private readonly configKey: string
  private readonly waiters: string
  /** Calls of this object queued right now. */
  private queued = 0
  /** Whether a call of this object is on the fast path right now. */
  private trying = false

  constructor(
    client: Session['client'],
    readonly name: string,
    /** 'semaphore' or 'rate limiter', for messages. */
    private readonly kind: string,
    /** This contender's settings as stored, e.g. `permits=5`. */
    readonly config: string,
    private readonly policy: SlotPolicy,
  ) {
    this.ks = keyspace(client)
    this.configKey = permitKeys.config(name)
    this.waiters = permitKeys.waiters(name)
  }

  /**
   * Makes sure the config key exists with our settings, once per client and settings in this
   * process: the first contenders would otherwise all send Txns that fail on the missing key.
   * Every Txn still compares the settings (an operator may change or delete the key).
   */
  ready(): Promise<void> {
    let known = settled.get(this.ks)
    if (!known) settled.set(this.ks, (known = new Map()))
    const id = `${this.configKey}\n${this.config}`
    let pending = known.get(id)
    if (!pending) {
      pending = this.ks
        .txn([this.ks.compare(this.configKey, 'Version', '==', 0)], [this.ks.put(this.configKey, this.config)], [this.ks.get(this.configKey)])
        .then(async (res) => {
          if (!res.succeeded) await this.settingsAgree(res.results[0].range!.kvs[0])
        })
      pending.catch(() => known.delete(id)) // try again next time
      known.set(id, pending)
    }
    return pending
  }

  /** Takes `need` slots if that is possible without queueing; else reports what blocks. */
  async tryTake(need: number, taker: () => Taker): Promise<{ granted: Grant } | { blocked: Blocked }> {
    await this.ready()
    let plan: Plan = { take: this.guesses(need) }
    for (let step = 0; step <= MAX_FAST_STEPS; step++) {
      const res = await this.step(this.nobodyQueues(), plan, taker())
      if (res.taken) return { granted: granted(res) }
      if (!res.ok) {
        const waiters = res.failed![0].range!.count
        if ((await this.settingsAgree(res.config)) && waiters > 0n) return { blocked: { ...res, waiters, decision: { kind: 'wait' } } }
        continue
      }
      const decision = this.policy.decide(res, need)
      if (decision.kind === 'wait' || step === MAX_FAST_STEPS) return { blocked: { ...res, waiters: 0n, decision } }
      plan = decision.kind === 'take' ? { take: [decision.slots] } : { expire: decision.slot }
    }
    // Settings created or the queue emptied under us every time: let the queue sort it out.
    const now = await this.ks.range(this.policy.slots, { prefix: true })
    return { blocked: { slots: now.kvs, revision: now.revision, receivedAt: performance.now(), waiters: 0n, decision: { kind: 'wait' } } }
  }

  /**
   * Takes `need` slots: at once if nobody queues and they are free, else after queueing behind
   * every earlier call. On abort or a lost session the queue key goes and nothing is taken.
   */
  async acquire(need: number, session: Session, taker: () => Taker, options: { signal?: AbortSignal; onWaiting?: () => void }): Promise<Grant> {
    // Calls of this object already queue, or try the fast path: this one queues at once (a
    // burst of calls would otherwise each pay for a Txn that can only fail).
    if (this.queued === 0 && !this.trying) {
      this.trying = true
      try {
        const tried = await this.tryTake(need, taker)
        if ('granted' in tried) return tried.granted
      } finally {
        this.trying = false
      }
    }
    options.onWaiting?.()
    options.signal?.throwIfAborted()
    this.queued++
    try {
      return await this.queue(need, session, taker, options.signal)
    } finally {
      this.queued--
    }
  }

  private async queue(need: number, session: Session, taker: () => Taker, signal?: AbortSignal): Promise<Grant> {
    await this.ready()
    const queued = await this.enqueue(need, session)
    const own = queued.own
    let pending: Promise<StepResult> | undefined
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
            const goneAt = await waitGone(this.ks, predecessor, view.revision, wait)
            const seenAt = performance.now()
            wait.throwIfAborted()
            res = await (pending = this.firstInLineStep(own, need, goneAt, seenAt, taker()))
            if (!res.ok) predecessor = res.failed![1].range!.kvs[0]
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
            res = await (pending = this.step(this.stillQueued(own), plan, taker(), [this.ks.delete(own.key)]))
          }
          if (res.taken) return granted(res)
          if (!res.ok) {
            if (res.failed![0].range!.kvs.length === 0) throw this.lost(session)
            await this.settingsAgree(res.config)
          }
          view = res
        }
      })
    } catch (err) {
      const last = await pending?.catch(() => undefined)
      if (last?.taken) return granted(last)
      await own.abandon()
      throw err
    }
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
      if (session.aborted) throw this.lost(own.session, session.reason)
      throw err
    }
  }

  /** Puts our queue key, reading in the same Txn the youngest older waiter and the slots. */
  private async enqueue(need: number, session: Session) {
    session.signal.throwIfAborted()
    for (let attempt = 0; attempt < MAX_ENQUEUE_ATTEMPTS; attempt++) {
      const key = `${this.waiters}${unixNano()}`
      const reads = [this.ks.get(this.waiters, { prefix: true, sort: ['Create', 'Descend'], limit: 1 }), this.ks.get(this.policy.slots, { prefix: true })]
      const res = await this.ks
        .txn([this.ks.compare(key, 'Version', '==', 0), this.settingsCompare()], [...reads, this.ks.put(key, String(need), session.leaseId)], [this.ks.get(key, { countOnly: true }), this.ks.get(this.configKey)])
        .catch((err: unknown) => {
          if (err instanceof EtcdUnavailableError) session.strand(key) // the put may have applied
          throw err
        })
      const receivedAt = performance.now()
      if (res.succeeded) {
        const own = new OwnedKey(session, key, res.revision)
        const view = { slots: res.results[1].range!.kvs, revision: res.revision, receivedAt }
        return { own, predecessor: res.results[0].range!.kvs[0], view }
      }
      if (res.results[0].range!.count === 0n) await this.settingsAgree(res.results[1].range!.kvs[0])
    }
    throw new KeyExistsError(`${this.kind} ${JSON.stringify(this.name)}: ${MAX_ENQUEUE_ATTEMPTS} fresh queue keys in a row already existed; check for clock problems or another writer of ${this.waiters} keys`)
  }

  /**
   * The first step after the predecessor went (at revision `goneAt`, seen at `seenAt`): if no
   * older waiter is left, try the policy's guesses at once (one Txn: a handoff costs one round
   * trip), and read the slots — also as of `goneAt` when the policy dates its observations from
   * the handoff. Else the failure read names the next older waiter.
   */
  private async firstInLineStep(own: OwnedKey, need: number, goneAt: bigint, seenAt: number, taker: Taker): Promise<StepResult> {
    const then = this.policy.observesHandoff ? [this.ks.get(this.policy.slots, { prefix: true, revision: goneAt })] : []
    const run = (extra: Op[]) => this.step(this.firstInLine(own), { take: this.guesses(need) }, taker, [this.ks.delete(own.key)], extra)
    const res = await run(then).catch((err: Error) => {
      // Compacted away already (an unusually aggressive compaction): do without it.
      if (then.length > 0 && /compacted/i.test(err.message)) return run([])
      throw err
    })
    const before = res.extra?.[0]?.range
    return before ? { ...res, before: { slots: before.kvs, receivedAt: seenAt } } : res
  }

  /**
   * Waits until a slot seen in `view` changes or `wakeAt` passes; returns the view to decide on
   * next. A timer wake keeps the view (a Txn on stale slots fails and reads them anew); a delete
   * event removes the deleted slot from it, dated when the event arrived; else the slots are read.
   */
  private async waitForSlots(view: View, wakeAt: number | undefined, signal: AbortSignal): Promise<View> {
    const timer = wakeAt === undefined ? undefined : AbortSignal.timeout(Math.max(0, Math.ceil(wakeAt - performance.now())))
    let change: { deleted?: string; revision?: bigint }
    try {
      change = await waitRangeChange(this.ks, this.policy.slots, view.revision, view.slots, timer ? AbortSignal.any([signal, timer]) : signal)
    } catch (err) {
      if (signal.aborted || !timer?.aborted) throw err
      return view
    }
    if (change.deleted !== undefined && change.revision !== undefined) {
      return { slots: view.slots.filter((kv) => kv.key !== change.deleted), revision: change.revision, receivedAt: performance.now() }
    }
    const now = await this.ks.range(this.policy.slots, { prefix: true })
    return { slots: now.kvs, revision: now.revision, receivedAt: performance.now() }
  }

  /** Blind options for a first Txn: one guessed slot each (only when one slot is wanted). */
  private guesses(need: number): SlotChoice[][] {
    return need === 1 ? distinct(this.policy.guesses()).map((c) => [c]) : []
  }

  /**
   * One Txn: if the settings match and the guard holds, take the first option whose slots are
   * as expected (nested Txns) — also running `onTake` — or delete the expired slot; then read
   * the slots (after the change) and `extra`. When it fails: reads the stored settings, the
   * guard's reads and the slots instead.
   */
  private async step(guard: Guard, plan: Plan, taker: Taker, onTake: Op[] = [], extra: Op[] = []): Promise<StepResult> {
    const slots = this.ks.get(this.policy.slots, { prefix: true })
    const options = 'take' in plan ? plan.take.filter((o) => o.length > 0) : []
    const ops: Op[] = []
    if (options.length > 0) ops.push(this.chain(options, taker, onTake))
    if ('expire' in plan) ops.push(this.ks.txnOp([this.modIs(plan.expire)], [this.ks.delete(plan.expire.key)]))
    let res: TxnResult
    try {
      res = await this.ks.txn([this.settingsCompare(), ...guard.compares], [...ops, slots, ...extra], [this.ks.get(this.configKey), ...guard.reads, slots])
    } catch (err) {
      if (err instanceof EtcdUnavailableError && options.length > 0) await taker.ambiguous([...new Set(options.flat().map((c) => c.key))]).catch(() => {})
      throw err
    }
    const receivedAt = performance.now()
    const { revision, results } = res
    if (!res.succeeded) {
      return { ok: false, config: results[0].range!.kvs[0], failed: results.slice(1, -1), slots: results[results.length - 1].range!.kvs, revision, receivedAt }
    }
    const taken = options.length > 0 ? takenOption(results[0], options) : undefined
    return { ok: true, taken, slots: results[ops.length].range!.kvs, extra: results.slice(ops.length + 1), revision, receivedAt }
  }

  /** Nested Txns: option 1 if its slots are as expected, else option 2, … (none if no option fits). */
  private chain(options: SlotChoice[][], taker: Taker, onTake: Op[]): Op {
    const [first, ...rest] = options
    const puts = first.map((c) => this.ks.put(c.key, taker.value, taker.lease))
    return this.ks.txnOp(first.map((c) => this.modIs(c)), [...puts, ...onTake], rest.length > 0 ? [this.chain(rest, taker, onTake)] : [])
  }

  private modIs(c: SlotChoice): Compare {
    return this.ks.compare(c.key, 'Mod', '==', c.mod)
  }

  /** The fast path's guard: nobody queues (else: how many do). */
  private nobodyQueues(): Guard {
    // A range compare "create revision < 1" holds only on an empty range.
    const empty = { ...this.ks.compare(this.waiters, 'Create', '<', 1), range_end: prefixEnd(this.ks.full(this.waiters)) }
    return { compares: [empty], reads: [this.ks.get(this.waiters, { prefix: true, countOnly: true })] }
  }

  /** The head's guard: its queue key is still its own. */
  private stillQueued(own: OwnedKey): Guard {
    return { compares: [own.ownerCompare()], reads: [this.ks.get(own.key)] }
  }

  /** A waiter's guard when its predecessor went: its key is still its own, and no older waiter is left (else: the youngest older one). */
  private firstInLine(own: OwnedKey): Guard {
    // Every key under waiters/ is at least as young as ours (ours is there: the range is not empty).
    const noneOlder = { ...this.ks.compare(this.waiters, 'Create', '>', own.createRevision - 1n), range_end: prefixEnd(this.ks.full(this.waiters)) }
    const older = this.ks.get(this.waiters, { prefix: true, sort: ['Create', 'Descend'], limit: 1, maxCreateRevision: own.createRevision - 1n })
    return { compares: [own.ownerCompare(), noneOlder], reads: [this.ks.get(own.key), older] }
  }

  /** Holds while the stored settings equal ours (a missing config key fails it too). */
  private settingsCompare(): Compare {
    return { key: this.ks.full(this.configKey), target: 'Value', result: 'Equal', value: Buffer.from(this.config) }
  }

  /**
   * After a Txn whose settings compare may have failed: creates the config key if there is none
   * (the first contender's settings are everyone's), throws {@link ConfigMismatchError} if it
   * differs. Resolves true when the settings agree (the Txn failed for another reason).
   */
  private async settingsAgree(stored: KeyValue | undefined): Promise<boolean> {
    if (stored === undefined) {
      await this.ks.txn([this.ks.compare(this.configKey, 'Version', '==', 0)], [this.ks.put(this.configKey, this.config)])
      return false
    }
    const value = stored.value.toString()
    if (value === this.config) return true
    throw new ConfigMismatchError(
      value,
      this.config,
      `${this.kind} ${JSON.stringify(this.name)} is stored with ${value} (key ${JSON.stringify(this.configKey)}) but this contender uses ${this.config}; ` +
        `use the same settings in every function, or change them for everyone: \`etcdctl put ${this.configKey} '${this.config}'\` and deploy the new settings (see README, "Semaphore and rate limiter")`,
    )
  }

  private lost(session: Session, cause?: unknown) {
    const why = cause instanceof Error ? `: ${cause.message}` : ''
    return new SessionExpiredError(`${this.kind} ${JSON.stringify(this.name)}: session ${session.leaseHex} lost its lease while waiting${why}; create a new Session and acquire again`, { cause })
  }
}

/** Per keyspace: the config keys (with settings) this process has created or checked. */
const settled = new WeakMap<Keyspace, Map<string, Promise<void>>>()

/** The slots a step took, as a grant. */
function granted(res: StepResult): Grant {
  return { keys: res.taken!.map((c) => c.key), revision: res.revision }
}

/** The option a chain of nested Txns took, by following the failure branches. */
function takenOption(result: OpResult | undefined, options: SlotChoice[][]): SlotChoice[] | undefined {
  for (const option of options) {
    if (!result?.txn) return undefined
    if (result.txn.succeeded) return option
    result = result.txn.results[0]
  }
  return undefined
}

/** The first choice per key, at most {@link MAX_GUESSES}. */
function distinct(choices: SlotChoice[]): SlotChoice[] {
  const seen = new Set<string>()
  return choices.filter((c) => !seen.has(c.key) && seen.add(c.key)).slice(0, MAX_GUESSES)
}
