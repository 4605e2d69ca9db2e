import { queueKeys, unixNano } from './keys.js'
import type { KeyValue, Keyspace } from './kv.js'

/**
 * Claiming items and moving over-received ones to a dead-letter queue. A claim puts the item's
 * marker on the receiver's lease (hiding it from other receivers until the lease ends) and bumps
 * its receive counter, in a nested Txn per item so that one item taken by someone else does not
 * fail the others.
 */

/** One claimed item, before it becomes a message. */
export interface Claim {
  kv: KeyValue
  /** The revision of the claim Txn: the marker's mod revision while this claim holds. */
  claimRev: bigint
  /** The receive count, this claim included. */
  count: number
}

/** Items per claim Txn: N nested Txns of 3 ops stay under etcd's default --max-txn-ops of 128 (N + 3 <= 128). */
export const CLAIM_CHUNK = 100

/** Splits `list` into runs of at most `size`. */
export function chunked<T>(list: readonly T[], size: number): T[][] {
  const chunks: T[][] = []
  for (let i = 0; i < list.length; i += size) chunks.push(list.slice(i, i + size))
  return chunks
}

/**
 * One Txn claiming `kvs` (at most {@link CLAIM_CHUNK}): for each item still unchanged and
 * unclaimed, put its marker with the lease, bump its counter and read the counter back.
 * Returns the claims that succeeded and whether any item was lost to another receiver.
 */
export async function claimChunk(ks: Keyspace, kvs: KeyValue[], leaseId: string): Promise<{ claims: Claim[]; lostAny: boolean }> {
  const ops = kvs.map((kv) => {
    const marker = queueKeys.marker(kv.key, kv.createRevision)
    const counter = queueKeys.counter(kv.key, kv.createRevision)
    return ks.txnOp([ks.compare(kv.key, 'Mod', '==', kv.modRevision), ks.compare(marker, 'Create', '==', 0)], [ks.put(marker, '', leaseId), ks.put(counter), ks.get(counter)])
  })
  const res = await ks.txn([], ops)
  const claims: Claim[] = []
  kvs.forEach((kv, i) => {
    const sub = res.results[i].txn!
    if (sub.succeeded) claims.push({ kv, claimRev: res.revision, count: Number(sub.results[2].range!.kvs[0].version) })
  })
  return { claims, lostAny: claims.length < kvs.length }
}

/**
 * Moves a claimed item to `<dlq>/<unixNano>` (Go layout, same value) and drops its marker and
 * counter, in one Txn guarded by the claim still being ours. Returns quietly when the claim is
 * gone (whoever holds the item now deals with it).
 */
export async function deadLetter(ks: Keyspace, c: Claim, dlq: string): Promise<void> {
  const { kv } = c
  const marker = queueKeys.marker(kv.key, kv.createRevision)
  for (;;) {
    const target = `${queueKeys.items(dlq)}${unixNano()}`
    const res = await ks.txn(
      [ks.compare(marker, 'Mod', '==', c.claimRev), ks.compare(kv.key, 'Create', '==', kv.createRevision), ks.compare(target, 'Version', '==', 0)],
      [ks.delete(kv.key), ks.delete(marker), ks.delete(queueKeys.counter(kv.key, kv.createRevision)), ks.put(target, kv.value)],
      [ks.get(marker), ks.get(kv.key)],
    )
    if (res.succeeded) return
    // Our claim or the item is gone (whoever holds it now deals with it), unless only the target key clashed.
    const [marked, item] = [res.results[0].range!.kvs[0], res.results[1].range!.kvs[0]]
    if (marked?.modRevision !== c.claimRev || item?.createRevision !== kv.createRevision) return
  }
}
