/**
 * A client for showing what a stale member's reads can and cannot decide: serializable reads
 * (the only member-local reads the toolkit makes; see docs/RELIABILITY.md) go to one client —
 * e.g. attached to a partitioned minority member — and everything else (linearizable reads,
 * compares, writes) to another, attached to the majority.
 */
import type { IRangeRequest, ITxnRequest } from 'etcd3'
import type { EtcdClient } from '../../lib/index.js'

const serializable = (r: IRangeRequest | undefined) => r?.serializable === true

/** A read-only Txn (no compares, no writes) whose every Range is serializable. */
function memberLocal(req: ITxnRequest): boolean {
  const ops = [...(req.success ?? []), ...(req.failure ?? [])]
  return (req.compare ?? []).length === 0 && ops.length > 0 && ops.every((op) => serializable(op.request_range))
}

/** `writes`, except that serializable reads are served by `reads`. */
export function routedClient(reads: EtcdClient, writes: EtcdClient): EtcdClient {
  const kv = new Proxy(writes.kv, {
    get(target, prop, receiver) {
      if (prop === 'txn')
        return (req: ITxnRequest, opts?: unknown) => (memberLocal(req) ? reads.kv.txn(req, opts as never) : target.txn(req, opts as never))
      if (prop === 'range')
        return (req: IRangeRequest, opts?: unknown) =>
          serializable(req) ? reads.kv.range(req, opts as never) : target.range(req, opts as never)
      return Reflect.get(target, prop, receiver)
    },
  })
  return new Proxy(writes, { get: (target, prop, receiver) => (prop === 'kv' ? kv : Reflect.get(target, prop, receiver)) })
}
