import {
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  isRecoverableError,
  type ICompare,
  type IKeyValue,
  type IRangeRequest,
  type IRangeResponse,
  type IRequestOp,
  type IResponseOp,
  type ITxnResponse,
  type Namespace,
} from 'etcd3'
import { closedSignal } from './client-closed.js'
import {
  ConfigurationError,
  EtcdUnavailableError,
  InvalidArgumentError,
  MiddyEtcdError,
  PermissionDeniedError,
  ResponseTooLargeError,
  SessionExpiredError,
  ValueTooLargeError,
} from '../errors.js'
import { reportLeaseGone } from './keepalive.js'
import { MAX_NAME_BYTES, MAX_VALUE_BYTES } from '../limits.js'
import { perClient } from './per-client.js'

/**
 * The raw etcd KV RPCs the primitives are written in, with the client's namespace applied:
 * keys go in and come out relative to the namespace, errors come out typed. One instance per
 * client (see {@link keyspace}); every method is exactly one RPC.
 */

/** A key-value as the primitives see it: relative key, revisions as bigint. */
export interface KeyValue {
  key: string
  value: Buffer
  createRevision: bigint
  modRevision: bigint
  version: bigint
  lease: string
}

/** A Range result: the kvs, whether the limit cut it, and the store revision it was read at. */
export interface RangeResult {
  kvs: KeyValue[]
  more: boolean
  count: bigint
  revision: bigint
}

export type SortTarget = 'Key' | 'Version' | 'Create' | 'Mod' | 'Value'

/** Options of a Range: the spec's firstCreate is `{ prefix: true, sort: ['Create', 'Ascend'], limit: 1 }`. */
export interface RangeOptions {
  prefix?: boolean
  /** The end of the range (exclusive, a relative key): every key from `key` up to it. Wins over `prefix`. */
  end?: string
  /** The range ends where the keys starting with this (relative) prefix end: every key from `key` to the last of that prefix. */
  endOfPrefix?: string
  sort?: [SortTarget, 'Ascend' | 'Descend']
  limit?: number
  revision?: bigint
  maxCreateRevision?: bigint
  maxModRevision?: bigint
  minModRevision?: bigint
  minCreateRevision?: bigint
  serializable?: boolean
  countOnly?: boolean
  /** Keys and revisions only, no values. */
  keysOnly?: boolean
}

/** One op of a Txn, built by {@link Keyspace.put}, {@link Keyspace.get}, {@link Keyspace.deleteOp}. */
export type Op = IRequestOp

// What kind of op a builder made, known to the compiler only: a named Txn's results are then
// typed by op (a read gives a RangeResult, a delete a count) without a `!` at each use.
declare const opKind: unique symbol
export type RangeOp = Op & { readonly [opKind]: 'range' }
export type PutOp = Op & { readonly [opKind]: 'put' }
export type DeleteOp = Op & { readonly [opKind]: 'delete' }
export type TxnOp = Op & { readonly [opKind]: 'txn' }
/**
 * The ops of one branch of a Txn, by name. A name may hold a list of ops (the writes of a
 * part built elsewhere, whose results nobody reads): they run in the list's order, where the
 * name stands among the others. A name holding `undefined` sends nothing (an op only some
 * calls need) and its result is `undefined`. Ops are sent in the order their names were given,
 * so no name may look like an array index ("0", "12"): JavaScript would put those first.
 */
export type NamedOps = Record<string, Op | readonly Op[] | undefined>
// A nested Txn built by Keyspace.namedTxnOp carries the types of its branches, so that its
// result (inside a named Txn) is typed by name as well.
declare const branchTypes: unique symbol
/** A nested Txn whose branches are named ops (see {@link Keyspace.namedTxnOp}). */
export type NamedTxnOp<S extends NamedOps = NamedOps, F extends NamedOps = NamedOps> = TxnOp & {
  readonly [branchTypes]: { success: S; failure: F }
}
/** What an op of kind `O` returned (a list of ops: what each returned, in its order). */
export type ResultOf<O> =
  O extends NamedTxnOp<infer S, infer F>
    ? NamedTxnResult<S, F>
    : O extends RangeOp
      ? RangeResult
      : O extends DeleteOp
        ? bigint
        : O extends TxnOp
          ? TxnResult
          : O extends PutOp
            ? true
            : O extends readonly (infer E)[]
              ? ResultOf<E>[]
              : OpResult
/** What each named op of a branch returned, under the same names (`undefined` for an op that may not have been sent). */
export type NamedResults<T extends NamedOps> = {
  [K in keyof T]: undefined extends T[K] ? ResultOf<Exclude<T[K], undefined>> | undefined : ResultOf<T[K]>
}
/**
 * A Txn with named ops ({@link Keyspace.namedTxn}): `results` holds what the branch that ran
 * returned, under the names it was built with; `succeeded` says which branch that was.
 */
export type NamedTxnResult<S extends NamedOps, F extends NamedOps> =
  | { succeeded: true; revision: bigint; results: NamedResults<S> }
  | { succeeded: false; revision: bigint; results: NamedResults<F> }
/** One compare of a Txn, built by {@link Keyspace.compare}. */
export type Compare = ICompare

/** What one op of a Txn returned, namespace removed. */
export interface OpResult {
  range?: RangeResult
  deleted?: bigint
  put?: true
  /** A nested Txn's outcome (see {@link Keyspace.txnOp}). */
  txn?: TxnResult
}

export interface TxnResult {
  succeeded: boolean
  revision: bigint
  results: OpResult[]
}

/** A raw etcd3 key-value as a {@link KeyValue} whose key is `key`. */
export function toKeyValue(kv: IKeyValue, key: string): KeyValue {
  return {
    key,
    value: kv.value,
    createRevision: BigInt(kv.create_revision),
    modRevision: BigInt(kv.mod_revision),
    version: BigInt(kv.version),
    lease: kv.lease,
  }
}

/** Txn option: safe to send again when its answer is lost (a second application changes nothing). */
export const IDEMPOTENT = { idempotent: true } as const

/** The end of the range of keys starting with `prefix` (Go's `clientv3.GetPrefixRangeEnd`). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix)
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++
      return end.subarray(0, i + 1)
    }
  }
  // All 0xff (or empty): "every key from here on".
  return Buffer.from([0])
}

/**
 * The sizes in grpc-js's "Received message larger than max (<size> vs <limit>)": an answer over
 * the client's receive limit. etcd3 files it with the recoverable errors (RESOURCE_EXHAUSTED),
 * but it is not one: the request was carried out, and sent again it gets the same answer.
 */
export function oversizedAnswer(err: unknown): { size: number; limit: number } | undefined {
  const m = err instanceof Error ? /larger than max \((\d+) vs (\d+)\)/.exec(err.message) : null
  return m ? { size: Number(m[1]), limit: Number(m[2]) } : undefined
}

/** Whether a failed read may be sent again: etcd did not answer, and not because the answer was too large. */
function resendable(err: Error): boolean {
  return isRecoverableError(err) && oversizedAnswer(err) === undefined
}

/** Turns an etcd3 / gRPC failure into one of our typed errors, leaving our own errors alone. */
export function toTypedError(err: unknown, what: string): Error {
  if (err instanceof MiddyEtcdError) return err
  const oversized = oversizedAnswer(err)
  if (oversized) {
    const { size, limit } = oversized
    return new ResponseTooLargeError(
      size,
      limit,
      `${what}: etcd's answer was ${size} bytes, more than this client accepts (${limit} bytes); the request was carried out (a write in it applied) but its answer is lost. ` +
        'Raise the limit (createClient({ maxResponseBytes }) or ETCD_MAX_RESPONSE_BYTES) or read less at a time (a smaller limit or batch)',
      { cause: err },
    )
  }
  if (err instanceof EtcdPermissionDeniedError) {
    return new PermissionDeniedError(
      `${what}: permission denied by etcd; grant the client's role access to this key range or use a key inside its namespace`,
      { cause: err },
    )
  }
  if (err instanceof EtcdLeaseInvalidError) {
    // A put with a lease that expired or was revoked before the session heard of it.
    return new SessionExpiredError(`${what}: the session's lease is gone (expired or revoked); create a new Session and retry`, {
      cause: err,
    })
  }
  const message = err instanceof Error ? err.message : String(err)
  if (/authentication failed|invalid user ID or password/i.test(message)) {
    // Never echo the credentials; name the settings to check instead.
    return new ConfigurationError(
      'ETCD_PASSWORD',
      `${what}: etcd rejected the credentials; check ETCD_USERNAME and ETCD_PASSWORD (or the username/password options)`,
      { cause: err },
    )
  }
  if (/too many operations in txn request/i.test(message)) {
    return new InvalidArgumentError(
      `${what}: too many operations in one transaction; etcd allows at most 128 (its --max-txn-ops): split the work into smaller transactions`,
      { cause: err },
    )
  }
  if (/request is too large/i.test(message)) {
    return new InvalidArgumentError(
      `${what}: the request is too large for etcd (default limit ~1.5 MiB, --max-request-bytes): write less per request`,
      { cause: err },
    )
  }
  if (err instanceof GRPCDeadlineExceededError || (err instanceof Error && isRecoverableError(err))) {
    return new EtcdUnavailableError(
      `${what}: etcd did not answer (${(err as Error).message}); a write may or may not have been applied. Check ETCD_ENDPOINTS and that the cluster has quorum`,
      { cause: err },
    )
  }
  return err instanceof Error ? err : new Error(String(err))
}

export class Keyspace {
  constructor(readonly client: Namespace) {}

  /** Read on use, not at construction: the shared client resolves its settings on first use. */
  private get prefix(): Buffer {
    return this.client.prefix
  }

  /** The key as stored in etcd (namespace included). */
  full(key: string): Buffer {
    return this.prefix.length === 0 ? Buffer.from(key) : Buffer.concat([this.prefix, Buffer.from(key)])
  }

  /**
   * A compare on `key`'s create/mod revision or version. With `prefix`, on every key starting
   * with `key` (etcd 3.3+): it holds when it holds for each of them, and for none (an empty
   * range compares as one missing key, so `Version == 0` means "no such key").
   */
  compare(
    key: string,
    target: 'Create' | 'Mod' | 'Version',
    result: '==' | '!=' | '<' | '>',
    value: bigint | number,
    options: { prefix?: boolean } = {},
  ): Compare {
    const field = target === 'Create' ? 'create_revision' : target === 'Mod' ? 'mod_revision' : 'version'
    const full = this.full(key)
    const compare: Compare = { key: full, target, result: RESULTS[result], [field]: String(value) }
    if (options.prefix) compare.range_end = prefixEnd(full)
    return compare
  }

  put(key: string, value: string | Buffer = '', lease?: string): PutOp {
    const request_put: IRequestOp['request_put'] = { key: this.full(key), value: Buffer.from(value) }
    if (lease !== undefined && lease !== '0') request_put.lease = lease
    return { request_put } as PutOp
  }

  get(key: string, options: RangeOptions = {}): RangeOp {
    return { request_range: this.rangeRequest(key, options) } as RangeOp
  }

  /** A DeleteRange op for a Txn (the RPC is {@link del}). */
  deleteOp(key: string, options: { prefix?: boolean } = {}): DeleteOp {
    const full = this.full(key)
    return { request_delete_range: { key: full, range_end: options.prefix ? prefixEnd(full) : undefined } } as DeleteOp
  }

  /** A nested Txn as one op (etcd 3.3+): its compares decide its branch independently of its siblings. */
  txnOp(compare: Compare[], success: Op[], failure: Op[] = []): TxnOp {
    return { request_txn: { compare, success, failure } } as TxnOp
  }

  /**
   * A nested Txn whose branches are named ops, as {@link namedTxn}'s: inside a named Txn its
   * result comes back as a {@link NamedTxnResult}, each op's result under its name. (In a Txn
   * sent with {@link txn} it is a plain {@link TxnResult}, by position.)
   */
  namedTxnOp<S extends NamedOps, F extends NamedOps = Record<never, Op>>(compare: Compare[], success: S, failure?: F): NamedTxnOp<S, F> {
    const op = this.txnOp(compare, flatOps(success), flatOps(failure ?? {}))
    nestedBranches.set(op, { success, failure: failure ?? {} })
    return op as NamedTxnOp<S, F>
  }

  /** One Txn RPC. */
  async txn(compare: Compare[], success: Op[], failure: Op[] = [], options: { idempotent?: boolean } = {}): Promise<TxnResult> {
    const request = { compare, success, failure }
    let res: ITxnResponse
    try {
      res = await this.client.kv.txn(request).catch((err: Error) => {
        // Only a Txn whose second application changes nothing (e.g. a delete fenced by create
        // revision) is sent again after an answer was lost: any other write could apply twice.
        if (!options.idempotent || !resendable(err)) throw err
        return this.client.kv.txn(request)
      })
    } catch (err) {
      // A put with a lease etcd no longer has: every session on that lease is over, whatever
      // its own bound says (e.g. an operator revoked it). Tell them now, not at the next tick.
      if (err instanceof EtcdLeaseInvalidError) for (const lease of leasesOf(request)) reportLeaseGone(this.client, lease)
      throw toTypedError(err, 'etcd txn')
    }
    return { succeeded: res.succeeded, revision: BigInt(res.header.revision), results: res.responses.map((r) => this.opResult(r)) }
  }

  /**
   * One Txn whose ops are named, each branch a record of ops: its results come back under the
   * same names, so a read is decoded by the name it was built with, next to where it was built
   * (as Go's STM keeps its reads in a readSet), never by its position in the request.
   */
  async namedTxn<S extends NamedOps, F extends NamedOps = Record<never, Op>>(
    compare: Compare[],
    success: S,
    failure?: F,
    options: { idempotent?: boolean } = {},
  ): Promise<NamedTxnResult<S, F>> {
    const res = await this.txn(compare, flatOps(success), flatOps(failure ?? {}), options)
    return named(res, res.succeeded ? success : (failure ?? {})) as NamedTxnResult<S, F>
  }

  /** One Txn of named reads and no compare (so it always runs): its results by name, at one revision. */
  async reads<S extends Record<string, RangeOp>>(ops: S): Promise<{ revision: bigint; results: NamedResults<S> }> {
    const res = await this.namedTxn([], ops)
    return { revision: res.revision, results: res.results as NamedResults<S> }
  }

  /** The keys of `keys` that exist, in the order given, read in one Txn (so at most 128, etcd's ops per Txn): a key gone is left out. */
  async getKeys(keys: readonly string[], options: { keysOnly?: boolean } = {}): Promise<KeyValue[]> {
    const batch = new Branch()
    const reads = keys.map((key) => batch.add({ kv: this.get(key, options) }))
    const res = await this.namedTxn([], batch.ops)
    return reads.map((read) => read(res.results).kv.kvs[0]).filter((kv): kv is KeyValue => kv !== undefined)
  }

  /** One Range RPC (sent a second time if the first failed in transit: reads are safe to repeat). */
  async range(key: string, options: RangeOptions = {}): Promise<RangeResult> {
    const request = this.rangeRequest(key, options)
    let res: IRangeResponse
    try {
      res = await this.client.kv.range(request).catch((err: Error) => {
        if (!resendable(err)) throw err
        return this.client.kv.range(request)
      })
    } catch (err) {
      throw toTypedError(err, `etcd range ${JSON.stringify(key)}`)
    }
    return this.rangeResult(res)
  }

  /** One DeleteRange RPC; returns how many keys went. */
  async del(key: string, options: { prefix?: boolean } = {}): Promise<bigint> {
    const full = this.full(key)
    try {
      const res = await this.client.kv.deleteRange({ key: full, range_end: options.prefix ? prefixEnd(full) : undefined })
      return BigInt(res.deleted)
    } catch (err) {
      throw toTypedError(err, `etcd delete ${JSON.stringify(key)}`)
    }
  }

  /** The relative form of a stored key. */
  relative(key: Buffer): string {
    return key.subarray(this.prefix.length).toString()
  }

  keyValue(kv: IKeyValue): KeyValue {
    return toKeyValue(kv, this.relative(kv.key))
  }

  private rangeRequest(key: string, o: RangeOptions): IRangeRequest {
    const full = this.full(key)
    const req: IRangeRequest = { key: full }
    if (o.end !== undefined) req.range_end = this.full(o.end)
    else if (o.endOfPrefix !== undefined) req.range_end = prefixEnd(this.full(o.endOfPrefix))
    else if (o.prefix) req.range_end = prefixEnd(full)
    if (o.sort) [req.sort_target, req.sort_order] = o.sort
    if (o.limit !== undefined) req.limit = o.limit
    if (o.revision !== undefined) req.revision = String(o.revision)
    if (o.maxCreateRevision !== undefined) req.max_create_revision = String(o.maxCreateRevision)
    if (o.maxModRevision !== undefined) req.max_mod_revision = String(o.maxModRevision)
    if (o.minModRevision !== undefined) req.min_mod_revision = String(o.minModRevision)
    if (o.minCreateRevision !== undefined) req.min_create_revision = String(o.minCreateRevision)
    if (o.serializable) req.serializable = true
    if (o.countOnly) req.count_only = true
    if (o.keysOnly) req.keys_only = true
    return req
  }

  private rangeResult(res: IRangeResponse): RangeResult {
    return {
      kvs: res.kvs.map((kv) => this.keyValue(kv)),
      more: res.more,
      count: BigInt(res.count),
      revision: BigInt(res.header.revision),
    }
  }

  private opResult(r: IResponseOp): OpResult {
    if (r.response_range) return { range: this.rangeResult(r.response_range) }
    if (r.response_delete_range) return { deleted: BigInt(r.response_delete_range.deleted) }
    if (r.response_txn) {
      const t = r.response_txn
      return {
        txn: { succeeded: t.succeeded, revision: BigInt(t.header?.revision ?? 0), results: t.responses.map((x) => this.opResult(x)) },
      }
    }
    return { put: true }
  }
}

const RESULTS = { '==': 'Equal', '!=': 'NotEqual', '<': 'Less', '>': 'Greater' } as const

/** The branches of each nested Txn built by {@link Keyspace.namedTxnOp}, to decode its result by the same names. */
const nestedBranches = new WeakMap<Op, { success: NamedOps; failure: NamedOps }>()

/** The ops of a named branch in the order they are sent: by name, a list of ops in its own order. */
function flatOps(ops: NamedOps): Op[] {
  return Object.values(ops).flatMap((op) => (op === undefined ? [] : Array.isArray(op) ? op : [op as Op]))
}

/** A Txn's results put under the names of `branch`, the branch that ran (the inverse of {@link flatOps}). */
function named(res: TxnResult, branch: NamedOps): { succeeded: boolean; revision: bigint; results: Record<string, unknown> } {
  let next = 0
  const take = (op: Op) => resultValue(op, res.results[next++])
  const results = Object.fromEntries(
    Object.entries(branch).map(([name, op]) => [name, op === undefined ? undefined : Array.isArray(op) ? op.map(take) : take(op as Op)]),
  )
  return { succeeded: res.succeeded, revision: res.revision, results }
}

/** The value a named Txn gives for one op's result: the read, the count deleted, the nested Txn (by name if built so), or `true` for a put. */
function resultValue(op: Op, r: OpResult): unknown {
  if (r.range) return r.range
  if (r.deleted !== undefined) return r.deleted
  if (r.txn) {
    const branches = nestedBranches.get(op)
    return branches ? named(r.txn, r.txn.succeeded ? branches.success : branches.failure) : r.txn
  }
  return true
}

/**
 * One branch of a Txn gathered from several places (a scan's windows and counts, one group of
 * ops per item of a batch): {@link add} puts a group of named ops in, under names no other group
 * of this branch has, and returns the decoder of that group's results — so each read is decoded
 * by the code that built it, whatever else the Txn holds and in whatever order.
 */
export class Branch {
  readonly ops: NamedOps = {}
  private groups = 0

  /** Adds `group`; the function returned picks its results, under its own names, out of the results of the Txn this branch ran in. */
  add<T extends NamedOps>(group: T): (results: Readonly<Record<string, unknown>>) => NamedResults<T> {
    const prefix = `${this.groups++}:`
    for (const [name, op] of Object.entries(group)) this.ops[prefix + name] = op
    return (results) => Object.fromEntries(Object.keys(group).map((name) => [name, results[prefix + name]])) as NamedResults<T>
  }
}

/** The lease ids of the puts of a Txn request (nested Txns included). */
function leasesOf(request: { success?: IRequestOp[]; failure?: IRequestOp[] }): Set<string> {
  const leases = new Set<string>()
  const visit = (ops: IRequestOp[] = []) => {
    for (const op of ops) {
      const lease = op.request_put?.lease
      if (lease !== undefined && String(lease) !== '0') leases.add(String(lease))
      if (op.request_txn) {
        visit(op.request_txn.success)
        visit(op.request_txn.failure)
      }
    }
  }
  visit(request.success)
  visit(request.failure)
  return leases
}

/** The {@link Keyspace} of a client (one per client object). */
export const keyspace: (client: Namespace) => Keyspace = perClient((client) => {
  closedSignal(client) // from now on a close() of this client is noticed by every wait
  return new Keyspace(client)
})

/** Checks a user-given name used as a key or key prefix; returns it. */
export function checkName(name: unknown, what: string): string {
  if (typeof name !== 'string') {
    throw new InvalidArgumentError(`${what} must be a non-empty string, got ${name === null ? 'null' : typeof name}`)
  }
  if (name.length === 0) throw new InvalidArgumentError(`${what} must be a non-empty string, got ""`)
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw new InvalidArgumentError(`${what} is ${Buffer.byteLength(name)} bytes; keep names under ${MAX_NAME_BYTES} bytes`)
  }
  return name
}

/** Checks a value to be stored; returns it as a Buffer. */
export function checkValue(value: unknown, what: string): Buffer {
  if (typeof value !== 'string' && !Buffer.isBuffer(value)) {
    throw new InvalidArgumentError(`${what} must be a string or Buffer, got ${value === null ? 'null' : typeof value}`)
  }
  const buf = Buffer.from(value)
  if (buf.length > MAX_VALUE_BYTES) {
    throw new ValueTooLargeError(
      buf.length,
      MAX_VALUE_BYTES,
      `${what} is ${buf.length} bytes; etcd accepts at most ~1.5 MiB per request (--max-request-bytes): store large payloads elsewhere and enqueue a reference`,
    )
  }
  return buf
}
