import type { Namespace } from 'etcd3'
import { checkClient, checkOptions } from './check.js'
import { claimChunk, chunked, CLAIM_CHUNK, deadLetter, type Claim } from './claim.js'
import { dropLease, grantLease, revokeLease, settleClaim, trackBatch, type ClaimLease } from './claim-leases.js'
import { ClaimLostError, InvalidArgumentError } from './errors.js'
import { queueKeys } from './keys.js'
import { checkName, keyspace, type KeyValue, type Keyspace } from './kv.js'
import { checkDeadLetter, checkReceive, checkSeconds, type CheckedReceive, type DeadLetterOptions, type DequeueOptions, type Message, type NackOptions, type ReceiveOptions } from './queue-options.js'
import type { QueueOrder } from './queue-order.js'
import { Scanner, waitForChange } from './queue-scan.js'
import { claimLost, claimState, formatReceipt, ownClaim, parseReceipt, receiptCounter, receiptMarker, type Receipt } from './receipts.js'

/**
 * The consumer side shared by {@link Queue} and {@link PriorityQueue}: Go's destructive
 * `dequeue`, and an at-least-once `receive` / `ack` / `nack` that keeps Go's item layout.
 * Composed from the claim pieces: the queue's order (a value), scanning (`queue-scan.ts`),
 * claiming and dead-lettering (`claim.ts`), claim leases (`claim-leases.ts`), receipts.
 *
 * Layout (everything outside `<name>/`, so Go producers and consumers see only their items;
 * built by `queueKeys` in keys.ts):
 * - item (Go's): `<name>/<rest>`, value = the payload, no lease.
 * - claim marker: `__claims/<name>/<rest>/<itemCreateRev>`, value "", attached to the
 *   receiver's lease. While it exists the item is invisible to other receivers; when the
 *   lease ends (visibility timeout, crash) etcd deletes it and the item is visible again.
 * - receive counter: `__receives/<name>/<rest>/<itemCreateRev>`, value "", no lease. Each
 *   claim puts it once, so its etcd `version` is the receive count.
 * The item's create revision in the marker/counter keys tells apart two items that reuse a
 * key (PriorityQueue sequence numbers restart when a bucket empties).
 *
 * A Go `Dequeue` knows nothing of markers and may take a claimed item; the receiver's ack
 * then fails with {@link ClaimLostError} `gone`, and the item's counter is left behind.
 */

export type { DeadLetterOptions, DequeueOptions, Enqueued, Message, NackOptions, ReceiveOptions } from './queue-options.js'

/**
 * Base of {@link Queue} and {@link PriorityQueue}: everything but `enqueue`. The order items are
 * served in is a {@link QueueOrder} value given by the subclass, not a hook.
 */
export class ClaimQueue {
  protected readonly ks: Keyspace
  /** `<name>/`: the trailing "/" keeps queue `q` away from `q2`'s items (Go's Queue lacks it). */
  protected readonly prefix: string
  private readonly defaults: DeadLetterOptions
  private readonly scanner: Scanner
  /** The last receive found messages: grant the next lease in parallel with the scan. */
  private busy = false

  constructor(
    readonly client: Namespace,
    /** The queue name; items live under `<name>/`. */
    readonly name: string,
    /** The order items are served in. */
    protected readonly order: QueueOrder,
    options: DeadLetterOptions,
    what: string,
  ) {
    checkClient(client, what)
    checkName(name, `${what} name`)
    this.ks = keyspace(client)
    this.prefix = queueKeys.items(name)
    this.defaults = checkDeadLetter(options, name, `${what} options`)
    this.scanner = new Scanner(this.ks, name, order)
  }

  /** Number of items in the queue, claimed ones included (one count-only Range). */
  async size(): Promise<number> {
    const res = await this.ks.range(this.prefix, { prefix: true, countOnly: true })
    return Number(res.count)
  }

  /**
   * Go's destructive `Dequeue`: blocks until it deletes an item and returns its value. Takes
   * the first visible item in queue order; unlike Go's, it skips items a receiver has claimed,
   * and it wakes only for this queue's keys. The item is gone once returned: a crash before it
   * is processed loses it (use `receive` for at-least-once).
   */
  async dequeue(options?: DequeueOptions): Promise<string> {
    const { signal } = checkOptions(options, 'dequeue')
    for (;;) {
      signal?.throwIfAborted()
      const view = await this.scanner.scan(1)
      for (const kv of view.visible) {
        const res = await this.ks.txn(
          [this.ks.compare(kv.key, 'Mod', '==', kv.modRevision), this.ks.compare(queueKeys.marker(kv.key, kv.createRevision), 'Create', '==', 0)],
          [this.ks.delete(kv.key), this.ks.delete(queueKeys.counter(kv.key, kv.createRevision))],
        )
        if (res.succeeded) return kv.value.toString()
      }
      if (view.visible.length === 0) await waitForChange(this.client, this.name, view, signal)
    }
  }

  /**
   * Claims up to `max` visible messages under one lease (see {@link ReceiveOptions}). Each
   * message stays in the queue, invisible to other receivers, until it is acked (deleted),
   * nacked (visible again) or its claim's lease ends (visible again). Served in queue order,
   * except that after this object lost a claim race it starts at a random offset among the
   * first visible items of the most urgent priority still needed, so concurrent consumers do
   * not all race for the same first key. Messages received `maxReceives` times go to the
   * dead-letter queue instead of being returned.
   */
  async receive(options?: ReceiveOptions): Promise<Message[]> {
    const given = checkOptions(options, 'receive')
    const o = checkReceive(given, this.defaults, this.name)
    const { signal } = given
    signal?.throwIfAborted()
    o.session?.signal.throwIfAborted()
    let lease: ClaimLease | undefined
    // On a busy queue (the last receive found messages) grant in parallel with the first scan,
    // saving a round trip; otherwise only once there is something to claim, so a receive
    // waiting on an empty queue holds no lease.
    let early = this.busy && !o.session ? this.claimLease(o) : undefined
    early?.catch(() => {}) // awaited below; a scan failure must not leave it unhandled
    try {
      for (;;) {
        const view = await this.scanner.scan(o.max)
        if (early) [lease, early] = [await early, undefined]
        if (view.visible.length > 0) {
          lease ??= await this.claimLease(o)
          const messages = await this.claimBatch(this.scanner.pick(view.visible, o.max), lease, o)
          if (messages.length > 0) {
            trackBatch(this.client, lease, messages.map((m) => m.key))
            lease = undefined
            this.busy = true
            return messages
          }
          continue // lost every race, or all went to the dead-letter queue: look again
        }
        this.busy = false
        if (lease) await dropLease(this.client, lease)
        lease = undefined
        if (!o.wait) return []
        await waitForChange(this.client, this.name, view, signal)
      }
    } finally {
      if (early) lease = await early.catch(() => undefined)
      if (lease) await dropLease(this.client, lease)
    }
  }

  /**
   * Deletes a received message, its claim marker and its receive counter in one Txn, guarded
   * by the claim still being this receipt's. Throws {@link ClaimLostError} (and changes
   * nothing) when the claim expired, was taken over, or the item already left the queue.
   */
  async ack(message: Message | string): Promise<void> {
    const r = this.receipt(message)
    const res = await this.ks.txn(ownClaim(this.ks, r), this.ackOps(r), claimState(this.ks, r))
    await settleClaim(this.client, r.leaseId, r.key)
    if (!res.succeeded) throw claimLost('ack', r, res, this.name)
  }

  /**
   * Acks many messages with one Txn per 100 (each message in its own nested Txn, with the same
   * guard and deletes as {@link ack}, so one lost claim does not fail the others). Resolves
   * with one entry per given message, in order: `undefined` when it was acked, or the
   * {@link ClaimLostError} `ack` would have thrown for it (nothing changed for that one).
   * Rejects only when the input is invalid (before any write) or etcd fails; a message given
   * twice is acked once (its later entries report it `gone`).
   */
  async ackMany(messages: readonly (Message | string)[]): Promise<(ClaimLostError | undefined)[]> {
    if (!Array.isArray(messages)) throw new InvalidArgumentError(`ackMany expects an array of messages or receipts, got ${typeof messages}`)
    const receipts = messages.map((m) => this.receipt(m))
    // A receipt given twice goes into the Txn once: etcd refuses a Txn touching a key twice.
    const first = new Map<string, number>()
    receipts.forEach((r, i) => first.has(receiptMarker(r)) || first.set(receiptMarker(r), i))
    const unique = [...first.values()]
    const outcomes: (ClaimLostError | undefined)[] = new Array(receipts.length)
    await Promise.all(
      chunked(unique, CLAIM_CHUNK).map(async (chunk) => {
        const res = await this.ks.txn(
          [],
          chunk.map((i) => this.ks.txnOp(ownClaim(this.ks, receipts[i]), this.ackOps(receipts[i]), claimState(this.ks, receipts[i]))),
        )
        chunk.forEach((i, j) => {
          const sub = res.results[j].txn!
          if (!sub.succeeded) outcomes[i] = claimLost('ack', receipts[i], sub, this.name)
        })
      }),
    )
    receipts.forEach((r, i) => {
      const j = first.get(receiptMarker(r))!
      if (j === i) return
      outcomes[i] = outcomes[j] ?? new ClaimLostError('gone', `ack of ${JSON.stringify(r.key)} in queue ${JSON.stringify(this.name)} did nothing: the message was given to ackMany more than once and acked once`)
    })
    for (const i of unique) await settleClaim(this.client, receipts[i].leaseId, receipts[i].key)
    return outcomes
  }

  /**
   * Gives a received message back: visible again at once, or after `delay` seconds (its claim
   * marker moves to a lease of that TTL). The receive count is kept. Throws
   * {@link ClaimLostError} when the claim is no longer this receipt's.
   */
  async nack(message: Message | string, options?: NackOptions): Promise<void> {
    const r = this.receipt(message)
    const delay = checkSeconds(checkOptions(options, 'nack').delay ?? 0, 'nack delay', 0)
    const marker = receiptMarker(r)
    const hold = delay > 0 ? await grantLease(this.client, delay) : undefined
    const res = await this.ks.txn(ownClaim(this.ks, r), [hold ? this.ks.put(marker, '', hold) : this.ks.delete(marker)], claimState(this.ks, r))
    await settleClaim(this.client, r.leaseId, r.key)
    if (!res.succeeded) {
      if (hold) await revokeLease(this.client, hold)
      throw claimLost('nack', r, res, this.name)
    }
  }

  /** What an ack deletes: the item, its marker and its counter. */
  private ackOps(r: Receipt) {
    return [this.ks.delete(r.key), this.ks.delete(receiptMarker(r)), this.ks.delete(receiptCounter(r))]
  }

  /** Claims the picked items (chunks in parallel), then moves over-received ones to the dead-letter queue. */
  private async claimBatch(picked: KeyValue[], lease: ClaimLease, o: CheckedReceive): Promise<Message[]> {
    const chunks = await Promise.all(chunked(picked, CLAIM_CHUNK).map((c) => claimChunk(this.ks, c, lease.id)))
    if (chunks.some((c) => c.lostAny)) this.scanner.lostRace()
    const messages: Message[] = []
    const moves: Promise<void>[] = []
    for (const c of chunks.flatMap((x) => x.claims)) {
      if (o.maxReceives !== undefined && c.count > o.maxReceives) moves.push(deadLetter(this.ks, c, o.deadLetterQueue!))
      else messages.push(this.message(c, lease.id))
    }
    await Promise.all(moves)
    return messages
  }

  private message(c: Claim, leaseId: string): Message {
    const { kv } = c
    const priority = this.order.priorityOf(kv.key, this.prefix)
    return {
      id: kv.createRevision.toString(),
      key: kv.key,
      value: kv.value.toString(),
      raw: kv.value,
      receiveCount: c.count,
      ...(priority === undefined ? {} : { priority }),
      receipt: formatReceipt({ key: kv.key, createRev: kv.createRevision, claimRev: c.claimRev, leaseId }),
    }
  }

  private receipt(message: Message | string): Receipt {
    return parseReceipt(message, this.prefix, this.name)
  }

  private async claimLease(o: CheckedReceive): Promise<ClaimLease> {
    if (o.session) {
      o.session.signal.throwIfAborted()
      return { id: o.session.leaseId, granted: false, ttl: o.session.ttl }
    }
    return { id: await grantLease(this.client, o.visibilityTimeout), granted: true, ttl: o.visibilityTimeout }
  }
}
