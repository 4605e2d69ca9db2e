import type { ParseArgsConfig } from 'node:util'
import type { EtcdClient } from '../lib/core/client.js'
import { prefixEnd, toKeyValue, toTypedError, type KeyValue } from '../lib/core/kv.js'
import { leaseHex } from '../lib/core/keys.js'
import type { LeaseTtl } from './table.js'

/** What a command gets: its arguments and a way to reach etcd (connected on first use). */
export interface Invocation {
  /** Positional arguments after the command name. */
  args: string[]
  /** Parsed options (global and the command's own). */
  options: Record<string, string | boolean | undefined>
  /** The etcd client, created from --endpoints / the environment on first call. */
  connect(): EtcdClient
}

/** What a command produces: a JSON document for `--json`, and the same facts as text. */
export interface Report {
  json: unknown
  text: string
}

/** One command of the CLI. */
export interface Command {
  name: string
  /** One line for the command list. */
  summary: string
  /** The usage line(s), without the program name. */
  usage: string
  /** Full help: what it shows and how to read it. */
  help: string
  /** The command's own options (the global ones are added by main). */
  options?: NonNullable<ParseArgsConfig['options']>
  run(invocation: Invocation): Promise<Report>
}

/** Bad command-line usage: printed with the command's usage, exit status 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage to print (undefined: the general usage). */
    readonly command?: Command,
  ) {
    super(message)
    this.name = 'UsageError'
  }
}

/** The one positional argument `what` of `command`, or a {@link UsageError}. */
export function requireArg(command: Command, args: string[], index: number, what: string): string {
  const value = args[index]
  if (value === undefined || value === '') throw new UsageError(`${command.name}: missing ${what}`, command)
  return value
}

/** Rejects positional arguments beyond `max`. */
export function noMoreArgs(command: Command, args: string[], max: number): void {
  if (args.length > max) throw new UsageError(`${command.name}: unexpected argument ${JSON.stringify(args[max])}`, command)
}

/** A positive whole number option, or a {@link UsageError} naming it. */
export function intOption(
  command: Command,
  raw: string | boolean | undefined,
  name: string,
  fallback: number,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (raw === undefined) return fallback
  const n = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : NaN
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${command.name}: --${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`, command)
  }
  return n
}

/** A revision as a JSON number (revisions stay far below 2^53). */
export function revisionNumber(rev: bigint): number {
  return Number(rev)
}

/**
 * Remaining and granted TTL of each lease (LeaseTimeToLive, one RPC per distinct lease, run
 * together). A lease the server no longer knows reports remaining -1.
 */
export async function leaseTtls(client: EtcdClient, leaseIds: Iterable<string>): Promise<Map<string, LeaseTtl>> {
  const ids = [...new Set(leaseIds)].filter((id) => id !== '0')
  const ttls = new Map<string, LeaseTtl>()
  await Promise.all(
    ids.map(async (ID) => {
      try {
        const res = await client.leaseClient.leaseTimeToLive({ ID })
        ttls.set(ID, { remaining: Number(res.TTL), granted: Number(res.grantedTTL) })
      } catch (err) {
        throw toTypedError(err, `etcd lease time-to-live ${leaseHex(ID)}`)
      }
    }),
  )
  return ttls
}

const PAGE = 1000

/**
 * Visits every key under `prefix` (the whole keyspace of the client's namespace when `prefix`
 * is ''), keys only (whose leases etcd 3.7 leaves at 0, etcd #22209: callers must not read them),
 * in key order, page by page at one revision so the visit is a consistent
 * snapshot; only one page is in memory at a time. Returns that revision.
 */
export async function scanKeys(client: EtcdClient, prefix: string, visit: (kv: KeyValue) => void): Promise<bigint> {
  const ns = client.prefix
  const start = Buffer.concat([ns, Buffer.from(prefix)])
  // An empty start key is not a valid range: "\0" to "\0" is etcd's "every key".
  const end = start.length === 0 ? Buffer.from([0]) : prefixEnd(start)
  let key = start.length === 0 ? Buffer.from([0]) : start
  let revision: string | undefined
  for (;;) {
    let res
    try {
      res = await client.kv.range({ key, range_end: end, limit: PAGE, keys_only: true, revision })
    } catch (err) {
      throw toTypedError(err, `etcd range ${JSON.stringify(prefix)}`)
    }
    revision ??= res.header.revision
    for (const kv of res.kvs) visit(toKeyValue(kv, kv.key.subarray(ns.length).toString()))
    if (!res.more || res.kvs.length === 0) return BigInt(revision)
    key = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])])
  }
}

/** `fn` over `items`, at most `limit` at a time, results in input order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}
