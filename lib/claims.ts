import type { Namespace } from 'etcd3'
import { checkClient, checkOptions } from './check.js'
import { ClaimLostError, InvalidArgumentError } from './errors.js'
import { checkName, keyspace, toTypedError, type Compare, type KeyValue, type Keyspace, type Op, type SortTarget, type TxnResult } from './kv.js'
import type { Session } from './session.js'
import { waitFor } from './wait.js'

/**
 * The consumer side shared by {@link Queue} and {@link PriorityQueue}: Go's destructive
 * `dequeue`, and an at-least-once `receive` / `ack` / `nack` that keeps Go's item layout.
 *
 * Layout (everything outside `<name>/`, so Go producers and consumers see only their items):
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

/** Options shared by the queue constructors and {@link ReceiveOptions}. */
export interface DeadLetterOptions {
  /**
   * How many times a message may be received. The claim that would deliver it once more
   * moves it to {@link deadLetterQueue} instead (in one Txn). Needs `deadLetterQueue`.
   */
  maxReceives?: number
  /**
   * Name of the (Go-layout) Queue that takes messages received `maxReceives` times. If Go
   * consumers read the queue, pick a name that does not start with the queue's name (e.g.
   * `dlq/<name>`, not `<name>-dlq`): Go's Dequeue ranges `<name>` without "/" and would take
   * the dead letters too.
   */
  deadLetterQueue?: string
}

/** Options of `receive`. */
export interface ReceiveOptions extends DeadLetterOptions {
  /** Most messages to claim, 1..1000 (default 1). Fewer may come back. */
  max?: number
  /**
   * Whole seconds the messages stay invisible to other receivers unless acked (default 30).
   * The receive grants one lease of this TTL for the whole batch and never keeps it alive:
   * a receiver that crashes releases its messages when the lease expires. Once this process
   * has acked or nacked every message of the batch, the lease is revoked; receipts settled in
   * another process leave it to expire. etcd may round a small TTL up to its minimum
   * (about 1.5 x the election timeout). Not allowed together with `session`.
   */
  visibilityTimeout?: number
  /** Claim with this session's lease instead: messages stay invisible while the session lives. */
  session?: Session
  /**
   * With `true` (the default), block until at least one message is claimed; with `false`,
   * return `[]` at once when none is visible.
   */
  wait?: boolean
  /** Aborting it stops a wait and rejects with its reason; nothing is left behind. */
  signal?: AbortSignal
}

/** Options of `nack`. */
export interface NackOptions {
  /** Whole seconds before the message becomes visible again (default 0: at once). */
  delay?: number
}

/** Options of `dequeue`. */
export interface DequeueOptions {
  /** Aborting it stops the wait and rejects with its reason. */
  signal?: AbortSignal
}

/** What `enqueue` wrote. */
export interface Enqueued {
  /** The item key, in Go's layout. */
  key: string
  /** The item's create revision (decimal): the message `id` receivers will see. */
  id: string
}

/** A message claimed by `receive`; settle it with `ack` or `nack`. */
export interface Message {
  /** The item's create revision (decimal): unique in the cluster, the same on every redelivery. */
  readonly id: string
  /** The item key (`<name>/<unixNano>` or `<name>/<prio>/<seq>`). */
  readonly key: string
  /** The payload as UTF-8 text. */
  readonly value: string
  /** The payload bytes. */
  readonly raw: Buffer
  /** How many times it has been received, this time included (1 on first delivery). */
  readonly receiveCount: number
  /** PriorityQueue only: the item's priority (0 is served first). */
  readonly priority?: number
  /**
   * Identifies this claim; `ack`/`nack` accept it in place of the message, in any process
   * (`<itemCreateRev>.<claimRev>.<leaseId>.<key>`).
   */
  readonly receipt: string
}

/** Largest batch one receive claims. */
const MAX_BATCH = 1000
const DEFAULT_VISIBILITY_S = 30
const MAX_TTL_S = 9_000_000
/** Items per claim Txn: N nested Txns of 3 ops stay under etcd's default --max-txn-ops of 128 (N + 3 <= 128). */
const CHUNK = 100
/** After a lost claim race, this many receives start at a random offset (see `pick`). */
const SPREAD_ROUNDS = 8

/** The current Unix time in nanoseconds as a 19-digit decimal (Go's `time.Now().UnixNano()`), increasing in this process. */
export function unixNano(): string {
  let now = EPOCH_OFFSET + process.hrtime.bigint()
  if (now <= lastNano) now = lastNano + 1n
  lastNano = now
  return now.toString()
}
const EPOCH_OFFSET = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint()
let lastNano = 0n

/** One claimed item, before it becomes a {@link Message}. */
interface Claim {
  kv: KeyValue
  claimRev: bigint
  count: number
}

/** A parsed receipt. */
interface Receipt {
  key: string
  createRev: bigint
  claimRev: bigint
  leaseId: string
}

/** The lease a receive claims with; `granted` when this receive owns (and may revoke) it. */
interface ClaimLease {
  id: string
  granted: boolean
  ttl: number
}

/**
 * Open batches of granted leases, by lease id: the claim markers not yet settled. When the
 * last one is acked or nacked the lease is revoked, so finished batches do not pile up leases
 * on the server. Entries of batches nobody settles drop out once their lease has expired.
 */
const batches = new Map<string, { open: Set<string>; expiresAt: number }>()

/**
 * Base of {@link Queue} and {@link PriorityQueue}: everything but `enqueue` and the order items
 * are served in.
 */
export abstract class ClaimQueue {
  protected readonly ks: Keyspace
  /** `<name>/`: the trailing "/" keeps queue `q` away from `q2`'s items (Go's Queue lacks it). */
  protected readonly prefix: string
  private readonly claimsPrefix: string
  private readonly defaults: DeadLetterOptions
  /** Receives left that start at a random offset, after this object lost a claim race. */
  private spread = 0
  /** The last receive found messages: grant the next lease in parallel with the scan. */
  private busy = false

  constructor(
    readonly client: Namespace,
    /** The queue name; items live under `<name>/`. */
    readonly name: string,
    options: DeadLetterOptions,
    what: string,
  ) {
    checkClient(client, what)
    checkName(name, `${what} name`)
    this.ks = keyspace(client)
    this.prefix = `${name}/`
    this.claimsPrefix = `__claims/${name}/`
    this.defaults = this.checkDeadLetter(options, `${what} options`)
  }

  /** Served first-to-last: Go's Queue takes the oldest mod revision, PriorityQueue the smallest key. */
  protected abstract readonly order: [SortTarget, 'Ascend']

  /** The priority encoded in an item key (PriorityQueue), or undefined. Lower is served first. */
  protected priorityOf(_key: string): number | undefined {
    return undefined
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
      const view = await this.scan(1)
      for (const kv of view.visible) {
        const res = await this.ks.txn(
          [this.ks.compare(kv.key, 'Mod', '==', kv.modRevision), this.ks.compare(markerKey(kv), 'Create', '==', 0)],
          [this.ks.delete(kv.key), this.ks.delete(counterKey(kv))],
        )
        if (res.succeeded) return kv.value.toString()
      }
      if (view.visible.length === 0) await this.waitForChange(view.revision, view.claims > 0, signal)
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
    const o = this.checkReceive(given)
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
        const view = await this.scan(o.max)
        if (early) [lease, early] = [await early, undefined]
        if (view.visible.length > 0) {
          lease ??= await this.claimLease(o)
          const messages = await this.claimBatch(this.pick(view.visible, o.max), lease, o)
          if (messages.length > 0) {
            this.track(lease, messages)
            lease = undefined
            this.busy = true
            return messages
          }
          continue // lost every race, or all went to the dead-letter queue: look again
        }
        this.busy = false
        if (lease) await this.dropLease(lease)
        lease = undefined
        if (!o.wait) return []
        await this.waitForChange(view.revision, view.claims > 0, signal)
      }
    } finally {
      if (early) lease = await early.catch(() => undefined)
      if (lease) await this.dropLease(lease)
    }
  }

  /**
   * Deletes a received message, its claim marker and its receive counter in one Txn, guarded
   * by the claim still being this receipt's. Throws {@link ClaimLostError} (and changes
   * nothing) when the claim expired, was taken over, or the item already left the queue.
   */
  async ack(message: Message | string): Promise<void> {
    const r = this.receipt(message)
    const guard = this.ownClaim(r)
    const res = await this.ks.txn(guard, [this.ks.delete(r.key), this.ks.delete(receiptMarker(r)), this.ks.delete(receiptCounter(r))], this.claimState(r))
    await this.settle(r)
    if (!res.succeeded) throw this.lost('ack', r, res)
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
    const chunks: number[][] = []
    for (let i = 0; i < unique.length; i += CHUNK) chunks.push(unique.slice(i, i + CHUNK))
    await Promise.all(
      chunks.map(async (chunk) => {
        const ops = chunk.map((i) => {
          const r = receipts[i]
          return this.ks.txnOp(this.ownClaim(r), [this.ks.delete(r.key), this.ks.delete(receiptMarker(r)), this.ks.delete(receiptCounter(r))], this.claimState(r))
        })
        const res = await this.ks.txn([], ops)
        chunk.forEach((i, j) => {
          const sub = res.results[j].txn!
          if (!sub.succeeded) outcomes[i] = this.lost('ack', receipts[i], sub)
        })
      }),
    )
    receipts.forEach((r, i) => {
      const j = first.get(receiptMarker(r))!
      if (j === i) return
      outcomes[i] = outcomes[j] ?? new ClaimLostError('gone', `ack of ${JSON.stringify(r.key)} in queue ${JSON.stringify(this.name)} did nothing: the message was given to ackMany more than once and acked once`)
    })
    for (const i of unique) await this.settle(receipts[i])
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
    const hold = delay > 0 ? await this.grant(delay) : undefined
    const res = await this.ks.txn(this.ownClaim(r), [hold ? this.ks.put(marker, '', hold) : this.ks.delete(marker)], this.claimState(r))
    await this.settle(r)
    if (!res.succeeded) {
      if (hold) await this.revoke(hold)
      throw this.lost('nack', r, res)
    }
  }

  /**
   * One Txn reading every claim marker of this queue and the first items in queue order;
   * returns the unclaimed ones. A second Range (at the same revision) looks further when
   * claimed items fill the first page.
   */
  private async scan(max: number) {
    // While spreading, look wider so that racing receivers have room to pick different items.
    const window = this.spread > 0 ? Math.max(4 * max, 32) : Math.max(2 * max, 16)
    const items = { prefix: true, sort: this.order, limit: window }
    const res = await this.ks.txn([], [this.ks.get(this.claimsPrefix, { prefix: true }), this.ks.get(this.prefix, items)])
    const claims = res.results[0].range!
    const claimed = new Set(claims.kvs.map((kv) => kv.key))
    let page = res.results[1].range!
    let visible = page.kvs.filter((kv) => !claimed.has(markerKey(kv)))
    if (visible.length < window && page.more && claimed.size > 0) {
      page = await this.ks.range(this.prefix, { ...items, limit: window + claimed.size, revision: res.revision })
      visible = page.kvs.filter((kv) => !claimed.has(markerKey(kv)))
    }
    return { visible, claims: claimed.size, revision: res.revision }
  }

  /**
   * Chooses up to `max` of the visible items. Normally the first ones. While `spread` lasts:
   * all items of a more urgent priority than the max-th, then a random run of the items of
   * that priority (within the scanned window), so racing consumers mostly pick different keys
   * without ever skipping a more urgent item.
   */
  private pick(visible: KeyValue[], max: number): KeyValue[] {
    if (visible.length <= max || this.spread === 0) return visible.slice(0, max)
    this.spread--
    const rank = (kv: KeyValue) => this.priorityOf(kv.key) ?? 0
    const cut = rank(visible[max - 1])
    const urgent = visible.filter((kv) => rank(kv) < cut)
    const pool = visible.filter((kv) => rank(kv) === cut)
    const need = max - urgent.length
    const start = Math.floor(Math.random() * (pool.length - need + 1))
    return [...urgent, ...pool.slice(start, start + need)]
  }

  /** Claims the picked items (chunks in parallel), then moves over-received ones to the dead-letter queue. */
  private async claimBatch(picked: KeyValue[], lease: ClaimLease, o: CheckedReceive): Promise<Message[]> {
    const chunks: KeyValue[][] = []
    for (let i = 0; i < picked.length; i += CHUNK) chunks.push(picked.slice(i, i + CHUNK))
    const claims = (await Promise.all(chunks.map((c) => this.claimChunk(c, lease.id)))).flat()
    const messages: Message[] = []
    const moves: Promise<void>[] = []
    for (const c of claims) {
      if (o.maxReceives !== undefined && c.count > o.maxReceives) moves.push(this.deadLetter(c, o.deadLetterQueue!))
      else messages.push(this.message(c, lease.id))
    }
    await Promise.all(moves)
    return messages
  }

  /**
   * One Txn claiming `kvs`, each item in its own nested Txn so that one taken item does not
   * fail the others: if the item is unchanged and unclaimed, put its marker with the lease,
   * bump its counter and read the counter back (the receive count).
   */
  private async claimChunk(kvs: KeyValue[], leaseId: string): Promise<Claim[]> {
    const ops = kvs.map((kv) =>
      this.ks.txnOp(
        [this.ks.compare(kv.key, 'Mod', '==', kv.modRevision), this.ks.compare(markerKey(kv), 'Create', '==', 0)],
        [this.ks.put(markerKey(kv), '', leaseId), this.ks.put(counterKey(kv)), this.ks.get(counterKey(kv))],
      ),
    )
    const res = await this.ks.txn([], ops)
    const claims: Claim[] = []
    kvs.forEach((kv, i) => {
      const sub = res.results[i].txn!
      if (sub.succeeded) claims.push({ kv, claimRev: res.revision, count: Number(sub.results[2].range!.kvs[0].version) })
    })
    if (claims.length < kvs.length) this.spread = SPREAD_ROUNDS
    return claims
  }

  /** Moves a claimed item to `<dlq>/<unixNano>` (Go layout, same value) and drops its marker and counter, in one Txn. */
  private async deadLetter(c: Claim, dlq: string): Promise<void> {
    const { kv } = c
    for (;;) {
      const target = `${dlq}/${unixNano()}`
      const res = await this.ks.txn(
        [
          this.ks.compare(markerKey(kv), 'Mod', '==', c.claimRev),
          this.ks.compare(kv.key, 'Create', '==', kv.createRevision),
          this.ks.compare(target, 'Version', '==', 0),
        ],
        [this.ks.delete(kv.key), this.ks.delete(markerKey(kv)), this.ks.delete(counterKey(kv)), this.ks.put(target, kv.value)],
        [this.ks.get(target)],
      )
      if (res.succeeded) return
      // Our claim is gone (someone else will deal with the item), unless only the target key clashed.
      if (res.results[0].range!.kvs.length === 0) return
    }
  }

  /** Resolves when this queue may have a visible item: a new item, or (if any are claimed) a claim ending. */
  private async waitForChange(revision: bigint, claimed: boolean, signal?: AbortSignal): Promise<void> {
    const stop = new AbortController()
    const wait = signal ? AbortSignal.any([stop.signal, signal]) : stop.signal
    const from = revision + 1n
    const waits = [waitFor(this.client, { key: this.prefix, prefix: true }, from, (type) => type === 'put', wait)]
    if (claimed) waits.push(waitFor(this.client, { key: this.claimsPrefix, prefix: true }, from, (type) => type === 'delete', wait))
    try {
      await Promise.race(waits)
    } catch (err) {
      if (signal?.aborted) throw signal.reason
      throw err
    } finally {
      stop.abort()
    }
  }

  private message(c: Claim, leaseId: string): Message {
    const { kv } = c
    const priority = this.priorityOf(kv.key)
    return {
      id: kv.createRevision.toString(),
      key: kv.key,
      value: kv.value.toString(),
      raw: kv.value,
      receiveCount: c.count,
      ...(priority === undefined ? {} : { priority }),
      receipt: `${kv.createRevision}.${c.claimRev}.${leaseId}.${kv.key}`,
    }
  }

  /** The compares that hold while a receipt's claim is current and its item still queued. */
  private ownClaim(r: Receipt): Compare[] {
    return [this.ks.compare(receiptMarker(r), 'Mod', '==', r.claimRev), this.ks.compare(r.key, 'Create', '==', r.createRev)]
  }

  /** Else-branch reads that explain a failed {@link ownClaim}. */
  private claimState(r: Receipt): Op[] {
    return [this.ks.get(r.key), this.ks.get(receiptMarker(r))]
  }

  private lost(op: string, r: Receipt, res: TxnResult): ClaimLostError {
    const item = res.results[0].range!.kvs[0]
    const marker = res.results[1].range!.kvs[0]
    const what = `${op} of ${JSON.stringify(r.key)} in queue ${JSON.stringify(this.name)} did nothing`
    if (item === undefined || item.createRevision !== r.createRev) {
      return new ClaimLostError('gone', `${what}: the message is no longer queued (already acked, dequeued, or moved to the dead-letter queue)`)
    }
    if (marker !== undefined) {
      return new ClaimLostError('reclaimed', `${what}: its claim expired and another receiver (or a delayed nack) holds it now; it may be processed twice — raise visibilityTimeout or settle sooner`)
    }
    return new ClaimLostError('expired', `${what}: its claim expired after the visibility timeout and it is visible again; it will be delivered again — raise visibilityTimeout or settle sooner`)
  }

  private receipt(message: Message | string): Receipt {
    const text = typeof message === 'string' ? message : message?.receipt
    const m = typeof text === 'string' ? /^([0-9]+)\.([0-9]+)\.([0-9]+)\.(.+)$/s.exec(text) : null
    if (!m) throw new InvalidArgumentError(`expected a message from receive() or its receipt string, got ${JSON.stringify(text)}`)
    if (!m[4].startsWith(this.prefix)) {
      throw new InvalidArgumentError(`receipt for ${JSON.stringify(m[4])} does not belong to queue ${JSON.stringify(this.name)}; settle it on the queue it was received from`)
    }
    return { createRev: BigInt(m[1]), claimRev: BigInt(m[2]), leaseId: m[3], key: m[4] }
  }

  private async claimLease(o: CheckedReceive): Promise<ClaimLease> {
    if (o.session) {
      o.session.signal.throwIfAborted()
      return { id: o.session.leaseId, granted: false, ttl: o.session.ttl }
    }
    return { id: await this.grant(o.visibilityTimeout), granted: true, ttl: o.visibilityTimeout }
  }

  private async grant(ttl: number): Promise<string> {
    try {
      return (await this.client.leaseClient.leaseGrant({ TTL: ttl })).ID
    } catch (err) {
      throw toTypedError(err, 'etcd lease grant')
    }
  }

  /** Revokes a lease; one that is already gone is fine. */
  private async revoke(leaseId: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: leaseId })
    } catch (err) {
      if (/lease not found/i.test((err as Error).message)) return
      throw toTypedError(err, 'etcd lease revoke')
    }
  }

  private async dropLease(lease: ClaimLease) {
    if (lease.granted) await this.revoke(lease.id)
  }

  /** Remembers a granted lease's unsettled messages, so the last settle can revoke it. */
  private track(lease: ClaimLease, messages: Message[]) {
    if (!lease.granted) return
    const now = performance.now()
    for (const [id, b] of batches) if (b.expiresAt < now) batches.delete(id)
    batches.set(lease.id, { open: new Set(messages.map((m) => m.key)), expiresAt: now + lease.ttl * 1000 })
  }

  /** Marks a message settled; revokes its batch's lease when it was the last one. */
  private async settle(r: Receipt) {
    const batch = batches.get(r.leaseId)
    if (!batch || !batch.open.delete(r.key) || batch.open.size > 0) return
    batches.delete(r.leaseId)
    // The settle itself succeeded: a failed revoke must not turn it into an error (the lease
    // holds none of our markers any more and expires after the visibility timeout).
    await this.revoke(r.leaseId).catch(() => {})
  }

  private checkReceive(options: ReceiveOptions): CheckedReceive {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError(`receive options must be an object, got ${String(options)}`)
    const max = options.max ?? 1
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > MAX_BATCH) {
      throw new InvalidArgumentError(`receive max must be a whole number from 1 to ${MAX_BATCH}, got ${String(max)}`)
    }
    if (options.session !== undefined && options.visibilityTimeout !== undefined) {
      throw new InvalidArgumentError('receive: give either visibilityTimeout (a lease per receive) or session (claims last while it lives), not both')
    }
    const visibilityTimeout = checkSeconds(options.visibilityTimeout ?? DEFAULT_VISIBILITY_S, 'receive visibilityTimeout', 1)
    const wait = options.wait ?? true
    if (typeof wait !== 'boolean') throw new InvalidArgumentError(`receive wait must be true or false, got ${String(wait)}`)
    const dl = this.checkDeadLetter({ ...this.defaults, ...definedOnly(options) }, 'receive options')
    return { max, visibilityTimeout, wait, session: options.session, ...dl }
  }

  private checkDeadLetter(o: DeadLetterOptions, what: string): DeadLetterOptions {
    const { maxReceives, deadLetterQueue } = o ?? {}
    if (maxReceives === undefined && deadLetterQueue === undefined) return {}
    if (typeof maxReceives !== 'number' || !Number.isInteger(maxReceives) || maxReceives < 1) {
      throw new InvalidArgumentError(`${what}: maxReceives must be a whole number >= 1 when deadLetterQueue is set, got ${String(maxReceives)}`)
    }
    if (deadLetterQueue === undefined) throw new InvalidArgumentError(`${what}: maxReceives needs deadLetterQueue, the name of the queue that takes messages received ${maxReceives} times`)
    checkName(deadLetterQueue, `${what}: deadLetterQueue`)
    const a = `${deadLetterQueue}/`
    if (a.startsWith(this.prefix) || this.prefix.startsWith(a)) {
      throw new InvalidArgumentError(`${what}: deadLetterQueue ${JSON.stringify(deadLetterQueue)} overlaps queue ${JSON.stringify(this.name)}; use a name that is neither the queue's nor nested in it`)
    }
    return { maxReceives, deadLetterQueue }
  }
}

interface CheckedReceive extends DeadLetterOptions {
  max: number
  visibilityTimeout: number
  wait: boolean
  session?: Session
}

function definedOnly(o: ReceiveOptions): DeadLetterOptions {
  const out: DeadLetterOptions = {}
  if (o.maxReceives !== undefined) out.maxReceives = o.maxReceives
  if (o.deadLetterQueue !== undefined) out.deadLetterQueue = o.deadLetterQueue
  return out
}

function checkSeconds(value: unknown, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TTL_S) {
    throw new InvalidArgumentError(`${what} must be a whole number of seconds from ${min} to ${MAX_TTL_S}, got ${String(value)}`)
  }
  return value
}

/** `__claims/<itemKey>/<itemCreateRev>`: held by a receiver's lease while it has the item. */
function markerKey(kv: KeyValue): string {
  return `__claims/${kv.key}/${kv.createRevision}`
}

/** `__receives/<itemKey>/<itemCreateRev>`: its version counts the item's claims. */
function counterKey(kv: KeyValue): string {
  return `__receives/${kv.key}/${kv.createRevision}`
}

function receiptMarker(r: Receipt): string {
  return `__claims/${r.key}/${r.createRev}`
}

function receiptCounter(r: Receipt): string {
  return `__receives/${r.key}/${r.createRev}`
}
