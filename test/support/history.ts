/**
 * A history checker for lock grants (test code): every contender records when it was granted
 * the lock and when it let go, with the grant's fencing token and the revision it queued at;
 * `check()` lists every violation of mutual exclusion, fencing and FIFO order.
 *
 * Times are milliseconds of the machine's monotonic clock (`machineNow`), comparable across
 * processes on one machine. To never report a false overlap, a hold is recorded
 * as a SUB-interval of the true one: `grantedAt` after `lock()` resolved (the lock was ours by
 * then) and `releasedAt` BEFORE the unlock request is sent (still ours until then). Disjoint
 * true holds therefore always give disjoint recorded holds, and any recorded overlap is real.
 */

/**
 * Milliseconds, sub-ms resolution, on the machine's monotonic clock (CLOCK_MONOTONIC, which
 * `process.hrtime` reads): one clock for every process on the machine, network namespaces
 * included. Not `performance.timeOrigin + performance.now()`: each process samples the wall
 * clock for its own time origin, and on a loaded machine that sample was seen 1 to 4 s off its
 * parent's (a rate-limiter run whose admissions all looked 4 s late; lock holds of two
 * processes that looked 1 ms overlapped while their fences were in order).
 */
export const machineNow = () => Number(process.hrtime.bigint()) / 1e6

/** One hold of the lock, as a contender saw it. */
export interface Hold {
  /** Who held it (contender id). */
  holder: string
  /** The fencing token of the grant (the lock key's create revision). */
  fence: bigint
  /** The revision at which the contender queued (its key's create revision). */
  queuedRev: bigint
  /** After the grant was known to the holder. */
  grantedAt: number
  /** Before the release was sent (or when the holder learnt the lease was lost). */
  releasedAt: number
  /** True when the holder's session reported its lease lost during the hold. */
  lost?: boolean
}

export interface Violation {
  kind: 'overlap' | 'fence' | 'fifo' | 'interval'
  detail: string
}

export class LockHistory {
  readonly holds: Hold[] = []
  private readonly open = new Map<string, Omit<Hold, 'releasedAt'>>()

  /** The holder was granted the lock. */
  grant(holder: string, fence: bigint, queuedRev: bigint, at = machineNow()): void {
    if (this.open.has(holder)) throw new Error(`history: ${holder} granted twice without a release`)
    this.open.set(holder, { holder, fence, queuedRev, grantedAt: at })
  }

  /** The holder is about to release (call BEFORE sending the unlock). */
  release(holder: string, options: { lost?: boolean; at?: number } = {}): void {
    const hold = this.open.get(holder)
    if (!hold) throw new Error(`history: ${holder} released without a grant`)
    this.open.delete(holder)
    this.holds.push({ ...hold, releasedAt: options.at ?? machineNow(), lost: options.lost })
  }

  /** Every violation in the recorded history (an empty list means the history is correct). */
  check(): Violation[] {
    return checkHolds(this.holds)
  }
}

/**
 * The violations of a set of holds of ONE lock:
 * - interval: a hold that ends before it starts (recording bug);
 * - overlap: two holds whose intervals intersect (mutual exclusion broken);
 * - fence: in grant order, a fence that is not greater than the one before (fencing broken);
 * - fifo: in grant order, a contender granted before one that queued earlier (FIFO broken).
 */
export function checkHolds(holds: Hold[]): Violation[] {
  const out: Violation[] = []
  const sorted = [...holds].sort((a, b) => a.grantedAt - b.grantedAt)
  const show = (h: Hold) => `${h.holder}(fence ${h.fence}, queued ${h.queuedRev}, ${h.grantedAt.toFixed(1)}..${h.releasedAt.toFixed(1)})`
  for (const h of sorted) if (h.releasedAt < h.grantedAt) out.push({ kind: 'interval', detail: `${show(h)} ends before it starts` })
  // The latest end so far: any later grant that starts before it overlaps that hold.
  let latest: Hold | undefined
  for (let i = 0; i < sorted.length; i++) {
    const h = sorted[i]
    if (latest && h.grantedAt < latest.releasedAt)
      out.push({ kind: 'overlap', detail: `${show(h)} granted while ${show(latest)} held the lock` })
    if (!latest || h.releasedAt > latest.releasedAt) latest = h
    if (i > 0) {
      const prev = sorted[i - 1]
      if (h.fence <= prev.fence) out.push({ kind: 'fence', detail: `${show(h)} granted after ${show(prev)} with a fence not greater` })
      if (h.queuedRev < prev.queuedRev)
        out.push({ kind: 'fifo', detail: `${show(h)} queued before ${show(prev)} but was granted after it` })
    }
  }
  return out
}
