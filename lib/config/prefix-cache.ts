import type { IWatchResponse, Namespace, Watcher } from 'etcd3'
import { checkClient, checkInteger, checkOptions, show } from '../core/check.js'
import { closedSignal } from '../core/client-closed.js'
import { checkName, keyspace, toKeyValue, type KeyValue, type Keyspace, type RangeResult } from '../core/kv.js'
import {
  ConfigParseError,
  ConfigStaleError,
  ConfigTooLargeError,
  InvalidArgumentError,
  InvalidStateError,
  MiddyEtcdError,
} from '../errors.js'
import { CONFIG_PAGE_BYTES, DEFAULT_CONFIG_MAX_BYTES, MAX_CONFIG_BYTES, MAX_CONFIG_PAGE_VALUES, VALUES_PER_RESPONSE } from '../limits.js'
import { MAX_TIMER_MS, sleep, startInterval, startTimer, type Timer } from '../timers.js'
import { untilAborted } from '../wait/wait.js'

/**
 * Every key under a prefix, read at one revision and kept current by a watch from the next one
 * (Curator's PathChildrenCache, etcd 3.7's `cache/v3`): the configuration of a warm Lambda,
 * served with no request while the watch is provably current.
 *
 * **One revision.** The load pages through the prefix with Range reads pinned to the revision
 * of the first page, each page sized from the largest value seen so far
 * ({@link CONFIG_PAGE_BYTES}; the first page reads {@link VALUES_PER_RESPONSE} values, planned
 * as if each were etcd's largest). A watch answer (every event of a revision: a Txn that
 * changes two keys comes in one answer) is applied whole and synchronously, so no reader sees
 * one of its changes without the other. A compaction that cancels the watch (it resumed from a
 * revision etcd no longer has) reloads the whole prefix at once and says so (`reload` event).
 *
 * **Currency, and the freeze.** `current({ maxStaleMs })` serves only a snapshot known to have
 * matched etcd at most `maxStaleMs` before the call. What it knows, without a request:
 * - the load or the last proof (below) matched etcd at the time it was sent;
 * - a watch answer received while the process ran (no freeze since) shows the stream alive at
 *   that moment: the cache is current then;
 * - while the process runs and the watch is attached, a tick (every {@link TICK_MS}) counts the
 *   cache current as of {@link WATCH_SILENCE_MS} ago: a stream that died without a word (a
 *   partition) is noticed by gRPC's keepalive (10 s + 3 s, `lib/core/client.ts`) at the latest.
 *
 * A tick that comes more than {@link FREEZE_GAP_MS} late means the process was frozen (a Lambda
 * between invocations, SIGSTOP) or its event loop blocked: the watch may be behind, and answers
 * read after the thaw may have waited in the socket since before it, so nothing but a proof
 * counts the cache current again. So is a reconnect of the watch.
 *
 * **The proof is one Range, not a watch progress request.** etcd3 1.1.2 (`node_modules/etcd3`)
 * has no progress request; written on its stream by hand, etcd's answer carries watch id -1,
 * which etcd3's `WatchManager.handleResponse` does not find — it throws from the stream's data
 * handler, an uncaught exception — and etcd holds its answer back while any watch of the stream
 * is still catching up (unsynced), which after a thaw is the case to prove. The Range is keys only, sorted by mod revision, limit 1: its answer is one key and the
 * prefix's count (bytes, whatever the prefix holds; etcd walks the prefix's index for it). It
 * proves the cache equal to etcd at the Range's revision when the count is the cache's and no
 * key was written after the cache's revision (every key then existed, unchanged, at that
 * revision, and as many as the cache holds). Otherwise the watch is behind: the proof waits up
 * to {@link CATCH_UP_MS} for it to apply what the Range saw, then reloads.
 *
 * A watch that etcd ends, or that cannot be re-established, is replaced by a reload (retried
 * while etcd is unreachable). A closed client fails the cache with the `WatchLostError`
 * (`client-closed`) of every wait; `current()` never serves a snapshot older than `maxStaleMs`,
 * it throws {@link ConfigStaleError} instead.
 *
 * @example
 * const cache = new PrefixCache(client, 'config/orders/', { parse: 'json' })
 * await cache.ready
 * const { values } = await cache.current({ maxStaleMs: 5_000 })
 * cache.close()
 */

/** How a value is turned into what the cache serves: once per change of its key. */
export type ConfigParse<T> = 'json' | 'string' | ((raw: Buffer, key: string) => T)

export interface PrefixCacheOptions<T> {
  /** `'string'` (default): UTF-8 text; `'json'`: `JSON.parse` of it; a function of the raw bytes and the key (relative to the prefix). */
  parse?: ConfigParse<T>
  /** Bytes (keys plus values) the cache keeps at most; more is a {@link ConfigTooLargeError}. Default {@link DEFAULT_CONFIG_MAX_BYTES}. */
  maxBytes?: number
  /** Aborting it closes the cache. */
  signal?: AbortSignal
}

/** One key's change: its new value, or `deleted`. Keys are relative to the prefix. */
export interface ConfigChange<T> {
  key: string
  deleted: boolean
  value?: T
}

/** What `onChange` listeners hear: changes applied from the watch, or a whole reload. */
export type ConfigEvent<T> =
  | { type: 'change'; revision: bigint; changes: ConfigChange<T>[] }
  | {
      type: 'reload'
      revision: bigint
      /** compacted: the watch's revision was compacted away; watch-lost: etcd ended the watch; behind: a proof found the watch too slow to catch up. */
      reason: ReloadReason
      changes: ConfigChange<T>[]
    }

export type ReloadReason = 'compacted' | 'watch-lost' | 'behind'

/** Every value of the prefix at one revision; frozen, and the same object until the next change. */
export interface ConfigSnapshot<T> {
  readonly revision: bigint
  /** Keys relative to the prefix. */
  readonly values: Readonly<Record<string, T>>
}

export interface CurrentOptions {
  /** How long before this call the snapshot may have last been known to match etcd, ms. */
  maxStaleMs: number
  /** Aborting it gives up the proof (the cache stays usable). */
  signal?: AbortSignal
}

/** Interval of the freeze-detecting tick, ms. */
export const TICK_MS = 250
/** A tick this late means the process was frozen or its event loop blocked, ms. */
export const FREEZE_GAP_MS = 1_000
/** Longest a dead watch stream can look alive: gRPC's keepalive time plus its timeout (lib/core/client.ts), ms. */
export const WATCH_SILENCE_MS = 13_000
/** How long a proof waits for the watch to apply what its Range saw before it reloads, ms. */
export const CATCH_UP_MS = 1_000
/** Pause between reload attempts while etcd is unreachable, ms (doubles up to the cap). */
const RELOAD_RETRY_MS = 250
const RELOAD_RETRY_MAX_MS = 5_000

/** A value as kept: parsed once, or the error its parse gave. */
type Entry<T> = { bytes: number; modRevision: bigint } & ({ value: T } | { error: ConfigParseError })

/** What a load read: every entry at one revision. */
interface Loaded<T> {
  entries: Map<string, Entry<T>>
  bytes: number
  revision: bigint
}

export class PrefixCache<T = string> {
  /** Resolves once the first load is in (rejects with its error: too large, a closed client, …). */
  readonly ready: Promise<void>
  readonly prefix: string
  private readonly ks: Keyspace
  private readonly parse: ConfigParse<T>
  private readonly maxBytes: number
  private entriesByKey = new Map<string, Entry<T>>()
  private bytes = 0
  private applied = 0n
  private snapshotCache: ConfigSnapshot<T> | undefined
  private readonly listeners = new Set<(event: ConfigEvent<T>) => void>()
  /** Called after every applied watch answer (proofs waiting for the watch to catch up). */
  private readonly appliedWaiters = new Set<() => void>()
  private watcher: Watcher | undefined
  /** The watch is attached (created, not disconnected since). */
  private attached = false
  /** The watch reconnected or the process was frozen: only a proof or a reload makes the cache current again. */
  private needsProof = false
  /** performance.now() at which the cache was last known to match etcd. */
  private currentAt = -Infinity
  private lastTick = performance.now()
  private readonly ticker: Timer
  private reloading: Promise<void> | undefined
  private proving: Promise<void> | undefined
  private failure: Error | undefined
  private closed = false
  private readonly clientClosed: AbortSignal
  private readonly onClientClosed = () => this.fail(this.clientClosed.reason as Error)
  private readonly onAbort = () => this.close()
  private readonly signal: AbortSignal | undefined

  constructor(client: Namespace, prefix: string, options?: PrefixCacheOptions<T>) {
    checkClient(client, 'PrefixCache')
    const o = checkPrefixCacheOptions(prefix, options)
    this.prefix = prefix
    this.parse = o.parse
    this.maxBytes = o.maxBytes
    this.ks = keyspace(client)
    this.signal = o.signal
    this.clientClosed = closedSignal(client)
    this.ticker = startInterval(TICK_MS, () => this.tick())
    this.ready = this.start()
    this.ready.catch(() => {}) // read by whoever awaits it; a failed load also fails the cache
  }

  /** Whether the cache can still serve: not closed, not failed (a closed client, a load over maxBytes). */
  get usable(): boolean {
    return !this.closed && this.failure === undefined
  }

  /** The revision every served value belongs to. */
  get revision(): bigint {
    return this.applied
  }

  /** The value of `key` (relative to the prefix) as of {@link revision}; a value that did not parse throws its {@link ConfigParseError}. */
  get(key: string): T | undefined {
    this.throwIfUnusable()
    const entry = this.entriesByKey.get(key)
    if (entry === undefined) return undefined
    if ('error' in entry) throw entry.error
    return entry.value
  }

  /** Every key and value, in key order, as of {@link revision}. */
  entries(): [string, T][] {
    return Object.entries(this.snapshot().values)
  }

  /** Every value at {@link revision}, without proving currency (see {@link current}). */
  snapshot(): ConfigSnapshot<T> {
    this.throwIfUnusable()
    if (this.snapshotCache) return this.snapshotCache
    const values = Object.create(null) as Record<string, T>
    for (const key of [...this.entriesByKey.keys()].sort()) {
      const entry = this.entriesByKey.get(key)!
      if ('error' in entry) throw entry.error
      values[key] = entry.value
    }
    this.snapshotCache = Object.freeze({ revision: this.applied, values: Object.freeze(values) })
    return this.snapshotCache
  }

  /** Calls `listener` after each change (and reload); returns the function that stops it. */
  onChange(listener: (event: ConfigEvent<T>) => void): () => void {
    if (typeof listener !== 'function') throw new InvalidArgumentError(`PrefixCache onChange needs a function, got ${show(listener)}`)
    this.listeners.add(listener)
    return () => void this.listeners.delete(listener)
  }

  /**
   * The snapshot, once the cache is known to have matched etcd at most `maxStaleMs` before this
   * call: at once, with no request, while the watch is live and the process has not been frozen
   * since; otherwise after one proof Range (and, if the watch is behind, a wait for it or a
   * reload). Throws {@link ConfigStaleError} when currency cannot be proved.
   */
  async current(options: CurrentOptions): Promise<ConfigSnapshot<T>> {
    const start = performance.now()
    const o = checkOptions(options, 'PrefixCache current')
    const maxStaleMs = checkInteger(o.maxStaleMs, 'PrefixCache current maxStaleMs', 0, MAX_TIMER_MS, { unit: 'milliseconds' })
    await untilAborted(this.ready, o.signal)
    this.tick(start)
    if (start - this.currentAt <= maxStaleMs) return this.snapshot()
    try {
      this.proving ??= this.prove().finally(() => {
        this.proving = undefined
      })
      await untilAborted(this.proving, o.signal)
    } catch (err) {
      if (o.signal?.aborted) throw o.signal.reason
      this.throwIfUnusable()
      throw new ConfigStaleError(
        maxStaleMs,
        `PrefixCache ${JSON.stringify(this.prefix)}: could not prove the configuration current within maxStaleMs (${maxStaleMs} ms): ${(err as Error).message}. ` +
          'Check that etcd is reachable (ETCD_ENDPOINTS); a larger maxStaleMs serves older values for longer instead',
        { cause: err },
      )
    }
    this.throwIfUnusable()
    if (start - this.currentAt > maxStaleMs) {
      // A proof that started before this call (shared with an earlier one) may not cover it: prove again.
      return this.current({ maxStaleMs, signal: o.signal })
    }
    return this.snapshot()
  }

  /** Stops the watch and the tick; every later read throws an `InvalidStateError`. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.stop()
  }

  // ---- loading ----

  private async start(): Promise<void> {
    if (this.signal?.aborted) {
      this.close()
      throw this.signal.reason
    }
    this.signal?.addEventListener('abort', this.onAbort, { once: true })
    if (this.clientClosed.aborted) this.onClientClosed()
    else this.clientClosed.addEventListener('abort', this.onClientClosed, { once: true })
    this.throwIfUnusable()
    try {
      const sent = performance.now()
      const loaded = await this.loadAll()
      this.throwIfUnusable()
      this.install(loaded, sent)
    } catch (err) {
      // A load that cannot complete (too large, a bad option) fails the cache for good.
      if (!this.failure && !this.closed) this.fail(err as Error)
      throw this.failure ?? err
    }
  }

  /** Every key-value of the prefix at one revision, in pages pinned to the first page's revision. */
  private async loadAll(): Promise<Loaded<T>> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.readPages()
      } catch (err) {
        // The pinned revision was compacted between two pages: start again at a newer one.
        if (isCompacted(err) && attempt < 5) continue
        throw err
      }
    }
  }

  private async readPages(): Promise<Loaded<T>> {
    const entries = new Map<string, Entry<T>>()
    let bytes = 0
    let revision: bigint | undefined
    let from = this.prefix
    let limit = VALUES_PER_RESPONSE
    let largest = 0
    for (;;) {
      const page: RangeResult = await this.ks.range(from, { endOfPrefix: this.prefix, limit, revision })
      this.throwIfUnusable()
      revision ??= page.revision
      for (const kv of page.kvs) {
        const entry = this.entry(kv)
        bytes += entry.bytes
        largest = Math.max(largest, entry.bytes)
        this.checkBytes(bytes, revision)
        entries.set(kv.key.slice(this.prefix.length), entry)
      }
      if (!page.more || page.kvs.length === 0) return { entries, bytes, revision }
      from = `${page.kvs[page.kvs.length - 1].key}\u0000`
      limit = Math.max(1, Math.min(MAX_CONFIG_PAGE_VALUES, Math.floor(CONFIG_PAGE_BYTES / (largest + 64))))
    }
  }

  /** Puts a load in place of what the cache held and watches from the revision after it. */
  private install(loaded: Loaded<T>, sent: number): ConfigChange<T>[] {
    const changes = diff(this.entriesByKey, loaded.entries)
    this.entriesByKey = loaded.entries
    this.bytes = loaded.bytes
    this.applied = loaded.revision
    this.snapshotCache = undefined
    this.currentAt = Math.max(this.currentAt, sent)
    this.needsProof = false
    this.watch(loaded.revision + 1n)
    return changes
  }

  private entry(kv: KeyValue): Entry<T> {
    const key = kv.key.slice(this.prefix.length)
    const bytes = Buffer.byteLength(kv.key) + kv.value.length
    try {
      return { bytes, modRevision: kv.modRevision, value: parseValue(this.parse, kv.value, key) }
    } catch (cause) {
      const how = this.parse === 'json' ? 'as JSON' : this.parse === 'string' ? 'as a string' : 'with the parse function'
      const error = new ConfigParseError(
        key,
        `PrefixCache ${JSON.stringify(this.prefix)}: the value of ${JSON.stringify(key)} (mod revision ${kv.modRevision}) does not parse ${how}: ${(cause as Error)?.message ?? String(cause)}. ` +
          `Fix the value in etcd (middy-etcd config set ${this.prefix}${key} <value>) or pass another parse ('string', or a function)`,
        { cause },
      )
      return { bytes, modRevision: kv.modRevision, error }
    }
  }

  private checkBytes(bytes: number, revision: bigint): void {
    if (bytes <= this.maxBytes) return
    throw new ConfigTooLargeError(
      bytes,
      this.maxBytes,
      `PrefixCache ${JSON.stringify(this.prefix)}: the prefix holds more than maxBytes (${this.maxBytes} bytes of keys and values; ${bytes} counted at revision ${revision}). ` +
        'Raise maxBytes, or keep less under the prefix (store large blobs elsewhere and a reference here)',
    )
  }

  // ---- the watch ----

  private watch(from: bigint): void {
    const watcher: Watcher = this.ks.client.watch().prefix(this.prefix).startRevision(String(from)).watcher()
    this.watcher = watcher
    this.attached = false
    let connections = 0
    watcher.on('connected', () => {
      if (this.watcher !== watcher) return
      this.attached = true
      // A reconnect resumes after what we applied (set on 'disconnected'), but the events of the
      // outage may still be on their way: prove before counting the cache current again.
      if (++connections > 1) this.needsProof = true
    })
    watcher.on('disconnected', () => {
      if (this.watcher !== watcher) return
      this.attached = false
      // etcd3 resumes from the revision after its last answer, and counts its 'connected'
      // answer as one, though etcd may not have replayed the events before it yet: resume
      // from what this cache applied instead, so that nothing is skipped.
      watcher.request.start_revision = String(this.applied + 1n)
    })
    watcher.on('data', (res: IWatchResponse) => {
      if (this.watcher !== watcher) return
      try {
        this.apply(res)
      } catch (err) {
        this.fail(err as Error) // never let it escape into etcd3's stream handler
      }
    })
    // etcd3 emits 'error' and 'end' only for a watcher it has already dropped: it must not be
    // cancelled then (see lib/wait/wait.ts). Replace it by a reload.
    const lost = (err?: Error) => {
      if (this.watcher !== watcher) return
      this.watcher = undefined
      this.attached = false
      watcher.removeAllListeners()
      watcher.on('error', () => {})
      void this.reload(err && /compact/i.test(err.message) ? 'compacted' : undefined)
    }
    watcher.on('error', (err: Error) => lost(err))
    watcher.on('end', () => lost())
  }

  /** Applies one watch answer — every event of its revisions — at once, or (over maxBytes) none of it. */
  private apply(res: IWatchResponse): void {
    const now = performance.now()
    this.tick(now)
    const header = BigInt(res.header.revision)
    const events = res.events.filter((ev) => BigInt(ev.kv.mod_revision) > this.applied)
    if (events.length > 0) {
      const updates = new Map<string, Entry<T> | undefined>()
      for (const ev of events) {
        // The watcher already took the client's namespace off the key.
        const kv = toKeyValue(ev.kv, ev.kv.key.toString())
        updates.set(kv.key.slice(this.prefix.length), ev.type === 'Delete' ? undefined : this.entry(kv))
      }
      let bytes = this.bytes
      for (const [key, entry] of updates) bytes += (entry?.bytes ?? 0) - (this.entriesByKey.get(key)?.bytes ?? 0)
      this.checkBytes(bytes, header)
      const changes: ConfigChange<T>[] = []
      for (const [key, entry] of updates) {
        if (entry === undefined) this.entriesByKey.delete(key)
        else this.entriesByKey.set(key, entry)
        changes.push(change(key, entry))
      }
      this.bytes = bytes
      this.applied = header > this.applied ? header : BigInt(events[events.length - 1].kv.mod_revision)
      this.snapshotCache = undefined
      if (this.attached && !this.needsProof) this.currentAt = now
      this.emit({ type: 'change', revision: this.applied, changes })
    } else {
      if (header > this.applied) this.applied = header
      if (this.attached && !this.needsProof) this.currentAt = now
    }
    for (const waiter of [...this.appliedWaiters]) waiter()
  }

  /** Freeze detection: a late tick means the process stopped (or its loop blocked) since the last one. */
  private tick(now = performance.now()): void {
    if (now - this.lastTick > FREEZE_GAP_MS) this.needsProof = true
    else if (this.attached && !this.needsProof) this.currentAt = Math.max(this.currentAt, now - WATCH_SILENCE_MS)
    this.lastTick = now
  }

  // ---- proofs and reloads ----

  /** One proof Range; when it shows the watch behind, a short wait for it, then a reload. */
  private async prove(): Promise<void> {
    if (this.reloading) return this.reloading
    const sent = performance.now()
    const proof = await this.ks.range(this.prefix, { prefix: true, keysOnly: true, sort: ['Mod', 'Descend'], limit: 1 })
    this.throwIfUnusable()
    if (this.watcher && (this.proves(proof) || (await this.caughtUp(proof)))) {
      this.currentAt = Math.max(this.currentAt, sent)
      this.needsProof = false
      return
    }
    await this.reload('behind')
  }

  /** Whether the cache equals etcd at the proof's revision (see the class comment). */
  private proves(proof: RangeResult): boolean {
    if (this.applied >= proof.revision) return true
    const newest = proof.kvs[0]?.modRevision ?? 0n
    return proof.count === BigInt(this.entriesByKey.size) && newest <= this.applied
  }

  /** Resolves true once the watch has applied what `proof` saw, false after {@link CATCH_UP_MS}. */
  private caughtUp(proof: RangeResult): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const done = (value: boolean) => {
        this.appliedWaiters.delete(check)
        timer.cancel()
        resolve(value)
      }
      const check = () => {
        if (this.failure || this.closed) done(false)
        else if (this.proves(proof)) done(true)
      }
      const timer = startTimer(CATCH_UP_MS, () => done(false))
      this.appliedWaiters.add(check)
    })
  }

  /** Reads the whole prefix again and watches from there; retried while etcd is unreachable. One at a time. */
  private reload(reason: ReloadReason | undefined): Promise<void> {
    this.reloading ??= this.reloadNow(reason).finally(() => {
      this.reloading = undefined
    })
    return this.reloading
  }

  private async reloadNow(given: ReloadReason | undefined): Promise<void> {
    const old = this.watcher
    this.watcher = undefined
    this.attached = false
    if (old) {
      old.removeAllListeners()
      old.on('error', () => {})
      old.cancel().catch(() => {})
    }
    const reason = given ?? ((await this.compactedPast().catch(() => false)) ? 'compacted' : 'watch-lost')
    for (let pause = RELOAD_RETRY_MS; ; pause = Math.min(RELOAD_RETRY_MAX_MS, pause * 2)) {
      this.throwIfUnusable()
      try {
        const sent = performance.now()
        const loaded = await this.loadAll()
        this.throwIfUnusable()
        const changes = this.install(loaded, sent)
        this.emit({ type: 'reload', revision: loaded.revision, reason, changes })
        for (const waiter of [...this.appliedWaiters]) waiter()
        return
      } catch (err) {
        if (this.closed || this.failure) throw this.failure ?? err
        if (err instanceof ConfigTooLargeError) {
          this.fail(err)
          throw err
        }
        // etcd unreachable: current() reports the staleness; try again.
        await sleep(pause)
      }
    }
  }

  /** Whether the revision after the cache's is compacted away (why etcd ended the watch). */
  private async compactedPast(): Promise<boolean> {
    try {
      await this.ks.range(this.prefix, { prefix: true, countOnly: true, revision: this.applied + 1n })
      return false
    } catch (err) {
      return isCompacted(err)
    }
  }

  // ---- state ----

  private emit(event: ConfigEvent<T>): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event)
      } catch {
        // A listener's failure is its own; the cache goes on.
      }
    }
  }

  private fail(error: Error): void {
    if (this.failure || this.closed) return
    this.failure = error
    this.stop()
  }

  private stop(): void {
    this.ticker.cancel()
    this.signal?.removeEventListener('abort', this.onAbort)
    this.clientClosed.removeEventListener('abort', this.onClientClosed)
    const watcher = this.watcher
    this.watcher = undefined
    this.attached = false
    if (watcher) {
      watcher.removeAllListeners()
      watcher.on('error', () => {})
      watcher.cancel().catch(() => {})
    }
    for (const waiter of [...this.appliedWaiters]) waiter()
  }

  private throwIfUnusable(): void {
    if (this.failure) throw this.failure
    if (this.closed) throw new InvalidStateError(`PrefixCache ${JSON.stringify(this.prefix)} is closed; create a new one`)
  }
}

/**
 * The checks of a PrefixCache's prefix and options (its constructor runs them; `etcdConfig`
 * runs them when it is built, before any client exists). Returns the options with defaults.
 */
export function checkPrefixCacheOptions<T>(
  prefix: unknown,
  options: PrefixCacheOptions<T> | undefined,
): { parse: ConfigParse<T>; maxBytes: number; signal?: AbortSignal } {
  checkName(prefix, 'PrefixCache prefix')
  const o = checkOptions(options, 'PrefixCache')
  return {
    parse: checkParse<T>(o.parse),
    maxBytes: checkInteger(o.maxBytes, 'PrefixCache maxBytes', 1, MAX_CONFIG_BYTES, { unit: 'bytes', fallback: DEFAULT_CONFIG_MAX_BYTES }),
    signal: o.signal,
  }
}

function checkParse<T>(parse: unknown): ConfigParse<T> {
  if (parse === undefined) return 'string'
  if (parse === 'json' || parse === 'string' || typeof parse === 'function') return parse as ConfigParse<T>
  throw new InvalidArgumentError(
    `PrefixCache parse must be 'json', 'string' or a function (raw: Buffer, key: string) => value, got ${show(parse)}`,
  )
}

function parseValue<T>(parse: ConfigParse<T>, raw: Buffer, key: string): T {
  if (parse === 'string') return raw.toString() as T
  if (parse === 'json') return JSON.parse(raw.toString()) as T
  return parse(raw, key)
}

function change<T>(key: string, entry: Entry<T> | undefined): ConfigChange<T> {
  if (entry === undefined) return { key, deleted: true }
  return 'value' in entry ? { key, deleted: false, value: entry.value } : { key, deleted: false }
}

/** The changes that turn `before` into `after` (keys whose mod revision differs, or that came or went). */
function diff<T>(before: Map<string, Entry<T>>, after: Map<string, Entry<T>>): ConfigChange<T>[] {
  const changes: ConfigChange<T>[] = []
  for (const [key, entry] of after) if (before.get(key)?.modRevision !== entry.modRevision) changes.push(change(key, entry))
  for (const key of before.keys()) if (!after.has(key)) changes.push({ key, deleted: true })
  return changes
}

/** Whether etcd refused a read (or a watch) because its revision was compacted. */
function isCompacted(err: unknown): boolean {
  return err instanceof Error && !(err instanceof MiddyEtcdError) && /compacted/i.test(err.message)
}
