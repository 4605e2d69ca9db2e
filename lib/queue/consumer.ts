import type { Namespace } from 'etcd3'
import { checkBackoff, retryDelaySeconds, type Backoff } from './backoff.js'
import { checkClient, checkOptions, checkSeconds } from '../core/check.js'
import { ACK_CHUNK, claimChunk, chunked, CLAIM_CHUNK, deadLetter, leave, leaveOps, take, type Claim } from './moves.js'
import { dropLease, grantClaimLease, keepClaimFresh, settleClaim, trackBatch, type ClaimLease } from './claim-leases.js'
import { grantLease, revokeLease } from '../core/leases.js'
import { promoteAll, putDelayed } from './delays.js'
import { ClaimLostError, InvalidArgumentError, MiddyEtcdError } from '../errors.js'
import { queueKeys } from '../core/keys.js'
import { Branch, checkName, keyspace, type KeyValue, type Keyspace } from '../core/kv.js'
import { arrivalPart, type ItemSlot, type QueueRef } from './placement.js'
import { traceOf, type ItemMeta } from './meta.js'
import {
  checkDeadLetter,
  checkReceive,
  checkRedrive,
  type CheckedReceive,
  type DeadLetterOptions,
  type DequeueOptions,
  type Enqueued,
  type Message,
  type NackOptions,
  type QueueOptions,
  type ReceiveOptions,
  type RedriveOptions,
  type Redriven,
} from './options.js'
import type { QueueOrder } from './order.js'
import { Scanner, waitForChange, type QueueView } from './scan.js'
import { claimLost, claimState, formatReceipt, ownClaim, parseReceipt, receiptMarker, type Receipt } from './receipts.js'
import { redrive } from './redrive.js'
import { Sweeper, sweepQueue, type Swept } from './sweep.js'
import { countDeadLetters, endReceive, endSend, startReceive, startSend, startSettle } from '../telemetry/messaging.js'

/**
 * The consumer side shared by {@link Queue} and {@link PriorityQueue}: Go's destructive
 * `dequeue`, and an at-least-once `receive` / `ack` / `nack` that keeps Go's item layout, with
 * retry back-off, dead letters, delayed messages, message groups and redrive. Composed from
 * the queue's order and key slots (values), scanning (`scan.ts`), claiming and leaving
 * (`moves.ts`), arrivals and group hand-on (`placement.ts`), delays (`delays.ts`), claim leases
 * (`claim-leases.ts`), receipts and redrive. Every key comes from `queueKeys` (keys.ts).
 *
 * Layout (everything but the items outside `<name>/`, so Go producers and consumers see only
 * items):
 * - item (Go's): `<name>/<rest>`, value = the payload, no lease.
 * - claim marker: `__claims/<name>/<rest>/<itemCreateRev>`, value "", on the receiver's lease.
 *   While it exists the item is invisible to other receivers; when the lease ends (visibility
 *   timeout, crash, end of a retry delay) etcd deletes it and the item is visible again.
 * - receive counter: `__receives/<name>/<rest>/<itemCreateRev>`, no lease; each claim puts it
 *   once, so its etcd `version` is the receive count.
 * - metadata, delayed messages, group heads and waiting lists: see keys.ts.
 * The item's create revision in the marker/counter keys tells apart two items that reuse a
 * key (PriorityQueue sequence numbers restart when a bucket empties).
 *
 * A Go `Dequeue` knows nothing of markers and may take a claimed (or retry-delayed) item; the
 * receiver's ack then fails with {@link ClaimLostError} `gone`. Delayed and group-waiting
 * messages are out of its sight until they move under `<name>/`.
 */

export type {
  DeadLetterOptions,
  DequeueOptions,
  EnqueueOptions,
  Enqueued,
  Message,
  NackOptions,
  PriorityEnqueueOptions,
  QueueOptions,
  ReceiveOptions,
  RedriveOptions,
  Redriven,
} from './options.js'
export type { Swept } from './sweep.js'

/** A receive that finds nothing sweeps one step of what Go consumers left behind at most this often (ms)… */
const SWEEP_IDLE_MS = 5_000
/** …and one that claims, beside its claim, at most this often. */
const SWEEP_BUSY_MS = 30_000

/**
 * Base of {@link Queue} and {@link PriorityQueue}: everything but the `enqueue` signature. The
 * order items are served in and how they are keyed are values given by the subclass, not hooks.
 */
export class ClaimQueue {
  protected readonly ks: Keyspace
  /** `<name>/`: the trailing "/" keeps queue `q` away from `q2`'s items (Go's Queue lacks it). */
  protected readonly prefix: string
  private readonly defaults: DeadLetterOptions
  private readonly backoff: Backoff
  private readonly scanner: Scanner
  /** What the claim, placement and redrive functions need of this queue. */
  private readonly ref: QueueRef
  /** The last receive found messages: grant the next lease in parallel with the scan. */
  private busy = false
  /** Removes, a step at a time, the bookkeeping keys of messages a Go consumer took. */
  private readonly sweeper: Sweeper
  private sweptAt = Number.NEGATIVE_INFINITY

  constructor(
    readonly client: Namespace,
    /** The queue name; items live under `<name>/`. */
    readonly name: string,
    /** The order items are served in. */
    protected readonly order: QueueOrder,
    /** How new items are keyed. */
    protected readonly slotOf: ItemSlot,
    options: QueueOptions,
    what: string,
  ) {
    checkClient(client, what)
    checkName(name, `${what} name`)
    options = checkOptions(options, `${what} options`)
    this.ks = keyspace(client)
    this.prefix = queueKeys.items(name)
    this.defaults = checkDeadLetter(options, name, `${what} options`)
    this.backoff = checkBackoff(options, `${what} options`)
    this.scanner = new Scanner(this.ks, name, order)
    this.ref = { ks: this.ks, name, slotOf }
    this.sweeper = new Sweeper(this.ref)
  }

  /** Number of items in the queue, claimed ones included (one count-only Range); delayed and group-waiting messages are not counted. */
  async size(): Promise<number> {
    const res = await this.ks.range(this.prefix, { prefix: true, countOnly: true })
    return Number(res.count)
  }

  /**
   * Go's destructive `Dequeue`: blocks until it deletes an item and returns its value. Takes
   * the first visible item in queue order; unlike Go's, it skips items a receiver has claimed,
   * moves due delayed messages in, passes a group's turn on, and wakes only for this queue's
   * keys. The item is gone once returned: a crash before it is processed loses it (use
   * `receive` for at-least-once).
   */
  async dequeue(options?: DequeueOptions): Promise<string> {
    const { signal } = checkOptions(options, 'dequeue')
    for (;;) {
      signal?.throwIfAborted()
      const view = await this.scanner.scan(1)
      if (await this.promoteDue(view)) continue
      for (const kv of view.visible) {
        const value = await take(this.ref, kv)
        if (value !== undefined) return value.toString()
      }
      if (view.visible.length > 0) continue
      await this.tidy(true)
      this.scanner.noted(await waitForChange(this.client, this.name, view, signal))
    }
  }

  /**
   * Claims up to `max` visible messages under one lease (see {@link ReceiveOptions}). Each
   * message stays in the queue, invisible to other receivers, until it is acked (deleted),
   * nacked (visible again, after its retry delay) or its claim's lease ends (visible again).
   * Served in queue order, except that after this object lost a claim race it starts at a
   * random offset among the first visible items of the most urgent priority still needed, so
   * concurrent consumers do not all race for the same first key. Messages received
   * `maxReceives` times go to the dead-letter queue instead of being returned; due delayed
   * messages are moved into the queue first.
   */
  async receive(options?: ReceiveOptions): Promise<Message[]> {
    const given = checkOptions(options, 'receive')
    const o = checkReceive(given, this.defaults, this.name)
    const { signal } = given
    signal?.throwIfAborted()
    o.session?.signal.throwIfAborted()
    const probe = startReceive(this.name)
    if (probe === undefined) return this.receiveOnce(o, signal)
    try {
      const messages = await this.receiveOnce(o, signal)
      endReceive(probe, this.name, messages)
      return messages
    } catch (err) {
      // A wait the caller stopped (a long poll's budget, a dispatcher's shutdown) received
      // nothing; it did not fail.
      if (signal?.aborted && err === signal.reason) endReceive(probe, this.name, [])
      else probe.fail(err)
      throw err
    }
  }

  private async receiveOnce(o: CheckedReceive, signal: AbortSignal | undefined): Promise<Message[]> {
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
        if (await this.promoteDue(view)) continue
        if (view.visible.length > 0) {
          lease ??= await this.claimLease(o)
          const [messages] = await Promise.all([this.claimBatch(this.scanner.pick(view.visible, o.max), lease, o), this.tidy(false)])
          if (messages.length > 0) {
            await keepClaimFresh(this.client, lease)
            trackBatch(
              this.client,
              lease,
              messages.map((m) => m.key),
            )
            lease = undefined
            this.busy = true
            return messages
          }
          continue // lost every race, or all went to the dead-letter queue: look again
        }
        this.busy = false
        if (lease) await dropLease(this.client, lease)
        lease = undefined
        await this.tidy(true)
        if (!o.wait) return []
        this.scanner.noted(await waitForChange(this.client, this.name, view, signal))
      }
    } finally {
      if (early) lease = await early.catch(() => undefined)
      if (lease) await dropLease(this.client, lease)
    }
  }

  /**
   * Deletes a received message, its claim marker, receive counter and metadata, and passes its
   * group's turn on, in one Txn guarded by the claim still being this receipt's. Throws
   * {@link ClaimLostError} (and changes nothing) when the claim expired, was taken over, or the
   * item already left the queue.
   */
  async ack(message: Message | string): Promise<void> {
    const r = this.receipt(message)
    const probe = startSettle(this.name, 'ack', 1, typeof message === 'string' ? undefined : message.id)
    const lost = await leave(this.ref, r).finally(() => settleClaim(this.client, r.leaseId, r.key))
    if (lost) {
      probe?.fail(lost)
      throw lost
    }
    probe?.end()
  }

  /**
   * Acks many messages with one Txn per 100 (each message in its own nested Txn, with the same
   * guard and deletes as {@link ack}, so one lost claim does not fail the others; a grouped
   * message is acked on its own, as it passes its group's turn on). Resolves with one entry per
   * given message, in order: `undefined` when it was acked, or the {@link ClaimLostError} `ack`
   * would have thrown for it (nothing changed for that one). Rejects only when the input is
   * invalid (before any write) or etcd fails; a message given twice is acked once (its later
   * entries report it `gone`).
   */
  async ackMany(messages: readonly (Message | string)[]): Promise<(ClaimLostError | undefined)[]> {
    if (!Array.isArray(messages)) throw new InvalidArgumentError(`ackMany expects an array of messages or receipts, got ${typeof messages}`)
    const receipts = messages.map((m) => this.receipt(m))
    const probe = startSettle(this.name, 'ack', receipts.length)
    try {
      const outcomes = await this.ackAll(receipts)
      probe?.end()
      return outcomes
    } catch (err) {
      probe?.fail(err)
      throw err
    }
  }

  private async ackAll(receipts: Receipt[]): Promise<(ClaimLostError | undefined)[]> {
    // A receipt given twice goes into the Txn once: etcd refuses a Txn touching a key twice.
    const first = new Map<string, number>()
    for (const [i, r] of receipts.entries()) if (!first.has(receiptMarker(r))) first.set(receiptMarker(r), i)
    const unique = [...first.values()]
    const outcomes: (ClaimLostError | undefined)[] = new Array(receipts.length)
    const plain = unique.filter((i) => receipts[i].group === undefined)
    const grouped = unique.filter((i) => receipts[i].group !== undefined)
    await Promise.all([
      ...chunked(plain, ACK_CHUNK).map(async (chunk) => {
        const batch = new Branch()
        const acks = chunk.map((i) => {
          const r = receipts[i]
          return {
            i,
            ack: batch.add({
              ack: this.ks.namedTxnOp(ownClaim(this.ks, r), { leave: leaveOps(this.ks, r.key, r.createRev) }, claimState(this.ks, r)),
            }),
          }
        })
        const res = await this.ks.namedTxn([], batch.ops)
        for (const { i, ack } of acks) {
          const outcome = ack(res.results).ack
          if (!outcome.succeeded) outcomes[i] = claimLost('ack', receipts[i], outcome.results, this.name)
        }
      }),
      ...grouped.map(async (i) => (outcomes[i] = await leave(this.ref, receipts[i]))),
    ])
    receipts.forEach((r, i) => {
      const j = first.get(receiptMarker(r))!
      if (j === i) return
      outcomes[i] =
        outcomes[j] ??
        new ClaimLostError(
          'gone',
          `ack of ${JSON.stringify(r.key)} in queue ${JSON.stringify(this.name)} did nothing: the message was given to ackMany more than once and acked once`,
        )
    })
    for (const i of unique) await settleClaim(this.client, receipts[i].leaseId, receipts[i].key)
    return outcomes
  }

  /**
   * Gives a received message back. It becomes visible again after `delay` seconds (default:
   * the queue's retry back-off for its receive count; 0: at once) — its claim marker moves to
   * a lease of that TTL, so no receiver takes it before etcd expires that lease. A message
   * already received `maxReceives` times (the queue's setting) goes to the dead-letter queue
   * now instead. The receive count is kept. Throws {@link ClaimLostError} when the claim is no
   * longer this receipt's.
   */
  async nack(message: Message | string, options?: NackOptions): Promise<void> {
    const r = this.receipt(message)
    const given = checkOptions(options, 'nack').delay
    const delay = given === undefined ? retryDelaySeconds(r.count, this.backoff) : checkSeconds(given, 'nack delay', 0)
    const { maxReceives } = this.defaults
    const id = typeof message === 'string' ? undefined : message.id
    const deadLetters = maxReceives !== undefined && r.count >= maxReceives
    const probe = startSettle(this.name, deadLetters ? 'dead_letter' : 'nack', 1, id)
    try {
      await this.nackOnce(r, delay, deadLetters)
      probe?.end()
    } catch (err) {
      probe?.fail(err)
      throw err
    }
  }

  private async nackOnce(r: Receipt, delay: number, deadLetters: boolean): Promise<void> {
    const { deadLetterQueue } = this.defaults
    try {
      if (deadLetters) {
        if (await deadLetter(this.ref, r, deadLetterQueue!, this.order.priorityOf(r.key, this.prefix))) {
          countDeadLetters(this.name, 1)
          return
        }
      }
      const marker = receiptMarker(r)
      const hold = delay > 0 ? await grantLease(this.client, delay) : undefined
      const res = await this.ks.namedTxn(
        ownClaim(this.ks, r),
        { release: hold ? this.ks.put(marker, '', hold) : this.ks.deleteOp(marker) },
        claimState(this.ks, r),
      )
      if (!res.succeeded) {
        if (hold) await revokeLease(this.client, hold)
        throw claimLost('nack', r, res.results, this.name)
      }
    } finally {
      await settleClaim(this.client, r.leaseId, r.key)
    }
  }

  /**
   * Moves dead letters from `options.from` back into this queue (oldest first, in key order; at most
   * `options.max`), each in one Txn: never lost, never doubled, even when interrupted. A moved
   * message starts over with receive count 0 and keeps its id and group. Dead letters a
   * consumer of the dead-letter queue has claimed are left there (counted as `skipped`).
   */
  async redrive(options: RedriveOptions): Promise<Redriven> {
    const { from, max, signal } = checkRedrive(options, this.name)
    return redrive(this.ref, from, max, signal)
  }

  /**
   * Removes what consumers that know only Go's layout left behind: a Go `Dequeue` deletes an item
   * and nothing else, so the receive counter, metadata and claim marker of a message it took stay,
   * and if it was its group's current message the group stays blocked. Sweeps every such key of
   * this queue (pages in key order, each removal guarded by its item still being gone) and passes
   * the turn of every headless group on; returns how many went. Receives do this a page at a time
   * as they go (when they find nothing, every 5 s at most; beside a claim, every 30 s); this is
   * the whole queue at once (`middy-etcd queue sweep <name>`).
   */
  async sweep(options?: { signal?: AbortSignal }): Promise<Swept> {
    const { signal } = checkOptions(options, 'sweep')
    return sweepQueue(this.ref, signal)
  }

  /**
   * Puts a message into the queue — after `delayMs`, or behind its group's head — and returns
   * where it was written and its id (the revision of the Txn that wrote it).
   */
  protected async arrive(payload: Buffer, meta: ItemMeta, delayMs: number): Promise<Enqueued> {
    const probe = startSend(this.name)
    if (probe === undefined) return this.arriveOnce(payload, meta, delayMs)
    // The send span's context goes with the message, in its metadata (never in the item's value).
    const trace = probe.trace()
    try {
      const enqueued = await this.arriveOnce(payload, trace ? { ...meta, ...trace } : meta, delayMs)
      endSend(probe, this.name, enqueued.id)
      return enqueued
    } catch (err) {
      probe.fail(err)
      throw err
    }
  }

  private async arriveOnce(payload: Buffer, meta: ItemMeta, delayMs: number): Promise<Enqueued> {
    if (delayMs > 0) {
      const { key, revision } = await putDelayed(this.client, this.ks, this.name, { payload, meta }, delayMs)
      return { key, id: revision.toString() }
    }
    // Unbounded, as Go's: a failed attempt means another producer took the slot (progress).
    for (;;) {
      const part = await arrivalPart(this.ref, { payload, meta })
      // A grouped message lands at `where` or, when its group has a head, at `waiting`: read
      // after the arrival's ops, the key at `where` says which (the Txn's compares found it free).
      const placed = part.waiting === undefined ? undefined : this.ks.get(part.where, { countOnly: true })
      const res = await this.ks.namedTxn(part.compares, { arrival: part.ops, placed })
      if (!res.succeeded) continue
      const waits = part.waiting !== undefined && res.results.placed?.count === 0n
      return { key: waits ? part.waiting! : part.where, id: res.revision.toString() }
    }
  }

  /**
   * One sweep step, if the last was long enough ago: what a Go consumer left behind goes as
   * consumers pass. A step that fails (etcd unreachable) leaves it for the next; the receive
   * goes on either way.
   */
  private async tidy(idle: boolean): Promise<void> {
    const now = performance.now()
    if (now - this.sweptAt < (idle ? SWEEP_IDLE_MS : SWEEP_BUSY_MS)) return
    this.sweptAt = now
    await this.sweeper.step().catch((err: unknown) => {
      if (!(err instanceof MiddyEtcdError)) throw err
    })
  }

  /** Moves the due delayed messages of a scan into the queue; true if there were any. */
  private async promoteDue(view: QueueView): Promise<boolean> {
    if (view.due.length === 0) return false
    await promoteAll(this.ref, view.due)
    return true
  }

  /** Claims the picked items (chunks in parallel), then moves over-received ones to the dead-letter queue. */
  private async claimBatch(picked: KeyValue[], lease: ClaimLease, o: CheckedReceive): Promise<Message[]> {
    const chunks = await Promise.all(chunked(picked, CLAIM_CHUNK).map((c) => claimChunk(this.ks, c, lease.id)))
    if (chunks.some((c) => c.lostAny)) this.scanner.lostRace()
    const messages: Message[] = []
    const moves: Promise<boolean>[] = []
    for (const c of chunks.flatMap((x) => x.claims)) {
      const m = this.message(c, lease.id)
      if (o.maxReceives !== undefined && c.count > o.maxReceives)
        moves.push(deadLetter(this.ref, this.receipt(m), o.deadLetterQueue!, m.priority))
      else messages.push(m)
    }
    countDeadLetters(this.name, (await Promise.all(moves)).filter((moved) => moved).length)
    return messages
  }

  private message(c: Claim, leaseId: string): Message {
    const { kv, meta } = c
    const priority = this.order.priorityOf(kv.key, this.prefix)
    const receipt = formatReceipt({
      key: kv.key,
      createRev: kv.createRevision,
      claimRev: c.claimRev,
      leaseId,
      count: c.count,
      group: meta.group,
    })
    return {
      id: meta.id ?? kv.createRevision.toString(),
      key: kv.key,
      value: kv.value.toString(),
      raw: kv.value,
      receiveCount: c.count,
      ...(priority === undefined ? {} : { priority }),
      ...(meta.group === undefined ? {} : { group: meta.group }),
      ...traceOf(meta),
      receipt,
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
    return grantClaimLease(this.client, o.visibilityTimeout)
  }
}
