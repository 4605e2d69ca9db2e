import type { EtcdClient } from '../lib/core/client.js'
import { leaseHex, permitKeys } from '../lib/core/keys.js'
import { keyspace, type KeyValue } from '../lib/core/kv.js'
import { leaseTtls, mapLimit, noMoreArgs, revisionNumber, scanKeys, type Command, type Report } from './common.js'
import { showKey, showTtl, table, type LeaseTtl } from './table.js'

/**
 * `semaphores [prefix]`: every Semaphore and RateLimiter under a key prefix, found by their
 * `<name>/config` key (`permits=<n>`, or `rate=<r> per=<ms> burst=<b>`), with the permits in
 * use (`<name>/holders/<slot>`, or the rate limiter's `<name>/tokens/<slot>`) and the queued
 * calls (`<name>/waiters/<nano>`, oldest first), all read at one revision.
 */

export type PermitKind = 'semaphore' | 'rate limiter'
type Kind = PermitKind

interface Entry {
  key: string
  /** Holders and tokens: the slot number; waiters: the place in the queue (1 = next). */
  slot?: number
  position?: number
  /** Holders: the fencing token (create revision); tokens: the admission's revision; waiters: the queue key's create revision. */
  revision: number
  lease: string | null
  leaseId: string
  ttl: number | null
  grantedTtl: number | null
}

export interface FoundPermits {
  name: string
  kind: Kind
  settings: string
  permits: number
  holders: KeyValue[]
  waiters: KeyValue[]
}

/** Entries read per list: far more than any healthy semaphore has. */
const MAX_ENTRIES = 1000

/** The semaphore or rate limiter named `name` at `revision`, if its config key says it is one. */
export async function readPermits(client: EtcdClient, name: string, revision: bigint): Promise<FoundPermits | undefined> {
  const ks = keyspace(client)
  const at = { revision, limit: MAX_ENTRIES }
  const { results } = await ks.reads({
    config: ks.get(permitKeys.config(name), { revision }),
    holders: ks.get(permitKeys.holders(name), { ...at, prefix: true }),
    tokens: ks.get(permitKeys.tokens(name), { ...at, prefix: true }),
    waiters: ks.get(permitKeys.waiters(name), { ...at, prefix: true, sort: ['Create', 'Ascend'] }),
  })
  const settings = results.config.kvs[0]?.value.toString() ?? ''
  const parsed = permitKeys.parseSettings(settings)
  if (!parsed) return undefined
  const { kind, permits } = parsed
  const waiters = results.waiters.kvs
  const slots = kind === 'semaphore' ? results.holders.kvs : results.tokens.kvs
  const bySlot = (kv: KeyValue) =>
    permitKeys.slotIndex(kind === 'semaphore' ? permitKeys.holders(name) : permitKeys.tokens(name), kv.key) ?? Infinity
  return { name, kind, settings, permits, holders: [...slots].sort((a, b) => bySlot(a) - bySlot(b)), waiters }
}

function entry(kv: KeyValue, ttls: Map<string, LeaseTtl>, revision: bigint, place: { slot?: number; position?: number }): Entry {
  const ttl = ttls.get(kv.lease)
  return {
    key: kv.key,
    ...place,
    revision: revisionNumber(revision),
    lease: kv.lease === '0' ? null : leaseHex(kv.lease),
    leaseId: kv.lease,
    ttl: ttl?.remaining ?? null,
    grantedTtl: ttl?.granted ?? null,
  }
}

function render(prefix: string, found: ReturnType<typeof toJson>[]): string {
  if (found.length === 0) return `no semaphores or rate limiters under ${prefix === '' ? 'the keyspace' : JSON.stringify(prefix)}`
  const rows: string[][] = []
  for (const s of found) {
    const role = s.kind === 'semaphore' ? 'holder' : 'token'
    const ttl = (e: Entry) => (e.ttl === null ? '-' : showTtl({ remaining: e.ttl, granted: e.grantedTtl ?? 0 }))
    const head = [showKey(s.name), s.kind, s.settings]
    rows.push([...head, 'in use', `${s.holders.length}/${s.permits}`, '', '', '', ''])
    for (const h of s.holders) rows.push([...head, role, `slot ${h.slot}`, String(h.revision), showKey(h.key), h.lease ?? '-', ttl(h)])
    for (const w of s.waiters) rows.push([...head, 'waiter', `#${w.position}`, String(w.revision), showKey(w.key), w.lease ?? '-', ttl(w)])
  }
  return table(['NAME', 'KIND', 'SETTINGS', 'ROLE', 'PLACE', 'REV', 'KEY', 'LEASE', 'TTL'], rows, [
    'left',
    'left',
    'left',
    'left',
    'left',
    'right',
  ])
}

function toJson(s: FoundPermits, ttls: Map<string, LeaseTtl>) {
  const slots = s.kind === 'semaphore' ? permitKeys.holders(s.name) : permitKeys.tokens(s.name)
  return {
    name: s.name,
    kind: s.kind,
    settings: s.settings,
    permits: s.permits,
    // A holder's fence is its create revision; a token counts from its last write (its admission).
    holders: s.holders.map((kv) =>
      entry(kv, ttls, s.kind === 'semaphore' ? kv.createRevision : kv.modRevision, { slot: permitKeys.slotIndex(slots, kv.key) }),
    ),
    waiters: s.waiters.map((kv, i) => entry(kv, ttls, kv.createRevision, { position: i + 1 })),
  }
}

/** The `semaphores` command. */
export const semaphores: Command = {
  name: 'semaphores',
  summary: 'list semaphores and rate limiters under a prefix: permits in use and queued calls',
  usage: 'semaphores [prefix]',
  help: `Lists every Semaphore and RateLimiter under a key prefix (the whole keyspace when none
is given), found by its settings key <name>/config:
  Semaphore     permits=<n>                     holders: <name>/holders/<slot>
  RateLimiter   rate=<r> per=<ms> burst=<b>     tokens:  <name>/tokens/<slot> (admissions
                                                still counted against the rate)
and the calls queued for either under <name>/waiters/, oldest (next) first.

Columns: PLACE is the permit's slot, or the waiter's place in the queue; REV the holder's
fencing token (create revision), a token's admission revision, or when a waiter queued; LEASE
the lease id in hex ('-': none); TTL the lease's remaining/granted seconds.

All keys are plain etcd keys: 'etcdctl get --prefix <name>/' shows them, and deleting a
holder's key frees its permit. Go has no semaphore or rate limiter: these layouts are ours.`,
  async run({ args, connect }): Promise<Report> {
    noMoreArgs(semaphores, args, 1)
    const prefix = args[0] ?? ''
    const client = connect()
    const names = new Set<string>()
    const revision = await scanKeys(client, prefix, (kv) => {
      const name = permitKeys.nameOfConfig(kv.key)
      if (name !== undefined) names.add(name)
    })
    const found = (await mapLimit([...names].sort(), 16, (name) => readPermits(client, name, revision))).filter(
      (f): f is FoundPermits => f !== undefined,
    )
    const ttls = await leaseTtls(
      client,
      found.flatMap((s) => [...s.holders, ...s.waiters].map((kv) => kv.lease)),
    )
    const result = found.map((s) => toJson(s, ttls))
    return { json: { prefix, revision: revisionNumber(revision), semaphores: result }, text: render(prefix, result) }
  },
}
