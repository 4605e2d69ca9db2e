import { InvalidArgumentError, InvalidStateError } from '../errors.js'
import {
  checkName,
  checkValue,
  type Compare,
  type KeyValue,
  type Keyspace,
  type Op,
  type RangeOp,
  type RangeOptions,
  type RangeResult,
} from '../core/kv.js'
import { MAX_TXN_OPS } from '../limits.js'

/**
 * One attempt of an STM transaction (lib/stm/stm.ts `runSTM` runs them): what each isolation level
 * reads, buffers and compares at commit, as Go's `stm.go` does.
 */

/**
 * Isolation levels (Go's `concurrency.Isolation`), strongest first. A runtime object, so it can
 * come from configuration; the values are the names.
 *
 * - `SerializableSnapshot` (default): every read of an attempt sees one snapshot (the revision
 *   of its first read); the commit fails if anything read, or any key written, changed after
 *   that snapshot. Rejects write-write conflicts, including blind writes.
 * - `Serializable`: the same snapshot reads; the commit fails only if something read changed.
 * - `RepeatableReads`: reads are member-local (may be stale, never mixed within a key); the
 *   commit fails if something read changed.
 * - `ReadCommitted`: member-local reads, no checks: the commit always succeeds, so concurrent
 *   read-modify-write cycles can lose updates. It does NOT keep invariants such as a constant
 *   sum across keys.
 */
export const Isolation = {
  SerializableSnapshot: 'SerializableSnapshot',
  Serializable: 'Serializable',
  RepeatableReads: 'RepeatableReads',
  ReadCommitted: 'ReadCommitted',
} as const
export type Isolation = (typeof Isolation)[keyof typeof Isolation]

/** What `apply` reads and writes through. Valid only during the attempt it was passed to. */
export interface STM {
  /**
   * The value of `keys[0]` as a string ('' if absent; '' when called with no keys), as this
   * transaction sees it: its own buffered write if any, else the read. All given keys not read
   * yet are read in one round trip (a multi-key prefetch).
   */
  get(...keys: string[]): Promise<string>
  /** Buffers a put, committed with the transaction. `lease` attaches a lease (decimal id). */
  put(key: string, value: string | Buffer, options?: { lease?: string }): void
  /** Buffers a delete, committed with the transaction. */
  del(key: string): void
  /** The key's mod revision as this transaction read it (0n if absent); ignores buffered writes. */
  rev(key: string): Promise<bigint>
}

/**
 * How many keys of earlier attempts a retry keeps prefetching. A retry of a transaction usually
 * reads what an earlier attempt read (the same keys, or, when it picks keys at random as a bank
 * transfer does, others of the same few); reading them with the commit's Else branch and with
 * the retry's first read saves a round trip per key. The bound keeps both Txns small (etcd
 * allows 128 ops in each branch).
 */
const MAX_PREFETCH = 64

/** One read: the key's kv (undefined if absent) and the store revision the read happened at. */
export interface Read {
  kv?: KeyValue
  revision: bigint
}

type Write = { value: Buffer; lease?: string } | { value: undefined }

/** Thrown into `apply` when its snapshot was compacted away: the attempt restarts. */
export class RestartAttempt extends Error {}

/** The STM of one attempt: read set, write set, and (serializable levels) the snapshot revision. */
export class Attempt implements STM {
  /** Set when a read failed: the transaction aborts with it. */
  failure?: unknown
  /** Set when the attempt must be re-run without committing (its snapshot was compacted). */
  restart = false
  /** Reads the next attempt takes without a round trip (Go's prefetch after a failed commit). */
  nextCache = new Map<string, Read>()

  private readonly reads = new Map<string, Read>()
  private readonly writes = new Map<string, Write>()
  private snapshot?: bigint
  private closed = false
  /** Reads run one at a time, so concurrent get()s in apply still share one snapshot. */
  private queue: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly ks: Keyspace,
    private readonly isolation: Isolation,
    /** Reads taken from the failed commit's Else branch or prefetched; a key joins the read set when touched. */
    private readonly cache: Map<string, Read>,
    /** Keys earlier attempts read (prefetched, never compared unless this attempt reads them). */
    private readonly known: ReadonlySet<string>,
    private readonly signal?: AbortSignal,
  ) {}

  /** Adds this attempt's read keys to `known` (the most recent first, up to {@link MAX_PREFETCH}). */
  remember(known: Set<string>) {
    for (const key of this.reads.keys()) {
      known.delete(key)
      known.add(key)
    }
    for (const key of known) {
      if (known.size <= MAX_PREFETCH) break
      known.delete(key)
    }
  }

  /** Keys worth prefetching along with `wanted`: earlier attempts' reads not yet read or cached here. */
  private extras(wanted: Iterable<string>, room: number): string[] {
    if (!this.serializable || room <= 0) return []
    const skip = new Set(wanted)
    const out: string[] = []
    for (const key of this.known) {
      if (out.length >= room) break
      if (!skip.has(key) && !this.reads.has(key) && !this.cache.has(key)) out.push(key)
    }
    return out
  }

  private get serializable() {
    return this.isolation === Isolation.Serializable || this.isolation === Isolation.SerializableSnapshot
  }

  get(...keys: string[]): Promise<string> {
    return this.serialized(async () => {
      this.checkOpen('get')
      checkKeys(keys)
      if (keys.length === 0) return ''
      const first = this.writes.get(keys[0])
      if (first) return first.value?.toString() ?? ''
      await this.read(keys.filter((k) => !this.writes.has(k)))
      return this.reads.get(keys[0])!.kv?.value.toString() ?? ''
    })
  }

  rev(key: string): Promise<bigint> {
    return this.serialized(async () => {
      this.checkOpen('rev')
      checkKeys([key])
      await this.read([key])
      return this.reads.get(key)!.kv?.modRevision ?? 0n
    })
  }

  put(key: string, value: string | Buffer, options: { lease?: string } = {}): void {
    this.checkOpen('put')
    checkName(key, 'STM key')
    const buf = checkValue(value, `STM value of ${JSON.stringify(key)}`)
    const { lease } = options
    if (lease !== undefined && (typeof lease !== 'string' || !/^[0-9]{1,19}$/.test(lease))) {
      throw new InvalidArgumentError(`STM put lease must be a lease id as a decimal string (session.leaseId), got ${JSON.stringify(lease)}`)
    }
    this.writes.set(key, { value: buf, lease })
  }

  del(key: string): void {
    this.checkOpen('del')
    checkName(key, 'STM key')
    this.writes.set(key, { value: undefined })
  }

  /** Waits for reads apply started but did not await. */
  async idle() {
    await this.queue.catch(() => {})
  }

  close() {
    this.closed = true
  }

  /**
   * One Txn: if nothing read (and, for SerializableSnapshot, nothing written) changed, apply
   * the writes. Serializable levels re-read the read set in the Else branch, so a retry starts
   * from those values without a round trip. Returns the commit revision, or undefined on conflict.
   */
  async commit(): Promise<bigint | undefined> {
    // Serializable levels re-read the read set, and the keys earlier attempts read, on conflict.
    const reread = this.serializable ? [...this.reads.keys(), ...this.extras(this.reads.keys(), MAX_TXN_OPS - this.reads.size)] : []
    const res = await this.ks.namedTxn(this.conflicts(), this.writeOps(), this.readsOf(reread, {}))
    if (res.succeeded) return res.revision
    for (const [key, range] of Object.entries(res.results)) this.nextCache.set(key, { kv: range.kvs[0], revision: range.revision })
    return undefined
  }

  private conflicts(): Compare[] {
    if (this.isolation === Isolation.ReadCommitted) return []
    // Each read key must still be as read (mod revision 0: still absent).
    const cmps = [...this.reads].map(([key, r]) => this.ks.compare(key, 'Mod', '==', r.kv?.modRevision ?? 0n))
    if (this.isolation === Isolation.SerializableSnapshot && this.reads.size > 0) {
      // ...and no written key may have changed after the snapshot (Go: mod < firstRev+1; with
      // no reads Go's bound is MaxInt64, i.e. no compare at all).
      let first: bigint | undefined
      for (const r of this.reads.values()) if (first === undefined || r.revision < first) first = r.revision
      for (const key of this.writes.keys()) cmps.push(this.ks.compare(key, 'Mod', '<', first! + 1n))
    }
    return cmps
  }

  private writeOps(): Record<string, Op> {
    return Object.fromEntries(
      [...this.writes].map(([key, w]) => [key, w.value === undefined ? this.ks.deleteOp(key) : this.ks.put(key, w.value, w.lease)]),
    )
  }

  /** Makes sure every key in `keys` is in the read set, with at most one round trip. */
  private async read(keys: string[]) {
    const firstRead = this.reads.size === 0
    if (this.serializable) {
      // Keys re-read by the failed commit's Else branch come from there, and the first of them
      // touched fixes the snapshot (Go: the base revision is that response's header revision).
      for (const key of keys) {
        const cached = this.cache.get(key)
        if (cached === undefined || this.reads.has(key)) continue
        this.cache.delete(key)
        this.reads.set(key, cached)
        if (firstRead && this.snapshot === undefined) this.snapshot = cached.revision
      }
    }
    const missing = [...new Set(keys)].filter((k) => !this.reads.has(k))
    if (missing.length === 0) return
    // A retry reads what earlier attempts read in the same round trip: its next get()s are then likely served from the cache.
    const revision = await this.fetch(missing, this.readOptions(), this.extras(missing, MAX_TXN_OPS - missing.length))
    // Serializable levels: the first read is linearizable, and its revision is the snapshot
    // every later read of this attempt is served at.
    if (this.serializable && this.snapshot === undefined) this.snapshot = revision
  }

  private readOptions(): RangeOptions {
    if (!this.serializable) return { serializable: true } // member-local, possibly stale (as Go)
    return this.snapshot === undefined ? {} : { revision: this.snapshot, serializable: true }
  }

  /**
   * One Txn of Ranges; records each result with the revision it was read at: `keys` in the read
   * set, `prefetch` in the cache (they join the read set only if apply reads them).
   */
  private async fetch(keys: string[], options: RangeOptions, prefetch: string[] = []): Promise<bigint> {
    this.signal?.throwIfAborted()
    const all = [...keys, ...prefetch]
    let res: { revision: bigint; results: Record<string, RangeResult> }
    try {
      res = await this.ks.reads(this.readsOf(all, options))
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      if (options.revision !== undefined && /future revision/.test(message)) {
        // This member has not applied the snapshot revision yet; a linearizable read at that
        // revision waits until it has.
        res = await this.ks.reads(this.readsOf(all, { revision: options.revision }))
      } else if (options.revision !== undefined && /compacted/.test(message)) {
        this.restart = true
        throw new RestartAttempt(`STM snapshot revision ${options.revision} was compacted; the transaction restarts`, { cause: err })
      } else {
        throw err
      }
    }
    for (const [key, range] of Object.entries(res.results))
      (keys.includes(key) ? this.reads : this.cache).set(key, { kv: range.kvs[0], revision: range.revision })
    return res.revision
  }

  /** A read of each key, named by the key (Go's readSet): results are paired with keys by name. */
  private readsOf(keys: string[], options: RangeOptions): Record<string, RangeOp> {
    return Object.fromEntries(keys.map((k) => [k, this.ks.get(k, options)]))
  }

  private serialized<R>(op: () => Promise<R>): Promise<R> {
    const run = this.queue.then(op, op)
    this.queue = run.catch((err) => {
      if (!(err instanceof InvalidArgumentError)) this.failure ??= err
    })
    return run
  }

  private checkOpen(op: string) {
    if (this.closed)
      throw new InvalidStateError(`STM ${op}() after its attempt ended: use the stm object only inside apply, and await its reads`)
  }
}

/** The keys of `prefetch` or of `get`: names etcd accepts. */
export function checkKeys(keys: unknown): string[] {
  if (keys === undefined) return []
  if (!Array.isArray(keys)) throw new InvalidArgumentError(`STM keys must be an array of strings, got ${typeof keys}`)
  for (const k of keys) checkName(k, 'STM key')
  return keys as string[]
}
