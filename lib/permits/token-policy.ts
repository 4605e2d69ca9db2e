import type { KeyValue } from '../core/kv.js'
import { permitKeys } from '../core/keys.js'
import type { Decision, SlotChoice, SlotPolicy, View } from './permit-queue.js'

/**
 * When a RateLimiter may take a token slot: the time rule of the token bucket, measured only as
 * local durations from what this process saw in etcd (see `RateLimiter` and docs/RELIABILITY.md).
 */

/**
 * Monotonic clocks of different machines run at slightly different speeds (NTP slews by up to
 * 500 ppm): every duration that keeps the rate is measured this much longer than nominal.
 */
export const CLOCK_RATE_MARGIN = 0.001

/**
 * A RateLimiter's policy: a free token slot while fewer than `capacity` tokens are there, or the
 * oldest token once this process has seen it as the oldest for one refill interval (`pacing`:
 * per/rate with the clock margin). Tokens above `capacity` (left from a larger `burst`) count,
 * and the oldest of them is deleted rather than replaced, so that they drain. The model test
 * (test/permits/rate-limiter-model.test.ts) runs it against simulated clocks.
 */
export class ExpiredTokens implements SlotPolicy {
  readonly observesHandoff = true
  /** `key@mod` of each token seen as the oldest → this process's clock (`now`) when first seen so. */
  private readonly oldestSince = new Map<string, number>()
  private lastOldest?: { choice: SlotChoice; since: number }
  /** The slots as last seen: the free ones below `capacity`, and whether tokens above it were there. */
  private last?: { free: SlotChoice[]; above: boolean }

  constructor(
    readonly slots: string,
    /** Tokens in the bucket: `burst + 1`. */
    readonly capacity: number,
    private readonly pacing: number,
    /** This process's monotonic clock, ms. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Without a read: the slots free when last seen, and the oldest token itself once it is ripe;
   * before any read, every slot (up to 16) from a random start. Only likely ones: a Txn with
   * nothing to put is a read, which etcd answers without a raft round and a disk write. None
   * while tokens above `capacity` were seen: what may be taken then depends on a fresh count.
   */
  guesses(): SlotChoice[] {
    const free = (i: number) => ({ key: permitKeys.slot(this.slots, i), mod: 0n })
    if (!this.last) {
      const start = Math.floor(Math.random() * this.capacity)
      return Array.from({ length: Math.min(this.capacity, 16) }, (_, i) => free((start + i) % this.capacity))
    }
    if (this.last.above) return []
    const old = this.lastOldest
    const ripe = old && old.since + this.pacing <= this.now() ? [old.choice] : []
    return [...this.last.free.slice(0, 4), ...ripe]
  }

  decide(view: View, need: number): Decision {
    if (view.before) this.observe(view.before.slots, view.before.receivedAt)
    const { free, count, oldest, since, oldestAbove } = this.observe(view.slots, view.receivedAt)
    // count < capacity - need + 1 leaves at least `need` free slots below capacity.
    if (count + need <= this.capacity) return { kind: 'take', slots: free.slice(0, need) }
    // count + need > capacity >= need: there is a token.
    const ripe = since! + this.pacing <= this.now()
    if (!ripe) return { kind: 'wait', wakeAt: since! + this.pacing }
    if (count - 1 + need <= this.capacity && !oldestAbove) return { kind: 'take', slots: [...free.slice(0, need - 1), oldest!] }
    return { kind: 'expire', slot: oldest! }
  }

  saw(view: View): void {
    if (view.before) this.observe(view.before.slots, view.before.receivedAt)
    this.observe(view.slots, view.receivedAt)
  }

  /** Estimated ms until `need` tokens could be had, with `waiters` calls queued first. */
  estimate(slots: KeyValue[], need: number, receivedAt: number, waiters: bigint): number {
    const { count, since } = this.observe(slots, receivedAt)
    const first = since === undefined ? 0 : Math.max(0, since + this.pacing - this.now())
    const more = Math.max(0, count + need - this.capacity - 1) + Number(waiters)
    return count + need <= this.capacity && waiters === 0n ? 0 : first + more * this.pacing
  }

  /**
   * The free slots below `capacity`, how many tokens there are (any slot), and the oldest token
   * with when this process first saw it as the oldest.
   */
  private observe(slots: KeyValue[], receivedAt: number) {
    const tokens = slots
      .map((kv) => ({ kv, index: permitKeys.slotIndex(this.slots, kv.key) }))
      .filter((t): t is { kv: KeyValue; index: number } => t.index !== undefined)
    const used = new Set(tokens.map((t) => t.index))
    const free: SlotChoice[] = []
    for (let i = 0; i < this.capacity; i++) if (!used.has(i)) free.push({ key: permitKeys.slot(this.slots, i), mod: 0n })
    // The oldest: the lowest mod revision (a token's admission), ties by key.
    const byAge = tokens.sort((a, b) =>
      a.kv.modRevision === b.kv.modRevision ? (a.kv.key < b.kv.key ? -1 : 1) : a.kv.modRevision < b.kv.modRevision ? -1 : 1,
    )
    const count = tokens.length
    this.last = { free, above: tokens.some((t) => t.index >= this.capacity) }
    const first = byAge[0]?.kv
    if (!first) return { free, count }
    const id = `${first.key}@${first.modRevision}`
    const since = this.oldestSince.get(id) ?? receivedAt
    // Forget tokens that are gone; the map stays as small as the bucket.
    for (const known of this.oldestSince.keys())
      if (!tokens.some((t) => `${t.kv.key}@${t.kv.modRevision}` === known)) this.oldestSince.delete(known)
    this.oldestSince.set(id, since)
    const oldest = { key: first.key, mod: first.modRevision }
    this.lastOldest = { choice: oldest, since }
    return { free, count, oldest, since, oldestAbove: byAge[0].index >= this.capacity }
  }
}
