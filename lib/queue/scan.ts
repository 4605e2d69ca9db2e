import type { Namespace } from 'etcd3'
import { dueEnd, DUE_WINDOW } from './delays.js'
import { advance, distance, resized, spanFromRead } from './key-windows.js'
import { queueKeys } from '../core/keys.js'
import { Branch, type KeyValue, type Keyspace } from '../core/kv.js'
import type { QueueOrder } from './order.js'
import { CoverSearch, type Pair, type WindowAnswers, type WindowRead } from './uncovered.js'
import { waitFor, type EventType } from '../wait/wait.js'

/**
 * Finding visible items and due delayed messages with answers of bounded size and requests,
 * bytes and server work per receive that do not grow with what is in flight, the backlog or the
 * delayed count (see `uncovered.ts`) — but for the count-only reads of a large region below the
 * hint, once a second. Keys only: values are read by the claim.
 *
 * Items are served in key order: a Queue's keys are `<unixNano>` of the producer's clock (Go's
 * too), so one producer's messages come in enqueue order and several producers' within their
 * clocks' offset; a PriorityQueue's are `<priority>/<sequence>`. etcd can sort a Range by mod
 * revision only by reading every item of the queue, values included, from its backend.
 *
 * A scanner keeps where its last look found the first visible item (the hint) and how wide a
 * window of keys to read from there. Below the hint everything was claimed when it looked; an
 * item that turns visible there (its claim ended, it was nacked) or arrives there (a producer
 * whose clock runs behind, a more urgent priority) is found by two count-only reads of the
 * region below the hint — in every scan while that region is small, at least once a second
 * when it is large, and always before a receive waits or returns nothing.
 *
 * Delayed messages are due once their timer is gone, whatever their key says: the key (the
 * producer's clock plus the delay) only says where to look first. A scan reads the delayed
 * messages keyed before now + 1 s by its own clock; those keyed later are counted against their
 * timers (as the region below the hint), so one whose producer's clock runs ahead is found too;
 * and a waiting receive hears of each expired timer by key. Not-yet-due messages keyed early
 * by a producer whose clock runs behind are skipped by their counts: none of them can hold
 * back a message that is due.
 */

/** What a scan saw. */
export interface QueueView {
  /** Unclaimed items (keys and revisions only), in queue order. */
  visible: KeyValue[]
  /** Whether it saw claim markers (then their deletes are worth waking for). */
  claims: boolean
  /** Delayed messages whose timer is gone (keys and revisions only): to be moved into the queue. */
  due: KeyValue[]
  /** Whether any delayed message waits (then a timer's expiry is worth waking for). */
  delayed: boolean
  /** The revision of its first read: a wait watches from the next one. */
  revision: bigint
}

/** After a lost claim race, this many picks start at a random offset (see {@link Scanner.pick}). */
const SPREAD_ROUNDS = 8

/** Most items one read of a scan returns (keys only); a larger batch is gathered from further windows, or comes back smaller. */
const MAX_WINDOW = 512

/** A region below the hint (or delayed messages keyed past now) of at most this many keys is counted in every scan. */
const CHEAP_COUNT = 4096

/** A larger one at least this often. */
const CHECK_EVERY_MS = 1000

/** Expired timers a waiting receive heard of, kept for the next scan (two ops each). */
const MAX_DUE_HINTS = 32

/** Searches for more visible items one scan makes after its window (each a count round, then a read). */
const MAX_GATHER = 3

/** Width of the first window of delayed messages keyed past now + 1 s, in nanoseconds. */
const BEYOND_SPAN = 1_000_000_000n

/** A region below the hint or past the due window: when it was last counted, how large it was. */
interface Checked {
  at: number
  count: number
}

/** Scans one queue; holds the hint and window of one consumer object. */
export class Scanner {
  private readonly items: CoverSearch
  private readonly delays: CoverSearch
  /** The suffix (after `<name>/`) where the first visible item was last seen. */
  private hint = ''
  /** Digit width of a window holding about a scan's worth of items; undefined while the queue is small (read to its end). */
  private span: bigint | undefined
  /** The smallest item suffix seen: where a count of the region below the hint starts cutting. */
  private lowest: string | undefined
  private below: Checked = { at: Number.NEGATIVE_INFINITY, count: 0 }
  private beyond: Checked = { at: Number.NEGATIVE_INFINITY, count: 0 }
  /** Something may have turned visible below the hint (a claim ended, an item arrived there). */
  private belowChanged = false
  /** Delayed keys whose timer a waiting receive saw expire. */
  private dueHints: string[] = []
  /** Picks left that start at a random offset, after this consumer lost a claim race. */
  private spread = 0

  constructor(
    private readonly ks: Keyspace,
    private readonly name: string,
    private readonly order: QueueOrder,
  ) {
    const items: Pair = {
      a: queueKeys.items(name),
      b: queueKeys.claims(name),
      coverOf: (kv) => queueKeys.marker(kv.key, kv.createRevision),
    }
    const delays: Pair = { a: queueKeys.delayed(name), b: queueKeys.timers(name), coverOf: (kv) => queueKeys.timerOf(name, kv.key) }
    this.items = new CoverSearch(ks, items, MAX_WINDOW)
    this.delays = new CoverSearch(ks, delays, DUE_WINDOW)
  }

  /** Notes that a claim lost a race: the next picks spread out. */
  lostRace(): void {
    this.spread = SPREAD_ROUNDS
  }

  /**
   * Notes what woke a waiting receive: an item put below the hint or a claim marker deleted
   * (something may be visible there), or an expired timer (its delayed message is due).
   */
  noted(event: { type: EventType; kv: KeyValue }): void {
    const { key } = event.kv
    if (key.startsWith(queueKeys.timers(this.name))) {
      if (this.dueHints.length < MAX_DUE_HINTS)
        this.dueHints.push(`${queueKeys.delayed(this.name)}${key.slice(queueKeys.timers(this.name).length)}`)
    } else if (key.startsWith(queueKeys.claims(this.name)) || key.slice(queueKeys.items(this.name).length) < this.hint)
      this.belowChanged = true
  }

  /**
   * Looks for up to a window of visible items (for a receive of `max`) and for due delayed
   * messages: one Txn in the common case — the window at the hint, the delayed messages keyed
   * before now + 1 s, and the count-only reads of the regions that are due a check. More rounds
   * only when that Txn found nothing (count rounds skip what is covered). Returns nothing only
   * after every region was counted in this scan.
   */
  async scan(max: number): Promise<QueueView> {
    // While spreading, look wider so that racing receivers have room to pick different items.
    const target = Math.min(MAX_WINDOW, this.spread > 0 ? Math.max(4 * max, 32) : Math.max(2 * max, 16))
    const now = performance.now()
    const due = dueEnd()
    const checkBelow = this.hint !== '' && (this.belowChanged || this.below.count <= CHEAP_COUNT || now - this.below.at >= CHECK_EVERY_MS)
    const checkBeyond = this.beyond.count <= CHEAP_COUNT || now - this.beyond.at >= CHECK_EVERY_MS
    const from = this.hint
    const end = this.span === undefined ? undefined : advance(from, this.span)

    const txn = new Branch()
    const window = txn.add(this.items.readOps(from, end, target))
    const region = txn.add(this.delays.readOps('', due))
    const below = checkBelow ? txn.add(this.items.countOps('', from)) : undefined
    const beyond = checkBeyond ? txn.add(this.delays.countOps(due, undefined)) : undefined
    const hinted = this.dueHints.splice(0).map((key) => ({
      key,
      check: txn.add({
        delayed: this.ks.get(key, { keysOnly: true }),
        timer: this.ks.get(queueKeys.timerOf(this.name, key), { countOnly: true }),
      }),
    }))
    const res = await this.ks.namedTxn([], txn.ops)

    const read = this.items.decode(from, end, window(res.results))
    this.learn(read, target)
    const belowVisible = below ? this.counted(below(res.results), 'below', now) : false
    const beyondDue = beyond ? this.counted(beyond(res.results), 'beyond', now) : false
    const delayed = region(res.results)
    const dues = await this.dueOf(this.delays.decode('', due, delayed), due, beyondDue)
    for (const { key, check } of hinted) {
      const found = check(res.results)
      const kv = found.delayed.kvs[0]
      if (kv !== undefined && found.timer.count === 0n && !dues.some((d) => d.key === key)) dues.push(kv)
    }
    const delayedHere = Number(delayed.keys.count) > 0

    const visible = belowVisible ? await this.findBelow(from) : []
    if (visible.length === 0) visible.push(...(await this.gather(read, max, target)))
    if (visible.length === 0 && dues.length === 0 && (!checkBelow || !checkBeyond)) {
      // Nothing here: count what this scan left out before saying so.
      const rest = await this.checkSkipped(checkBelow, checkBeyond, due, now)
      visible.push(...rest.visible)
      dues.push(...rest.due)
    }
    return {
      visible,
      due: dues,
      claims: read.covers > 0 || this.below.count > 0,
      delayed: delayedHere || dues.length > 0 || this.beyond.count > 0,
      revision: res.revision,
    }
  }

  /**
   * Chooses up to `max` of the visible items. Normally the first ones. While spreading: all
   * items of a more urgent priority than the max-th, then a random run of the items of that
   * priority (within the scanned window), so racing consumers mostly pick different keys
   * without ever skipping a more urgent item.
   */
  pick(visible: KeyValue[], max: number): KeyValue[] {
    if (visible.length <= max || this.spread === 0) return visible.slice(0, max)
    this.spread--
    const rank = (kv: KeyValue) => this.order.priorityOf(kv.key, queueKeys.items(this.name)) ?? 0
    const cut = rank(visible[max - 1])
    const urgent = visible.filter((kv) => rank(kv) < cut)
    const pool = visible.filter((kv) => rank(kv) === cut)
    const need = max - urgent.length
    const start = Math.floor(Math.random() * (pool.length - need + 1))
    return [...urgent, ...pool.slice(start, start + need)]
  }

  /** Moves the hint to the first visible item of a read, and sizes the next window from it. */
  private learn(read: WindowRead, target: number): void {
    for (const kv of read.kvs.slice(0, 1)) {
      const suffix = this.items.suffix(kv)
      if (this.lowest === undefined || suffix < this.lowest) this.lowest = suffix
    }
    const width = read.end === undefined ? undefined : distance(read.from, read.end)
    if (width !== undefined) this.span = read.count === 0 ? undefined : resized(width, read.count, target)
    else if (read.count > 2 * target) this.span = spanFromRead(this.items.pair.a, read.from, read.kvs, target)
    if (read.uncovered.length > 0) this.hint = this.items.suffix(read.uncovered[0])
    else if (read.end !== undefined && read.rest === undefined) this.hint = read.end
  }

  /** Notes the answers of a region's count-only reads; true when it holds more keys than covers. */
  private counted(counts: WindowAnswers, which: 'below' | 'beyond', now: number): boolean {
    const [keys, covers] = [Number(counts.keys.count), Number(counts.covers.count)]
    this[which] = { at: now, count: keys }
    if (which === 'below') this.belowChanged = false
    return keys > covers
  }

  /** The visible items of the region below the hint (an item there turned visible, or arrived there); the hint moves to the first. */
  private async findBelow(hint: string): Promise<KeyValue[]> {
    const found = await this.items.locate('', hint, { lowest: this.lowest, limit: MAX_WINDOW })
    const visible = found.read?.uncovered ?? []
    if (visible.length > 0) this.hint = this.items.suffix(visible[0])
    return visible
  }

  /**
   * The visible items of a window read, and — while they are fewer than `max` — of the next
   * windows that hold any (found by their counts): past the keys the read could not decide on,
   * then past its end. The hint moves to the first one, or, when there is none, to where the
   * counts found every key claimed.
   */
  private async gather(read: WindowRead, max: number, target: number): Promise<KeyValue[]> {
    const visible = [...read.uncovered]
    let last = read
    for (let round = 0; visible.length < max && round < MAX_GATHER; round++) {
      // Uncovered keys in the window's unread part, by its counts; otherwise past its end.
      const region =
        last.rest !== undefined && last.count > last.covers
          ? { from: last.rest, to: last.end }
          : last.end !== undefined
            ? { from: last.end, to: undefined }
            : undefined
      if (region === undefined) break
      const found = await this.items.locate(region.from, region.to, { span: this.span, lowest: this.lowest, limit: target })
      if (found.read === undefined || found.read.uncovered.length === 0) {
        if (region.to !== undefined) {
          // That part had none after all (taken meanwhile): go on past the window.
          last = { ...last, rest: undefined }
          continue
        }
        if (visible.length === 0) this.hint = found.coveredTo
        break
      }
      // A read that goes on from a key reads that key again.
      visible.push(...found.read.uncovered.filter((kv) => !visible.some((v) => v.key === kv.key)))
      last = found.read
    }
    if (visible.length > 0) this.hint = this.items.suffix(visible[0])
    return visible
  }

  /**
   * The due delayed messages of the region keyed before now + 1 s (`read`), looking on past
   * the keys it read when its counts say some are due there; and, when the region keyed later
   * holds more messages than timers (`beyondDue`), those too.
   */
  private async dueOf(read: WindowRead, due: string, beyondDue: boolean): Promise<KeyValue[]> {
    const found = [...read.uncovered]
    if (found.length === 0 && read.rest !== undefined && read.count > read.covers) {
      found.push(...((await this.delays.locate(read.rest, due)).read?.uncovered ?? []))
    }
    if (beyondDue) found.push(...((await this.delays.locate(due, undefined, { span: BEYOND_SPAN })).read?.uncovered ?? []))
    return found
  }

  /** The regions the first Txn did not count (below the hint, delayed messages keyed past now + 1 s), counted now. */
  private async checkSkipped(
    belowDone: boolean,
    beyondDone: boolean,
    due: string,
    now: number,
  ): Promise<{ visible: KeyValue[]; due: KeyValue[] }> {
    const hint = this.hint
    const txn = new Branch()
    const below = belowDone || hint === '' ? undefined : txn.add(this.items.countOps('', hint))
    const beyond = beyondDone ? undefined : txn.add(this.delays.countOps(due, undefined))
    if (!below && !beyond) return { visible: [], due: [] }
    const res = await this.ks.namedTxn([], txn.ops)
    const visible = below && this.counted(below(res.results), 'below', now) ? await this.findBelow(hint) : []
    const dues =
      beyond && this.counted(beyond(res.results), 'beyond', now)
        ? ((await this.delays.locate(due, undefined, { span: BEYOND_SPAN })).read?.uncovered ?? [])
        : []
    return { visible, due: dues }
  }
}

/**
 * Resolves when queue `name` may have a visible item: a new item, (if any are claimed) a claim
 * ending, or (if any are delayed) a timer expiring, with the event that woke it (for
 * {@link Scanner.noted}). Rejects with the signal's reason when it aborts.
 */
export async function waitForChange(
  client: Namespace,
  name: string,
  view: QueueView,
  signal?: AbortSignal,
): Promise<{ type: EventType; kv: KeyValue }> {
  const stop = new AbortController()
  const wait = signal ? AbortSignal.any([stop.signal, signal]) : stop.signal
  const from = view.revision + 1n
  const waits = [waitFor(client, { key: queueKeys.items(name), prefix: true }, from, (type) => type === 'put', wait)]
  if (view.claims) waits.push(waitFor(client, { key: queueKeys.claims(name), prefix: true }, from, (type) => type === 'delete', wait))
  // A timer expiring makes its message due; a delayed message arriving means a timer to watch.
  if (view.delayed) waits.push(waitFor(client, { key: queueKeys.timers(name), prefix: true }, from, (type) => type === 'delete', wait))
  else waits.push(waitFor(client, { key: queueKeys.delayed(name), prefix: true }, from, (type) => type === 'put', wait))
  try {
    return await Promise.race(waits)
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    throw err
  } finally {
    stop.abort()
  }
}
