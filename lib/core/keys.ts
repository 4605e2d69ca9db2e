import { EtcdUnavailableError, ForeignKeyError } from '../errors.js'
import type { Compare, Keyspace, NamedResults, Op, RangeOp } from './kv.js'

/**
 * Every key layout of the toolkit, and the ways a key is allocated, in one place (Go keeps the
 * same in `recipes/key.go` and `concurrency/key.go`). The primitives, the CLI and the
 * dispatcher build their keys here only, so a layout is written once.
 *
 * Go-compatible layouts (shared with Go's recipes and etcdctl):
 * - Mutex, Election:   `<name>/<leaseHex>`
 * - RWMutex:           `<name>/read/<unixNano>`, `<name>/write/<unixNano>`
 * - Queue:             `<name>/<unixNano>`
 * - PriorityQueue:     `<name>/<%05d prio>/<%016d seq>` + bookkeeping `__<name>/<%05d prio>`
 * - Barrier:           `<name>`
 * - DoubleBarrier:     `<name>/waiters/<unixNano>`, `<name>/ready`
 * Ours (kept outside the Go prefixes, so Go peers never see them):
 * - queue claim marker:    `__claims/<itemKey>/<itemCreateRev>` (on the receiver's lease)
 * - queue receive counter: `__receives/<itemKey>/<itemCreateRev>` (its version = receives)
 * - queue item metadata:   `__meta/<itemKey>` (JSON: original id, group; valid while its mod
 *                          revision is the item's create revision: both are written in one Txn)
 * - delayed message:       `__delayed/<name>/<dueUnixNano>` (envelope, no lease) + its timer
 *                          `__timers/<name>/<dueUnixNano>` (on a lease that outlasts the delay)
 * - message group:         `__group-heads/<name>/<group>` (exists while the group has a message
 *                          under `<name>/`) + waiting messages `__groups/<name>/<group>/<unixNano>`
 * - default dead-letter queue of `<name>`: the Go-layout Queue `dlq/<name>`
 * - idempotency record:    `<prefix>/<key>` (the middleware's prefix: `__idempotency/<function name>`)
 * - single-flight record:  `__singleflight/<key>`
 * - Semaphore:             `<name>/config` = `permits=<n>` (no lease), `<name>/waiters/<unixNano>`,
 *                          `<name>/holders/<slot>` (slot 0..permits-1, on the holder's lease)
 * - RateLimiter:           `<name>/config` = `rate=<r> per=<ms> burst=<b>`, `<name>/waiters/<unixNano>`,
 *                          `<name>/tokens/<slot>` (slot 0..burst)
 *   (Go has no semaphore or rate limiter: these layouts are ours alone.)
 */

/** Wall-clock nanoseconds at the monotonic clock's zero, so unixNano() = base + hrtime. */
const EPOCH_NANOS = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint()
let lastNano = 0n

/**
 * Go's `time.Now().UnixNano()` as 19 decimal digits, strictly increasing within this process
 * (so keys of one process sort in creation order); sub-millisecond digits from the monotonic clock.
 */
export function unixNano(): string {
  let now = EPOCH_NANOS + process.hrtime.bigint()
  if (now <= lastNano) now = lastNano + 1n
  lastNano = now
  return now.toString()
}

/** The name of putUnique's own put among its caller's named reads (no caller's name starts with a space). */
const PUT = ' put'

/** Fresh keys tried before a create-only put gives up (each clash means another writer took that nanosecond). */
const MAX_UNIQUE_ATTEMPTS = 16

/** What {@link putUnique} wrote: the key, the Txn's revision (= the key's create revision), and the results of `reads`, by name. */
export interface UniqueKey<R extends Record<string, RangeOp> = Record<never, never>> {
  key: string
  revision: bigint
  /** What each of the `reads` returned, under its name. */
  reads: NamedResults<R>
}

/**
 * Go's `newUniqueKV`: puts `<prefix><unixNano>` only if that key does not exist yet (one Txn),
 * retrying with a new timestamp when another writer took the same nanosecond. `reads` run in the
 * same Txn BEFORE the put, so every key they see is older than ours. Throws from `onExhausted`
 * when every attempt clashed; `onUnknownOutcome` hears of a key whose put got no answer.
 */
export async function putUnique<R extends Record<string, RangeOp> = Record<never, never>>(
  ks: Keyspace,
  prefix: string,
  value: string | Buffer,
  options: { lease?: string; reads?: R; onExhausted: () => Error; onUnknownOutcome?: (key: string) => void },
): Promise<UniqueKey<R>> {
  for (let attempt = 0; attempt < MAX_UNIQUE_ATTEMPTS; attempt++) {
    const key = `${prefix}${unixNano()}`
    // The reads go first in the success branch: they run before the put, so they never see it.
    const success = { ...(options.reads ?? ({} as R)), [PUT]: ks.put(key, value, options.lease) }
    const txn = await ks.namedTxn([ks.compare(key, 'Version', '==', 0)], success).catch((err: unknown) => {
      // No answer: the put may have applied, leaving a key the caller never learnt of.
      if (err instanceof EtcdUnavailableError) options.onUnknownOutcome?.(key)
      throw err
    })
    if (txn.succeeded) return { key, revision: txn.revision, reads: txn.results as NamedResults<R> }
  }
  throw options.onExhausted()
}

/**
 * A key to write in a caller's own Txn: the compares that must hold for it (it is still free,
 * or its bookkeeping key has not moved) and the ops that take it. See {@link uniqueSlot},
 * {@link sequentialSlot}; the caller retries with a fresh slot when its Txn fails on them.
 */
export interface KeySlot {
  key: string
  compares: Compare[]
  /** The put of the key (and of its bookkeeping key, if any). */
  ops(value: string | Buffer, lease?: string): Op[]
}

/** A fresh `<prefix><unixNano>`, taken only if nobody has it (Go's `newUniqueKV` in one's own Txn). */
export function uniqueSlot(ks: Keyspace, prefix: string): KeySlot {
  const key = `${prefix}${unixNano()}`
  return { key, compares: [ks.compare(key, 'Version', '==', 0)], ops: (value, lease) => [ks.put(key, value, lease)] }
}

/** The next `<prefix>/<%016d seq>` (Go's `newSequentialKV` in one's own Txn): one read now, the guard in the Txn. */
export async function sequentialSlot(ks: Keyspace, prefix: string): Promise<KeySlot> {
  const base = `__${prefix}`
  const last = await ks.range(`${prefix}/`, { prefix: true, sort: ['Key', 'Descend'], limit: 1, keysOnly: true })
  const seq = last.kvs.length === 0 ? 0n : sequenceOf(last.kvs[0].key) + 1n
  const key = `${prefix}/${seq.toString().padStart(16, '0')}`
  return {
    key,
    compares: [ks.compare(base, 'Mod', '<', last.revision + 1n)],
    ops: (value, lease) => [ks.put(base, ''), ks.put(key, value, lease)],
  }
}

/**
 * Go's `newSequentialKV`: appends `<prefix>/<%016d seq>` after the last key under `<prefix>/`,
 * serialising writers through the bookkeeping key `__<prefix>` (a Txn guarded by its mod revision
 * not having moved since our read; a concurrent writer makes it fail and we read again).
 */
export async function putSequential(ks: Keyspace, prefix: string, value: Buffer): Promise<{ key: string; revision: bigint }> {
  for (;;) {
    const slot = await sequentialSlot(ks, prefix)
    const res = await ks.txn(slot.compares, slot.ops(value))
    if (res.succeeded) return { key: slot.key, revision: res.revision }
  }
}

/** The sequence number at the end of a sequential key. */
function sequenceOf(key: string): bigint {
  const field = key.slice(key.lastIndexOf('/') + 1)
  if (!/^[0-9]+$/.test(field)) {
    throw new ForeignKeyError(
      `key ${JSON.stringify(key)} does not end in a decimal sequence number: a foreign key sits in a sequential key range; remove it`,
    )
  }
  return BigInt(field)
}

/** Lowercase, unpadded hex of a lease id: Go's `%x`, the suffix of Mutex and Election keys. */
export function leaseHex(leaseId: string): string {
  return BigInt(leaseId).toString(16)
}

/** The shape of a {@link leaseHex}: what the last segment of a Mutex/Election key looks like. */
const LEASE_HEX = /^[0-9a-f]{1,16}$/

/** Whether `segment` is the `%x` form of `leaseId` (the last segment of a Mutex/Election key). */
export function isLeaseSegment(segment: string, leaseId: string): boolean {
  return LEASE_HEX.test(segment) && leaseId !== '0' && BigInt(`0x${segment}`).toString() === leaseId
}

/** Mutex and Election: the contenders of `name` live under `<name>/`, one key per session. */
export const contenders = {
  prefix: (name: string) => `${name}/`,
  key: (name: string, leaseHex: string) => `${name}/${leaseHex}`,
  /**
   * The lock or election a key may be a contender of, by its shape alone (`<name>/<%x>`);
   * undefined for a key of another shape. Whether it is one takes its lease ({@link isLeaseSegment}).
   */
  nameOf: (key: string): string | undefined => {
    const slash = key.lastIndexOf('/')
    return slash > 0 && LEASE_HEX.test(key.slice(slash + 1)) ? key.slice(0, slash) : undefined
  },
}

/** RWMutex: readers and writers of `name`. */
export const rwContenders = {
  prefix: (name: string) => `${name}/`,
  modePrefix: (name: string, mode: 'read' | 'write') => `${name}/${mode}/`,
  /** The RWMutex and mode of a contender key (`<name>/read|write/<unixNano>`); undefined for a key of another shape. */
  parse: (key: string): { name: string; mode: 'read' | 'write' } | undefined => {
    const m = /^(.+)\/(read|write)\/\d{1,20}$/.exec(key)
    return m ? { name: m[1], mode: m[2] as 'read' | 'write' } : undefined
  },
}

/** DoubleBarrier: participants and the ready flag of `name`. */
export const doubleBarrier = {
  waiters: (name: string) => `${name}/waiters/`,
  ready: (name: string) => `${name}/ready`,
}

/** A PriorityQueue item below its queue's `<name>/`: `<%05d priority>/<%016d seq>`. */
const PRIORITY_ITEM = /^(\d{5})\/\d{16}$/

/** Queue and PriorityQueue items, and the at-least-once claim keys beside them. */
export const queueKeys = {
  /** Items of queue `name` (the trailing "/" keeps `q` away from `q2`; Go's Queue lacks it). */
  items: (name: string) => `${name}/`,
  /** A PriorityQueue bucket: `<name>/<%05d priority>` (its items are `<bucket>/<%016d seq>`). */
  bucket: (name: string, priority: number) => `${name}/${String(priority).padStart(5, '0')}`,
  /** The priority of PriorityQueue `name`'s item `key`; undefined for a key of another shape (a Queue's `<name>/<unixNano>`). */
  priorityOf: (name: string, key: string): number | undefined => {
    const m = key.startsWith(`${name}/`) ? PRIORITY_ITEM.exec(key.slice(name.length + 1)) : null
    return m ? Number(m[1]) : undefined
  },
  /** Whether a key ends as a PriorityQueue item does (`…/<%05d>/<%016d>`), whatever its queue's name. */
  endsAsPriorityItem: (key: string): boolean => PRIORITY_ITEM.test(key.split('/').slice(-2).join('/')),
  /** The PriorityQueue bookkeeping keys `__<name>/<%05d priority>` (see {@link putSequential}). */
  buckets: (name: string) => `__${name}/`,
  /** Claim markers of queue `name`. */
  claims: (name: string) => `__claims/${name}/`,
  /** Receive counters of queue `name`. */
  receives: (name: string) => `__receives/${name}/`,
  /** The marker that hides an item while a receiver's lease lives. */
  marker: (itemKey: string, itemCreateRevision: bigint) => `__claims/${itemKey}/${itemCreateRevision}`,
  /** The counter whose version is the item's receive count. */
  counter: (itemKey: string, itemCreateRevision: bigint) => `__receives/${itemKey}/${itemCreateRevision}`,
  /** The item of a claim marker or receive counter, and the create revision that item has; undefined for a key of another shape. */
  itemOfClaim: (key: string): { item: string; createRevision: bigint } | undefined => {
    const rest = key.startsWith('__claims/')
      ? key.slice('__claims/'.length)
      : key.startsWith('__receives/')
        ? key.slice('__receives/'.length)
        : undefined
    const slash = rest?.lastIndexOf('/') ?? -1
    if (rest === undefined || slash <= 0 || !/^[0-9]+$/.test(rest.slice(slash + 1))) return undefined
    return { item: rest.slice(0, slash), createRevision: BigInt(rest.slice(slash + 1)) }
  },
  /** An item's metadata (original id, group); see the layout list above. */
  meta: (itemKey: string) => `__meta/${itemKey}`,
  /** The item a metadata key belongs to. */
  itemOfMeta: (metaKey: string) => metaKey.slice('__meta/'.length),
  /** Metadata of queue `name`'s items. */
  metas: (name: string) => `__meta/${name}/`,
  /** Delayed messages of queue `name`, keyed by their due time on the producer's clock (for order only). */
  delayed: (name: string) => `__delayed/${name}/`,
  /** Their timers: a delayed message is due once its timer's lease has expired. */
  timers: (name: string) => `__timers/${name}/`,
  /** The timer of a delayed message key. */
  timerOf: (name: string, delayedKey: string) => `__timers/${name}/${delayedKey.slice(`__delayed/${name}/`.length)}`,
  /** Every group head of queue `name`. */
  groupHeads: (name: string) => `__group-heads/${name}/`,
  /** The head pointer of a group: exists while one of its messages is under `<name>/`. */
  groupHead: (name: string, group: string) => `__group-heads/${name}/${groupSegment(group)}`,
  /** Every waiting grouped message of queue `name`. */
  groupsWaiting: (name: string) => `__groups/${name}/`,
  /** A group's waiting messages, served in create-revision order. */
  groupWaiting: (name: string, group: string) => `__groups/${name}/${groupSegment(group)}/`,
}

/** A group name as one key segment (and one receipt field): percent-encoded, "." included. */
export function groupSegment(group: string): string {
  return encodeURIComponent(group).replace(/\./g, '%2E')
}

/** The group a {@link groupSegment} stands for. */
export function groupOfSegment(segment: string): string {
  return decodeURIComponent(segment)
}

/** The dead-letter queue a queue gets unless one is named: `dlq/<name>` (outside `<name>`, so Go's Dequeue never takes dead letters). */
export function defaultDeadLetterQueue(name: string): string {
  return `dlq/${name}`
}

/** The queue whose default dead-letter queue `dlq` is (`<name>` for `dlq/<name>`); undefined for another name. */
export function queueOfDeadLetterQueue(dlq: string): string | undefined {
  return dlq.startsWith('dlq/') && dlq.length > 'dlq/'.length ? dlq.slice('dlq/'.length) : undefined
}

/**
 * Semaphore and RateLimiter: the settings every contender must agree on, the FIFO queue of
 * waiting calls, and one key per permit (or token) in use, named by its slot number.
 */
export const permitKeys = {
  /** The stored settings (`permits=5`; `rate=20 per=1000 burst=5`), created by the first contender. */
  config: (name: string) => `${name}/config`,
  /** The semaphore or rate limiter whose config key `key` is; undefined for another key. */
  nameOfConfig: (key: string): string | undefined =>
    key.endsWith('/config') && key.length > '/config'.length ? key.slice(0, -'/config'.length) : undefined,
  /** A Semaphore's stored settings. */
  semaphoreSettings: (permits: number) => `permits=${permits}`,
  /** A RateLimiter's stored settings. */
  rateLimiterSettings: (s: { rate: number; per: number; burst: number }) => `rate=${s.rate} per=${s.per} burst=${s.burst}`,
  /** What stored settings say: a Semaphore's, or a RateLimiter's (whose permits are its tokens, burst + 1); undefined for another value. */
  parseSettings: (value: string): { kind: 'semaphore' | 'rate limiter'; permits: number } | undefined => {
    const semaphore = /^permits=([1-9][0-9]*)$/.exec(value)
    if (semaphore) return { kind: 'semaphore', permits: Number(semaphore[1]) }
    const limiter = /^rate=[0-9.e+-]+ per=[0-9]+ burst=([0-9]+)$/.exec(value)
    return limiter ? { kind: 'rate limiter', permits: Number(limiter[1]) + 1 } : undefined
  },
  /** Queued calls, one key each, FIFO by create revision. */
  waiters: (name: string) => `${name}/waiters/`,
  /** A Semaphore's permits in use. */
  holders: (name: string) => `${name}/holders/`,
  /** A RateLimiter's admissions still counted against the rate. */
  tokens: (name: string) => `${name}/tokens/`,
  /** Slot `index` under `slots` (a holders or tokens prefix). */
  slot: (slots: string, index: number) => `${slots}${index}`,
  /** The slot number of a key under `slots`, or undefined for a key that is not a slot. */
  slotIndex: (slots: string, key: string): number | undefined => {
    const rest = key.slice(slots.length)
    return key.startsWith(slots) && /^(0|[1-9][0-9]{0,8})$/.test(rest) ? Number(rest) : undefined
  },
}

/** Idempotency and single-flight records: one key per idempotency key, its state in the value. */
export const idempotencyKeys = {
  /** The record of `key` in the store at `prefix`. */
  record: (prefix: string, key: string) => `${prefix}/${key}`,
  /** The middleware's default store prefix: records are per function, as Powertools scopes them. */
  functionPrefix: (functionName: string) => `__idempotency/${functionName}`,
  /** The store `singleFlight` uses. */
  singleFlightPrefix: '__singleflight',
}
