import { ConfigMismatchError, EtcdUnavailableError } from '../errors.js'
import { MAX_TXN_OPS } from '../limits.js'
import { permitKeys } from '../core/keys.js'
import {
  type Compare,
  type Keyspace,
  keyspace,
  type KeyValue,
  type Op,
  prefixEnd,
  type NamedTxnOp,
  type RangeOp,
  type RangeResult,
  type ResultOf,
} from '../core/kv.js'
import type { OwnedKey } from '../wait/owned-key.js'
import { perClient } from '../core/per-client.js'
import type { Session } from '../session/session.js'

/**
 * The Txns of a `PermitQueue`: every one compares the stored settings (`<name>/config`)
 * and a guard (nobody queues / our queue key is still ours / no older waiter), then takes the
 * first option of slots that are as expected (nested Txns) or deletes an expired slot, and
 * reads the slots — one round trip each.
 */

/** Take the slot `key` if its mod revision is still `mod` (0n: the slot is free). */
export interface SlotChoice {
  key: string
  mod: bigint
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

/** The slots as a read saw them. */
export interface View {
  slots: KeyValue[]
  revision: bigint
  /** `performance.now()` when the read's answer arrived. */
  receivedAt: number
  /** The slots as they were at an earlier revision that had committed by `receivedAt` (see `SlotPolicy.observesHandoff`). */
  before?: { slots: KeyValue[]; receivedAt: number }
}

/**
 * Most slots one step can take. etcd gives a nested Txn what is left of its 128 ops once the
 * outer Txn's widest branch is counted (`checkTxnRequest`: max-txn-ops minus the largest of the
 * outer compares, success and failure ops), and a head's take also deletes its queue key: 4 for
 * the outer branch (a head's failure reads: its key, the older waiter, the settings, the
 * slots), 1 for that delete. Measured: a fast-path take of 125 passes, 126 is refused.
 */
export const MAX_SLOTS_PER_TAKE = MAX_TXN_OPS - 4 - 1

/** What a step compares besides the settings, and what it reads when that fails. */
export interface Guard {
  compares: Compare[]
  /** Read when the Txn fails, by name: `StepResult.failed` has them under the same names. */
  reads: Record<string, RangeOp>
}

/** Take the first option that fits, or delete an expired slot. */
export type Plan = { take: SlotChoice[][] } | { expire: SlotChoice }

/** What one step Txn did, and the slots it read. */
export interface StepResult extends View {
  /** The guard held (settings match; nobody queues / our queue key is still ours / none older). */
  ok: boolean
  taken?: SlotChoice[]
  /** With `ok` false: the stored settings, and the guard's reads, by the names the guard gave them. */
  config?: KeyValue
  failed?: Record<string, RangeResult>
}

/** The keys of one semaphore or rate limiter, and the Txns on them. */
export class PermitStore {
  readonly ks: Keyspace
  readonly configKey: string
  readonly waiters: string

  constructor(
    client: Session['client'],
    readonly name: string,
    /** 'semaphore' or 'rate limiter', for messages. */
    readonly kind: string,
    /** This contender's settings as stored, e.g. `permits=5`. */
    readonly config: string,
    /** The slots' key prefix. */
    readonly slots: string,
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
    const known = settledOf(this.ks.client)
    const id = `${this.configKey}\n${this.config}`
    let pending = known.get(id)
    if (!pending) {
      pending = this.ks
        .namedTxn(
          [this.ks.compare(this.configKey, 'Version', '==', 0)],
          { created: this.ks.put(this.configKey, this.config) },
          { stored: this.ks.get(this.configKey) },
        )
        .then(async (res) => {
          if (!res.succeeded) await this.settingsAgree(res.results.stored.kvs[0])
        })
      pending.catch(() => known.delete(id)) // try again next time
      known.set(id, pending)
    }
    return pending
  }

  /**
   * One Txn: if the settings match and the guard holds, take the first option whose slots are
   * as expected (nested Txns) — also running `onTake` — or delete the expired slot; then read
   * the slots (after the change). When it fails: reads the stored settings, the guard's reads
   * and the slots instead.
   */
  async step(guard: Guard, plan: Plan, taker: Taker, onTake: Op[] = []): Promise<StepResult> {
    const slots = this.ks.get(this.slots, { prefix: true })
    const options = 'take' in plan ? plan.take.filter((o) => o.length > 0) : []
    const change: Record<string, Op> = {}
    if (options.length > 0) change.take = this.chain(options, taker, onTake)
    if ('expire' in plan) change.expire = this.ks.txnOp([this.modIs(plan.expire)], [this.ks.deleteOp(plan.expire.key)])
    let res
    try {
      // The guard's names are the caller's; `config` and `slots` are ours (no guard uses them).
      res = await this.ks.namedTxn(
        [this.settingsCompare(), ...guard.compares],
        { ...change, slots },
        { ...guard.reads, config: this.ks.get(this.configKey), slots },
      )
    } catch (err) {
      if (err instanceof EtcdUnavailableError && options.length > 0)
        await taker.ambiguous([...new Set(options.flat().map((c) => c.key))]).catch(() => {})
      throw err
    }
    const receivedAt = performance.now()
    const { revision } = res
    if (!res.succeeded) {
      const { config, slots: seen, ...failed } = res.results
      return { ok: false, config: config.kvs[0], failed, slots: seen.kvs, revision, receivedAt }
    }
    const taken = 'take' in res.results ? takenOption(res.results.take as ResultOf<OptionLink>, options) : undefined
    return { ok: true, taken, slots: res.results.slots.kvs, revision, receivedAt }
  }

  /** Nested Txns: option 1 if its slots are as expected, else option 2, … (none if no option fits). */
  private chain(options: SlotChoice[][], taker: Taker, onTake: Op[]): OptionLink {
    const [first, ...rest] = options
    const puts = first.map((c) => this.ks.put(c.key, taker.value, taker.lease))
    return this.ks.namedTxnOp(
      first.map((c) => this.modIs(c)),
      { take: [...puts, ...onTake] },
      { next: rest.length > 0 ? this.chain(rest, taker, onTake) : undefined },
    )
  }

  private modIs(c: SlotChoice): Compare {
    return this.ks.compare(c.key, 'Mod', '==', c.mod)
  }

  /** The fast path's guard: nobody queues (else: how many do). */
  nobodyQueues(): Guard {
    // A range compare "create revision < 1" holds only on an empty range.
    const empty = { ...this.ks.compare(this.waiters, 'Create', '<', 1), range_end: prefixEnd(this.ks.full(this.waiters)) }
    return { compares: [empty], reads: { waiters: this.ks.get(this.waiters, { prefix: true, countOnly: true }) } }
  }

  /** The head's guard: its queue key is still its own. */
  stillQueued(own: OwnedKey): Guard {
    return { compares: [own.ownerCompare()], reads: { mine: this.ks.get(own.key) } }
  }

  /** A waiter's guard when its predecessor went: its key is still its own, and no older waiter is left (else: the youngest older one). */
  firstInLine(own: OwnedKey): Guard {
    // Every key under waiters/ is at least as young as ours (ours is there: the range is not empty).
    const noneOlder = {
      ...this.ks.compare(this.waiters, 'Create', '>', own.createRevision - 1n),
      range_end: prefixEnd(this.ks.full(this.waiters)),
    }
    const older = this.ks.get(this.waiters, {
      prefix: true,
      sort: ['Create', 'Descend'],
      limit: 1,
      maxCreateRevision: own.createRevision - 1n,
    })
    return { compares: [own.ownerCompare(), noneOlder], reads: { mine: this.ks.get(own.key), older } }
  }

  /** Holds while the stored settings equal ours (a missing config key fails it too). */
  settingsCompare(): Compare {
    return { key: this.ks.full(this.configKey), target: 'Value', result: 'Equal', value: Buffer.from(this.config) }
  }

  /**
   * After a Txn whose settings compare may have failed: creates the config key if there is none
   * (the first contender's settings are everyone's), throws {@link ConfigMismatchError} if it
   * differs. Resolves true when the settings agree (the Txn failed for another reason).
   */
  async settingsAgree(stored: KeyValue | undefined): Promise<boolean> {
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
}

/** Per client: the config keys (with settings) this process has created or checked. */
const settledOf = perClient((): Map<string, Promise<void>> => new Map())

/** One link of the chain of options a step tries (`PermitStore.chain`): its option's puts if its slots are as expected, else the next link (none after the last option). */
interface OptionLink extends NamedTxnOp<{ take: Op[] }, { next: OptionLink | undefined }> {}

/** The option a chain of nested Txns took, by following the failure branches (each holds only the next link). */
function takenOption(link: ResultOf<OptionLink> | undefined, options: SlotChoice[][]): SlotChoice[] | undefined {
  for (const option of options) {
    if (!link) return undefined
    if (link.succeeded) return option
    link = link.results.next
  }
  return undefined
}
