import type { EtcdClient } from '../lib/core/client.js'
import { contenders, isLeaseSegment, leaseHex, queueKeys, rwContenders } from '../lib/core/keys.js'
import { keyspace, type KeyValue } from '../lib/core/kv.js'
import { VALUES_PER_RESPONSE } from '../lib/limits.js'
import { chunked } from '../lib/queue/moves.js'
import { leaseTtls, mapLimit, noMoreArgs, revisionNumber, scanKeys, type Command, type Report } from './common.js'
import { showKey, showTtl, table, type LeaseTtl } from './table.js'

/**
 * `locks [prefix]`: every lock under a key prefix, found by its Go-compatible key layout (the
 * CLI knows no lock names):
 * - Mutex / etcdctl lock / Election: `<name>/<leaseHex>` whose lease is that hex. The key with
 *   the lowest create revision under `<name>/` holds (or leads); the rest wait in that order.
 * - RWMutex: `<name>/read/<nano>` and `<name>/write/<nano>` with a lease. In revision order,
 *   the leading readers hold together, or the first key alone if it is a writer.
 */

export type LockKind = 'mutex' | 'election' | 'rwmutex'
type Kind = LockKind

/** One contender's key as it appears in the report. */
interface Contender {
  key: string
  mode?: 'read' | 'write'
  fence: number
  lease: string
  leaseId: string
  ttl: number | null
  grantedTtl: number | null
}

interface Lock {
  name: string
  kind: Kind
  holders: Contender[]
  waiters: Contender[]
  /** A mutex without holder: the older key under `<name>/` (not a contender) the waiters queue behind. */
  blockedBy?: string
}

/** A lock as read from etcd, before lease TTLs are known. */
export interface FoundLock {
  name: string
  kind: Kind
  holders: KeyValue[]
  waiters: KeyValue[]
  blockedBy?: string
}

/** Contender keys read per lock: far more than any healthy lock has queued. */
const MAX_CONTENDERS = 1000

/**
 * The lock name a key may belong to, by layout alone; undefined for keys that are no lock's.
 * The scan reads keys only (values may be megabytes), and etcd 3.7 answers keys-only ranges from
 * its index, without leases (etcd #22209): readLock, which reads values, checks the leases.
 */
export function lockNameOf(key: string): string | undefined {
  const rw = rwContenders.parse(key)
  if (rw) return rw.name
  // A priority queue item's sequence (`<name>/<%05d>/<%016d>`) looks like a lease hex too.
  return queueKeys.endsAsPriorityItem(key) ? undefined : contenders.nameOf(key)
}

/** Lock names read per Txn: as many ranges as values the primitives read per answer (lib/limits.ts). */
const LOCKS_PER_TXN = VALUES_PER_RESPONSE

/**
 * The locks living under each of `names`, at `revision`: for each name everything under
 * `<name>/`, oldest first, with values: contenders' are empty (Mutex, RWMutex) or a proposal
 * (Election), and a keys-only read would lose the leases on etcd 3.7. The oldest key's value
 * tells an election's proposal from a lock's empty value. The ranges go {@link LOCKS_PER_TXN} to a
 * Txn, a few Txns at a time, so 10,000 locks cost a thousand requests, not ten thousand.
 */
export async function readLocks(client: EtcdClient, names: string[], revision: bigint): Promise<FoundLock[]> {
  const ks = keyspace(client)
  const batches = chunked(names, LOCKS_PER_TXN)
  const found = await mapLimit(batches, 8, async (batch) => {
    const { results } = await ks.reads(
      Object.fromEntries(
        batch.map((name, i) => [
          `lock ${i}`,
          ks.get(contenders.prefix(name), { prefix: true, sort: ['Create', 'Ascend'], revision, limit: MAX_CONTENDERS }),
        ]),
      ),
    )
    return batch.flatMap((name, i) => {
      const { kvs } = results[`lock ${i}`]
      return locksUnder(name, kvs, kvs[0])
    })
  })
  return found.flat()
}

/** Every lock name under `prefix` by key layout, and the revision of that scan. */
export async function lockNames(client: EtcdClient, prefix: string): Promise<{ names: string[]; revision: bigint }> {
  const seen = new Set<string>()
  const revision = await scanKeys(client, prefix, (kv) => {
    const name = lockNameOf(kv.key)
    if (name !== undefined) seen.add(name)
  })
  return { names: [...seen].sort(), revision }
}

/** The mutex/election and the rwmutex (either may be absent) living under `<name>/`. */
export function locksUnder(name: string, kvs: KeyValue[], first: KeyValue | undefined): FoundLock[] {
  const found: FoundLock[] = []
  const direct = kvs.filter(
    (kv) => contenders.nameOf(kv.key) === name && isLeaseSegment(kv.key.slice(contenders.prefix(name).length), kv.lease),
  )
  if (direct.length > 0) {
    // Go's Mutex: the oldest key under the prefix holds, whatever it is.
    const holds = first !== undefined && direct[0].key === first.key
    found.push({
      name,
      kind: holds && first.value.length > 0 ? 'election' : 'mutex',
      holders: holds ? direct.slice(0, 1) : [],
      waiters: holds ? direct.slice(1) : direct,
      ...(holds || !first ? {} : { blockedBy: first.key }),
    })
  }
  const rw = kvs
    .filter((kv) => kv.lease !== '0' && rwContenders.parse(kv.key)?.name === name)
    .sort((a, b) => (a.modRevision < b.modRevision ? -1 : a.modRevision > b.modRevision ? 1 : 0))
  if (rw.length > 0) {
    const isWriter = (kv: KeyValue) => rwContenders.parse(kv.key)?.mode === 'write'
    const readers = rw.findIndex(isWriter)
    const holding = isWriter(rw[0]) ? 1 : readers === -1 ? rw.length : readers
    found.push({ name, kind: 'rwmutex', holders: rw.slice(0, holding), waiters: rw.slice(holding) })
  }
  return found
}

function contender(kv: KeyValue, ttls: Map<string, LeaseTtl>, kind: Kind): Contender {
  const ttl = ttls.get(kv.lease)
  const c: Contender = {
    key: kv.key,
    fence: revisionNumber(kv.createRevision),
    lease: leaseHex(kv.lease),
    leaseId: kv.lease,
    ttl: ttl?.remaining ?? null,
    grantedTtl: ttl?.granted ?? null,
  }
  if (kind === 'rwmutex') c.mode = rwContenders.parse(kv.key)?.mode
  return c
}

function render(prefix: string, locks: Lock[]): string {
  if (locks.length === 0) return `no locks under ${prefix === '' ? 'the keyspace' : JSON.stringify(prefix)}`
  const rows: string[][] = []
  for (const lock of locks) {
    const [held, waiting] = lock.kind === 'election' ? ['leader', 'candidate'] : ['holder', 'waiter']
    const entries = [...lock.holders.map((c) => [held, c] as const), ...lock.waiters.map((c) => [waiting, c] as const)]
    if (lock.blockedBy !== undefined) rows.push([showKey(lock.name), lock.kind, 'blocked by', '-', showKey(lock.blockedBy), '-', '-'])
    for (const [role, c] of entries) {
      const ttl = c.ttl === null ? undefined : { remaining: c.ttl, granted: c.grantedTtl ?? 0 }
      rows.push([
        showKey(lock.name),
        lock.kind,
        c.mode ? `${role} (${c.mode})` : role,
        String(c.fence),
        showKey(c.key),
        c.lease,
        showTtl(ttl),
      ])
    }
  }
  return table(['LOCK', 'KIND', 'ROLE', 'FENCE', 'KEY', 'LEASE', 'TTL'], rows, ['left', 'left', 'left', 'right'])
}

export const locks: Command = {
  name: 'locks',
  summary: 'list locks under a prefix: holders and waiters with fence and lease TTL',
  usage: 'locks [prefix]',
  help: `Lists every lock under a key prefix (the whole keyspace when none is given), found by
the Go-compatible key layouts:
  Mutex, etcdctl lock     <name>/<leaseHex>            oldest create revision holds
  Election, etcdctl elect <name>/<leaseHex> = proposal  oldest create revision leads
  RWMutex                 <name>/read|write/<nano>     leading readers, or the first writer, hold
The rest wait, oldest first.

Columns: FENCE is the key's create revision (the fencing token the holder got); LEASE the
lease id in hex (as in the key); TTL the lease's remaining/granted seconds.

The prefix is a raw key prefix: 'locks' matches 'locks/a/...' and 'locksmith/...'.`,
  async run({ args, connect }): Promise<Report> {
    noMoreArgs(locks, args, 1)
    const prefix = args[0] ?? ''
    const client = connect()
    const { names, revision } = await lockNames(client, prefix)
    const found = await readLocks(client, names, revision)
    const ttls = await leaseTtls(
      client,
      found.flatMap((l) => [...l.holders, ...l.waiters].map((kv) => kv.lease)),
    )
    const result: Lock[] = found.map((l) => ({
      name: l.name,
      kind: l.kind,
      holders: l.holders.map((kv) => contender(kv, ttls, l.kind)),
      waiters: l.waiters.map((kv) => contender(kv, ttls, l.kind)),
      ...(l.blockedBy === undefined ? {} : { blockedBy: l.blockedBy }),
    }))
    return { json: { prefix, revision: revisionNumber(revision), locks: result }, text: render(prefix, result) }
  },
}
