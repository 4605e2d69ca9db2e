import type { Namespace } from 'etcd3'
import { dueOf, dueReads } from './delays.js'
import { queueKeys } from './keys.js'
import type { KeyValue, Keyspace } from './kv.js'
import type { QueueOrder } from './queue-order.js'
import { waitFor } from './wait.js'

/**
 * Finding visible items: one Txn reads the queue's claim markers and its first items in queue
 * order; an item without a marker is visible. After a lost claim race, picks start at a random
 * offset so that concurrent consumers do not all race for the same first key.
 */

/** What a scan saw, at one revision. */
export interface QueueView {
  /** Unclaimed items, in queue order. */
  visible: KeyValue[]
  /** How many claim markers exist (claimed items, or nacked ones waiting out their retry delay). */
  claims: number
  /** Delayed messages whose timer is gone: to be moved into the queue. */
  due: KeyValue[]
  /** Whether any delayed message waits (then a timer's expiry is worth waking for). */
  delayed: boolean
  revision: bigint
}

/** After a lost claim race, this many picks start at a random offset (see {@link Scanner.pick}). */
const SPREAD_ROUNDS = 8

/** Scans one queue; holds the spread state of one consumer object. */
export class Scanner {
  private readonly items: string
  private readonly claims: string
  /** Picks left that start at a random offset, after this consumer lost a claim race. */
  private spread = 0

  constructor(
    private readonly ks: Keyspace,
    private readonly name: string,
    private readonly order: QueueOrder,
  ) {
    this.items = queueKeys.items(name)
    this.claims = queueKeys.claims(name)
  }

  /** Notes that a claim lost a race: the next picks spread out. */
  lostRace(): void {
    this.spread = SPREAD_ROUNDS
  }

  /**
   * One Txn reading every claim marker of this queue, the first items in queue order and the
   * soonest delayed messages; returns the unclaimed items and the due delayed messages. A second
   * Range (at the same revision) looks further when claimed items fill the first page.
   */
  async scan(max: number): Promise<QueueView> {
    // While spreading, look wider so that racing receivers have room to pick different items.
    const window = this.spread > 0 ? Math.max(4 * max, 32) : Math.max(2 * max, 16)
    const items = { prefix: true, sort: this.order.sort, limit: window }
    const res = await this.ks.txn([], [this.ks.get(this.claims, { prefix: true }), this.ks.get(this.items, items), ...dueReads(this.ks, this.name)])
    const claimed = new Set(res.results[0].range!.kvs.map((kv) => kv.key))
    const unclaimed = (kvs: KeyValue[]) => kvs.filter((kv) => !claimed.has(queueKeys.marker(kv.key, kv.createRevision)))
    let page = res.results[1].range!
    let visible = unclaimed(page.kvs)
    if (visible.length < window && page.more && claimed.size > 0) {
      page = await this.ks.range(this.items, { ...items, limit: window + claimed.size, revision: res.revision })
      visible = unclaimed(page.kvs)
    }
    return { visible, claims: claimed.size, ...dueOf(this.name, res, 2), revision: res.revision }
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
    const rank = (kv: KeyValue) => this.order.priorityOf(kv.key, this.items) ?? 0
    const cut = rank(visible[max - 1])
    const urgent = visible.filter((kv) => rank(kv) < cut)
    const pool = visible.filter((kv) => rank(kv) === cut)
    const need = max - urgent.length
    const start = Math.floor(Math.random() * (pool.length - need + 1))
    return [...urgent, ...pool.slice(start, start + need)]
  }
}

/**
 * Resolves when queue `name` may have a visible item: a new item, (if any are claimed) a claim
 * ending, or (if any are delayed) a timer expiring. Rejects with the signal's reason when it aborts.
 */
export async function waitForChange(client: Namespace, name: string, view: QueueView, signal?: AbortSignal): Promise<void> {
  const stop = new AbortController()
  const wait = signal ? AbortSignal.any([stop.signal, signal]) : stop.signal
  const from = view.revision + 1n
  const waits = [waitFor(client, { key: queueKeys.items(name), prefix: true }, from, (type) => type === 'put', wait)]
  if (view.claims > 0) waits.push(waitFor(client, { key: queueKeys.claims(name), prefix: true }, from, (type) => type === 'delete', wait))
  // A timer expiring makes its message due; a delayed message arriving means a timer to watch.
  if (view.delayed) waits.push(waitFor(client, { key: queueKeys.timers(name), prefix: true }, from, (type) => type === 'delete', wait))
  else waits.push(waitFor(client, { key: queueKeys.delayed(name), prefix: true }, from, (type) => type === 'put', wait))
  try {
    await Promise.race(waits)
  } catch (err) {
    if (signal?.aborted) throw signal.reason
    throw err
  } finally {
    stop.abort()
  }
}
