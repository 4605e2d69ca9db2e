/**
 * The state model of the operations page (`middy-etcd ui`): one consistent read of what the
 * primitives keep in etcd — locks, RWMutexes, elections, semaphores, rate limiters, queues,
 * double barriers, idempotency records — found by the key layouts of lib/core/keys.ts, so Go and
 * etcdctl holders show too. It reuses the CLI's readers (cli/locks.ts, cli/semaphores.ts,
 * cli/barrier.ts) on one keys-only scan of the keyspace, read page by page at one revision.
 *
 * Every read is bounded: the scan holds one page of keys at a time and keeps per queue only a
 * few item keys; values are read for lock contenders (batched per Txn) and for at most
 * {@link MAX_RECORDS_READ} idempotency records, {@link VALUES_PER_RESPONSE} per Txn. Lease TTLs
 * come from one LeaseLeases call (which leases still exist) and at most
 * {@link TTL_REFRESH_BUDGET} LeaseTimeToLive calls per snapshot, the rest extrapolated from
 * the last answer, so a snapshot of 10,000 locks does not cost 10,000 lease calls.
 */
import type { EtcdClient } from '../../lib/core/client.js'
import { leaseHex, permitKeys, queueKeys, queueOfDeadLetterQueue } from '../../lib/core/keys.js'
import { keyspace, toTypedError, type KeyValue } from '../../lib/core/kv.js'
import { DEFAULT_IN_PROGRESS_TTL_S, VALUES_PER_RESPONSE } from '../../lib/limits.js'
import { chunked } from '../../lib/queue/moves.js'
import { readBarrier } from '../barrier.js'
import { mapLimit, scanKeys } from '../common.js'
import { lockNameOf, readLocks, type FoundLock } from '../locks.js'
import { readPermits, type FoundPermits } from '../semaphores.js'
import { shortText } from '../table.js'

/** Idempotency and single-flight records whose values one snapshot reads at most. */
export const MAX_RECORDS_READ = 500
/** Semaphores/rate limiters and double barriers read at most per snapshot (each is one Txn). */
export const MAX_PERMITS_READ = 1000
export const MAX_BARRIERS_READ = 1000
/** LeaseTimeToLive calls one snapshot makes at most; other leases keep their last known TTL, counted down. */
export const TTL_REFRESH_BUDGET = 64
/** A lease with less than this left is as good as gone: its holder or waiter is flagged a zombie. */
export const ZOMBIE_BELOW_S = 1
/**
 * A live lease renews at a third of its TTL (lib/session, Go's clientv3, etcdctl), so its
 * remaining TTL stays above two thirds of it; one answered below this share of its TTL is not
 * being renewed: its owner was killed, frozen (a suspended Lambda) or cut off.
 */
export const NOT_RENEWED_BELOW = 0.4
/** Item keys the scan keeps per queue, to find the oldest one not claimed (in flight). */
const ITEMS_KEPT_PER_QUEUE = 32

const FIFO_ITEM = /^(.+)\/(\d{19})$/
const PRIORITY_ITEM = /^(.+)\/(\d{5})\/(\d{16})$/
/** Names whose `<name>/<unixNano>` keys are another primitive's, not a queue's items. */
const NOT_A_QUEUE = /(^__|\/(read|write|waiters)$)/

/** What a key is to a queue: the queue, and which of its parts the key belongs to. */
export type QueuePart = 'item' | 'claim' | 'delayed' | 'group'

/** Queue name of an item key (`<name>/<unixNano>` or `<name>/<%05d>/<%016d>`), and its producer time for a FIFO item. */
export function queueItemOf(key: string): { queue: string; priority?: number; producedAtMs?: number } | undefined {
  const p = PRIORITY_ITEM.exec(key)
  if (p && !NOT_A_QUEUE.test(p[1])) return { queue: p[1], priority: Number(p[2]) }
  const f = FIFO_ITEM.exec(key)
  if (f && !NOT_A_QUEUE.test(f[1])) return { queue: f[1], producedAtMs: Number(BigInt(f[2]) / 1_000_000n) }
  return undefined
}

/** The queue a key belongs to (items and our bookkeeping beside them), or undefined. */
export function queuePartOf(key: string): { queue: string; part: QueuePart } | undefined {
  if (key.startsWith('__claims/')) {
    const item = queueKeys.itemOfClaim(key)
    const of = item && queueItemOf(item.item)
    return of ? { queue: of.queue, part: 'claim' } : undefined
  }
  if (key.startsWith('__delayed/')) {
    const rest = key.slice('__delayed/'.length)
    const slash = rest.lastIndexOf('/')
    return slash > 0 ? { queue: rest.slice(0, slash), part: 'delayed' } : undefined
  }
  if (key.startsWith('__groups/')) {
    const parts = key.slice('__groups/'.length).split('/')
    return parts.length >= 3 ? { queue: parts.slice(0, -2).join('/'), part: 'group' } : undefined
  }
  const item = queueItemOf(key)
  return item ? { queue: item.queue, part: 'item' } : undefined
}

/**
 * When revisions happened, as this server saw them: etcd keeps no timestamps, so the page dates
 * a key by its create revision against the revisions it has seen go by (watch answers and
 * snapshot headers). A revision older than the first one seen is dated "before the server
 * started" (`exact: false`: the age shown is a lower bound).
 */
export class RevisionClock {
  private readonly revisions: bigint[] = []
  private readonly times: number[] = []
  /** Samples kept: older ones are thinned out, so a long-running server keeps a bounded table. */
  private static readonly MAX_SAMPLES = 4096

  note(revision: bigint, atMs: number): void {
    const last = this.revisions.at(-1)
    if (last !== undefined && revision <= last) return
    this.revisions.push(revision)
    this.times.push(atMs)
    if (this.revisions.length > RevisionClock.MAX_SAMPLES) {
      // Drop every other sample of the older half: recent ages stay precise, old ones coarse.
      const half = RevisionClock.MAX_SAMPLES / 2
      const keep = (_: unknown, i: number) => i >= half || i % 2 === 0
      const revs = this.revisions.filter(keep)
      const times = this.times.filter(keep)
      this.revisions.splice(0, this.revisions.length, ...revs)
      this.times.splice(0, this.times.length, ...times)
    }
  }

  /** When `revision` was written, at the latest; `exact` false when it predates what this server saw. */
  timeOf(revision: bigint): { atMs: number; exact: boolean } {
    if (this.revisions.length === 0 || revision <= this.revisions[0]) return { atMs: this.times[0] ?? Date.now(), exact: false }
    let lo = 0
    let hi = this.revisions.length - 1
    if (revision > this.revisions[hi]) return { atMs: Date.now(), exact: true }
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.revisions[mid] >= revision) hi = mid
      else lo = mid + 1
    }
    return { atMs: this.times[lo], exact: true }
  }
}

/**
 * The locks read by earlier snapshots, by name, and the names a watch event touched since: a
 * snapshot re-reads only new and touched names, so with 10,000 quiet locks it reads the few
 * that changed. {@link LockCache.forget} empties it (a lost watch may have missed changes).
 */
export class LockCache {
  readonly found = new Map<string, FoundLock[]>()
  private touched = new Set<string>()
  private everything = true

  /** A key changed: every lock whose `<name>/` prefix holds it must be read again. */
  touch(key: string): void {
    for (let slash = key.indexOf('/'); slash > 0; slash = key.indexOf('/', slash + 1)) this.touched.add(key.slice(0, slash))
  }

  forget(): void {
    this.everything = true
  }

  /**
   * Called before a snapshot's scan: what was touched until now is read by it (at a revision
   * after those changes); what is touched from now on, by the next one. Returns which of the
   * names the scan finds to read.
   */
  begin(): (names: string[]) => string[] {
    const all = this.everything
    const touched = this.touched
    this.everything = false
    this.touched = new Set()
    return (names) => (all ? names : names.filter((n) => touched.has(n) || !this.found.has(n)))
  }

  /** Keeps what a snapshot read; drops the locks no longer seen. */
  keep(names: string[], read: string[], found: FoundLock[]): void {
    const seen = new Set(names)
    for (const name of this.found.keys()) if (!seen.has(name)) this.found.delete(name)
    for (const name of read) this.found.set(name, [])
    for (const lock of found) this.found.get(lock.name)?.push(lock)
  }

  all(names: string[]): FoundLock[] {
    return names.flatMap((n) => this.found.get(n) ?? [])
  }
}

/** A lease's TTL as last answered, and when. */
interface CachedTtl {
  remaining: number
  granted: number
  atMs: number
}

/**
 * Lease TTLs for the page at a bounded cost: which leases exist comes from one LeaseLeases call
 * per snapshot; remaining TTLs from LeaseTimeToLive, at most {@link TTL_REFRESH_BUDGET} a
 * snapshot, the leases never asked first, then those whose counted-down TTL is lowest (the
 * candidates for zombies), then the stalest.
 */
export class LeaseBook {
  private readonly cache = new Map<string, CachedTtl>()
  private live = new Set<string>()

  constructor(private readonly client: EtcdClient) {}

  async refresh(leaseIds: Iterable<string>, nowMs: number): Promise<void> {
    const wanted = new Set([...leaseIds].filter((id) => id !== '0'))
    let listed
    try {
      listed = await this.client.leaseClient.leaseLeases({})
    } catch (err) {
      throw toTypedError(err, 'etcd lease list')
    }
    this.live = new Set(listed.leases.map((l) => String(l.ID)))
    for (const id of this.cache.keys()) if (!wanted.has(id) || !this.live.has(id)) this.cache.delete(id)
    const ask = [...wanted]
      .filter((id) => this.live.has(id))
      .map((id) => ({ id, cached: this.cache.get(id) }))
      .sort((a, b) => this.urgency(a.cached, nowMs) - this.urgency(b.cached, nowMs))
      .slice(0, TTL_REFRESH_BUDGET)
    await mapLimit(ask, 8, async ({ id }) => {
      try {
        const res = await this.client.leaseClient.leaseTimeToLive({ ID: id })
        const remaining = Number(res.TTL)
        if (remaining < 0) this.live.delete(id)
        else this.cache.set(id, { remaining, granted: Number(res.grantedTTL), atMs: Date.now() })
      } catch (err) {
        throw toTypedError(err, `etcd lease time-to-live ${leaseHex(id)}`)
      }
    })
  }

  /** Lower first: never asked, then the least time left (counted down), then the stalest. */
  private urgency(cached: CachedTtl | undefined, nowMs: number): number {
    if (!cached) return -Infinity
    const left = cached.remaining - (nowMs - cached.atMs) / 1000
    return left < ZOMBIE_BELOW_S * 3 ? left - 1e9 : cached.atMs - nowMs + 1e9
  }

  /** The lease's state at `nowMs`: gone, or its remaining TTL (counted down from the last answer). */
  view(leaseId: string, nowMs: number): LeaseView {
    const none = { ttl: null, grantedTtl: null, gone: false, notRenewed: false }
    if (leaseId === '0') return { lease: null, leaseId, ...none }
    const hex = leaseHex(leaseId)
    if (!this.live.has(leaseId)) return { lease: hex, leaseId, ...none, ttl: -1, gone: true }
    const cached = this.cache.get(leaseId)
    if (!cached) return { lease: hex, leaseId, ...none }
    const ttl = Math.max(0, cached.remaining - (nowMs - cached.atMs) / 1000)
    return {
      lease: hex,
      leaseId,
      ttl: Math.round(ttl * 10) / 10,
      grantedTtl: cached.granted,
      gone: false,
      notRenewed: cached.granted >= 2 && cached.remaining < cached.granted * NOT_RENEWED_BELOW,
    }
  }
}

/** A lease as the page shows it. */
export interface LeaseView {
  /** Hex id (as in Mutex keys and `etcdctl lease`); null: the key has no lease. */
  lease: string | null
  leaseId: string
  /** Seconds left at the snapshot's time (-1: gone; null: not known yet). */
  ttl: number | null
  grantedTtl: number | null
  gone: boolean
  /** Its last answered TTL was below {@link NOT_RENEWED_BELOW} of the granted one: nobody renews it. */
  notRenewed: boolean
}

/** One holder, waiter or candidate. */
export interface ContenderView extends LeaseView {
  key: string
  /** Its fencing token: the key's create revision. */
  fence: number
  mode?: 'read' | 'write'
  /** An election candidate's proposal, shortened for one line. */
  proposal?: string
  /** Since when it holds or waits (ms since the epoch); `sinceExact` false: at the latest this. */
  since: number
  sinceExact: boolean
  /** Its lease is gone, about to go, or not renewed: it holds or queues for nobody. */
  zombie: boolean
  /** A waiter or candidate queued behind a zombie holder: it waits until that lease expires. */
  behindZombie?: boolean
}

export interface LockView {
  name: string
  kind: 'mutex' | 'rwmutex' | 'election'
  holders: ContenderView[]
  waiters: ContenderView[]
  blockedBy?: string
}

export interface PermitsView {
  name: string
  kind: 'semaphore' | 'rate limiter'
  settings: string
  permits: number
  holders: (ContenderView & { slot?: number })[]
  waiters: ContenderView[]
}

export interface QueueView {
  name: string
  kind: 'fifo' | 'priority'
  /** Items under `<name>/` (ready + in flight). */
  items: number
  ready: number
  inFlight: number
  delayed: number
  inGroups: number
  /** The default dead-letter queue `dlq/<name>` and its items. */
  deadLetter: { queue: string; items: number } | null
  /** The oldest item not in flight: its key and since when it waits. */
  oldestReady: { key: string; since: number; sinceExact: boolean } | null
}

export interface BarrierView {
  name: string
  held: boolean
  participants: number
  ready: boolean
}

export interface RecordView extends LeaseView {
  key: string
  store: string
  state: string
  owner?: string
  since: number
  sinceExact: boolean
  /** In progress for longer than its lease's TTL: its owner is most likely gone or stuck. */
  overdue: boolean
}

/** One read of everything, at one revision. */
export interface State {
  revision: number
  /** When it was read (ms since the epoch, the server's clock). */
  at: number
  /** How long the read took, ms. */
  readMs: number
  locks: LockView[]
  permits: PermitsView[]
  queues: QueueView[]
  barriers: BarrierView[]
  records: RecordView[]
  recordCounts: { total: number; read: number; byState: Record<string, number> }
  /** What a bound left out, in words. */
  notes: string[]
}

/** What the scan gathers per queue. */
interface QueueTally {
  items: number
  claims: number
  delayed: number
  groups: number
  priority: boolean
  /** The first item keys in key order (consumers' order), at most {@link ITEMS_KEPT_PER_QUEUE}. */
  first: KeyValue[]
}

/** Whether a key is an idempotency or single-flight record, and its store prefix. */
function recordStoreOf(key: string): string | undefined {
  if (key.startsWith('__singleflight/')) return '__singleflight'
  if (!key.startsWith('__idempotency/')) return undefined
  const rest = key.slice('__idempotency/'.length)
  const slash = rest.indexOf('/')
  return slash > 0 ? `__idempotency/${rest.slice(0, slash)}` : undefined
}

/** Reads the whole state under `prefix` ('' = the client's whole namespace). */
export async function readState(
  client: EtcdClient,
  clock: RevisionClock,
  leases: LeaseBook,
  cache: LockCache = new LockCache(),
  prefix = '',
): Promise<State> {
  const started = Date.now()
  const staleOf = cache.begin()
  const notes: string[] = []
  const lockNames = new Set<string>()
  const permitNames = new Set<string>()
  const waiterNames = new Set<string>()
  const readyNames = new Set<string>()
  const queues = new Map<string, QueueTally>()
  const claimed = new Set<string>()
  const recordKeys: KeyValue[] = []
  let recordTotal = 0
  const tally = (name: string) => {
    const known = queues.get(name)
    if (known) return known
    const t: QueueTally = { items: 0, claims: 0, delayed: 0, groups: 0, priority: false, first: [] }
    queues.set(name, t)
    return t
  }
  const revision = await scanKeys(client, prefix, (kv) => {
    const lock = lockNameOf(kv.key)
    if (lock !== undefined) lockNames.add(lock)
    const permits = permitKeys.nameOfConfig(kv.key)
    if (permits !== undefined) permitNames.add(permits)
    if (kv.key.endsWith('/ready')) readyNames.add(kv.key.slice(0, -'/ready'.length))
    const waiter = /^(.+)\/waiters\/\d{1,20}$/.exec(kv.key)
    if (waiter) waiterNames.add(waiter[1])
    const store = recordStoreOf(kv.key)
    if (store !== undefined) {
      recordTotal++
      if (recordKeys.length < MAX_RECORDS_READ) recordKeys.push(kv)
      return
    }
    const part = queuePartOf(kv.key)
    if (!part) return
    const t = tally(part.queue)
    if (part.part === 'item') {
      t.items++
      if (queueItemOf(kv.key)?.priority !== undefined) t.priority = true
      if (t.first.length < ITEMS_KEPT_PER_QUEUE) t.first.push(kv)
    } else if (part.part === 'claim') {
      t.claims++
      // Claims sort before items (`__` < letters): known by the time the items come.
      const item = queueKeys.itemOfClaim(kv.key)
      if (item && claimed.size < 100_000) claimed.add(`${item.item}\n${item.createRevision}`)
    } else if (part.part === 'delayed') t.delayed++
    else t.groups++
  })
  clock.note(revision, Date.now())
  // A dead-letter queue shows under the queue it serves (that queue may be empty, even unseen).
  for (const name of [...queues.keys()]) {
    const of = queueOfDeadLetterQueue(name)
    if (of !== undefined) tally(of)
  }

  const names = [...lockNames].sort()
  const toRead = staleOf(names)
  cache.keep(names, toRead, await readLocks(client, toRead, revision))
  const foundLocks = cache.all(names)
  const permitList = [...permitNames].sort()
  if (permitList.length > MAX_PERMITS_READ) notes.push(`${permitList.length - MAX_PERMITS_READ} semaphores/rate limiters not read`)
  const foundPermits = (await mapLimit(permitList.slice(0, MAX_PERMITS_READ), 8, (name) => readPermits(client, name, revision))).filter(
    (p): p is FoundPermits => p !== undefined,
  )
  // `<name>/waiters/*` without a `<name>/config` are a double barrier's participants.
  const barrierList = [...new Set([...readyNames, ...[...waiterNames].filter((n) => !permitNames.has(n))])].sort()
  if (barrierList.length > MAX_BARRIERS_READ) notes.push(`${barrierList.length - MAX_BARRIERS_READ} double barriers not read`)
  const barriers = await mapLimit(barrierList.slice(0, MAX_BARRIERS_READ), 8, async (name) => {
    const { json } = await readBarrier(client, name)
    return { name, held: json.held, participants: json.doubleBarrier.participants, ready: json.doubleBarrier.ready }
  })
  const ks = keyspace(client)
  const records = (
    await mapLimit(chunked(recordKeys, VALUES_PER_RESPONSE), 4, async (chunk) => ks.getKeys(chunk.map((kv) => kv.key)))
  ).flat()
  if (recordTotal > MAX_RECORDS_READ)
    notes.push(`${recordTotal - MAX_RECORDS_READ} idempotency records not read (the first ${MAX_RECORDS_READ} are)`)

  const nowMs = Date.now()
  await leases.refresh(
    [
      ...foundLocks.flatMap((l) => [...l.holders, ...l.waiters].map((kv) => kv.lease)),
      ...foundPermits.flatMap((p) => [...p.holders, ...p.waiters].map((kv) => kv.lease)),
      ...records.map((kv) => kv.lease),
    ],
    nowMs,
  )
  const at = Date.now()
  const contender = (kv: KeyValue, sinceRevision: bigint = kv.createRevision): ContenderView => {
    const lease = leases.view(kv.lease, at)
    const since = clock.timeOf(sinceRevision)
    return {
      key: kv.key,
      fence: Number(kv.createRevision),
      ...lease,
      since: since.atMs,
      sinceExact: since.exact,
      zombie: lease.gone || lease.notRenewed || (lease.ttl !== null && lease.ttl < ZOMBIE_BELOW_S),
    }
  }
  const locks = foundLocks.map((l: FoundLock): LockView => {
    const view = (kv: KeyValue) => {
      const c = contender(kv)
      const rw = l.kind === 'rwmutex' ? /\/(read|write)\/\d+$/.exec(kv.key) : null
      if (rw) c.mode = rw[1] as 'read' | 'write'
      if (l.kind === 'election') c.proposal = shortText(kv.value, 120)
      return c
    }
    const holders = l.holders.map(view)
    const stuckBehind = holders.some((h) => h.zombie)
    return {
      name: l.name,
      kind: l.kind,
      holders,
      waiters: l.waiters.map((kv) => ({ ...view(kv), ...(stuckBehind ? { behindZombie: true } : {}) })),
      ...(l.blockedBy === undefined ? {} : { blockedBy: l.blockedBy }),
    }
  })
  const permits = foundPermits.map((p): PermitsView => {
    const slots = p.kind === 'semaphore' ? permitKeys.holders(p.name) : permitKeys.tokens(p.name)
    const holders = p.holders.map((kv) => ({
      ...contender(kv, p.kind === 'semaphore' ? kv.createRevision : kv.modRevision),
      slot: permitKeys.slotIndex(slots, kv.key),
    }))
    // Every permit held by a zombie: the queue moves only when one of those leases expires.
    const stuckBehind = holders.length >= p.permits && holders.every((h) => h.zombie)
    return {
      name: p.name,
      kind: p.kind,
      settings: p.settings,
      permits: p.permits,
      holders,
      waiters: p.waiters.map((kv) => ({ ...contender(kv), ...(stuckBehind ? { behindZombie: true } : {}) })),
    }
  })
  const queueViews = [...queues]
    .filter(([name]) => queueOfDeadLetterQueue(name) === undefined)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, t]): QueueView => {
      const dlqName = `dlq/${name}`
      const dlq = queues.get(dlqName)
      const oldest = t.first.find((kv) => !claimed.has(`${kv.key}\n${kv.createRevision}`))
      let oldestReady: QueueView['oldestReady'] = null
      if (oldest) {
        const produced = queueItemOf(oldest.key)?.producedAtMs
        const since = produced !== undefined ? { atMs: produced, exact: true } : clock.timeOf(oldest.createRevision)
        oldestReady = { key: oldest.key, since: since.atMs, sinceExact: since.exact }
      }
      // A marker can outlive its item for a moment (a Go Dequeue took a claimed item): never below 0.
      return {
        name,
        kind: t.priority ? 'priority' : 'fifo',
        items: t.items,
        ready: Math.max(0, t.items - t.claims),
        inFlight: Math.min(t.claims, t.items),
        delayed: t.delayed,
        inGroups: t.groups,
        deadLetter: dlq ? { queue: dlqName, items: dlq.items } : null,
        oldestReady,
      }
    })
  const byState: Record<string, number> = {}
  const recordViews = records.map((kv): RecordView => {
    let parsed: { state?: unknown; owner?: unknown } = {}
    try {
      parsed = JSON.parse(kv.value.toString())
    } catch {
      // Not a record: shown as such, never thrown (the page shows what is there).
    }
    const state = typeof parsed.state === 'string' ? parsed.state : 'not a record'
    byState[state] = (byState[state] ?? 0) + 1
    const lease = leases.view(kv.lease, at)
    // The record became in progress at its last write.
    const since = clock.timeOf(kv.modRevision)
    const ttlS = lease.grantedTtl ?? DEFAULT_IN_PROGRESS_TTL_S
    return {
      key: kv.key,
      store: recordStoreOf(kv.key) ?? '',
      state,
      ...(typeof parsed.owner === 'string' ? { owner: parsed.owner } : {}),
      ...lease,
      since: since.atMs,
      sinceExact: since.exact,
      overdue: state === 'in-progress' && (at - since.atMs > ttlS * 1000 || lease.gone),
    }
  })
  return {
    revision: Number(revision),
    at,
    readMs: at - started,
    locks,
    permits,
    queues: queueViews,
    barriers,
    records: recordViews,
    recordCounts: { total: recordTotal, read: records.length, byState },
    notes,
  }
}

/** The "what is stuck" overview: the few entries an operator looks at first. */
export function stuckOverview(state: State, deadLetterBaseline: Map<string, number>, top = 10) {
  const entries = [
    ...state.locks.flatMap((l) => [
      ...l.holders.map((c) => ({ name: l.name, kind: l.kind, role: l.kind === 'election' ? 'leader' : 'holder', ...c })),
      ...l.waiters.map((c) => ({ name: l.name, kind: l.kind, role: l.kind === 'election' ? 'candidate' : 'waiter', ...c })),
    ]),
    ...state.permits.flatMap((p) => [
      ...p.holders.map((c) => ({ name: p.name, kind: p.kind, role: p.kind === 'semaphore' ? 'holder' : 'token', ...c })),
      ...p.waiters.map((c) => ({ name: p.name, kind: p.kind, role: 'waiter', ...c })),
    ]),
  ]
  const oldestFirst = <T extends { since: number }>(list: T[]) => [...list].sort((a, b) => a.since - b.since).slice(0, top)
  return {
    longestHeld: oldestFirst(entries.filter((e) => e.role === 'holder' || e.role === 'leader')),
    longestWaiting: oldestFirst(entries.filter((e) => e.role === 'waiter' || e.role === 'candidate')),
    zombies: entries.filter((e) => e.zombie || e.behindZombie).slice(0, 100),
    queuesByOldestReady: oldestFirst(
      state.queues.filter((q) => q.oldestReady !== null).map((q) => ({ name: q.name, ready: q.ready, since: q.oldestReady!.since })),
    ),
    deadLettersGrew: state.queues
      .filter((q) => q.deadLetter && q.deadLetter.items > (deadLetterBaseline.get(q.name) ?? 0))
      .map((q) => ({
        name: q.name,
        deadLetter: q.deadLetter!.queue,
        items: q.deadLetter!.items,
        before: deadLetterBaseline.get(q.name) ?? 0,
      })),
    recordsOverdue: state.records.filter((r) => r.overdue).slice(0, 100),
    callersQueued: state.permits
      .filter((p) => p.waiters.length > 0)
      .map((p) => ({ name: p.name, kind: p.kind, queued: p.waiters.length, inUse: p.holders.length, permits: p.permits })),
  }
}

/** Counts of each section, for the tabs. */
export function counts(state: State) {
  return {
    locks: state.locks.filter((l) => l.kind !== 'election').length,
    elections: state.locks.filter((l) => l.kind === 'election').length,
    permits: state.permits.length,
    queues: state.queues.length,
    barriers: state.barriers.length,
    records: state.recordCounts.total,
  }
}
