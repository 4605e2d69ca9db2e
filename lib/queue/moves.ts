import { type ClaimLostError, QueueConflictError } from '../errors.js'
import { queueKeys, uniqueSlot } from '../core/keys.js'
import { Branch, type DeleteOp, type KeyValue, type Keyspace } from '../core/kv.js'
import { VALUES_PER_RESPONSE } from '../limits.js'
import { handOnPart, retryStale, type QueueRef, type TxnPart } from './placement.js'
import { metaOps, readMeta, traceOf, type ItemMeta } from './meta.js'
import { claimLost, claimState, ownClaim, type Receipt } from './receipts.js'

/**
 * Claiming items, and items leaving the queue. A claim puts the item's marker on the receiver's
 * lease (hiding it from other receivers until the lease ends), bumps its receive counter and
 * reads its metadata, in a nested Txn per item so that one item taken by someone else does not
 * fail the others. An item leaves (ack, dead-letter, dequeue) with its marker, counter and
 * metadata, and hands its group's turn on, in one Txn.
 */

/** One claimed item, before it becomes a message. */
export interface Claim {
  /** The item, value included. */
  kv: KeyValue
  /** The revision of the claim Txn: the marker's mod revision while this claim holds. */
  claimRev: bigint
  /** The receive count, this claim included. */
  count: number
  meta: ItemMeta
}

/**
 * Items per claim Txn: it reads their values, so as many as surely fit one answer (10 values of
 * etcd's largest, 1.5 MiB; a larger batch claims in parallel Txns).
 */
export const CLAIM_CHUNK = VALUES_PER_RESPONSE

/** Receipts per ack Txn: N nested Txns of 4 ops stay under etcd's default --max-txn-ops of 128; their answers carry no value. */
export const ACK_CHUNK = 100

/** Attempts of a Txn whose parts can go stale (a key slot clashed, a group moved on) before giving up. */
const STALE_TRIES = 16

/** Splits `list` into runs of at most `size`. */
export function chunked<T>(list: readonly T[], size: number): T[][] {
  const chunks: T[][] = []
  for (let i = 0; i < list.length; i += size) chunks.push(list.slice(i, i + size))
  return chunks
}

/**
 * One Txn claiming `kvs` (keys and revisions, at most {@link CLAIM_CHUNK}): for each item still
 * unchanged and unclaimed, put its marker with the lease, bump its counter and read back the
 * counter (its version is the receive count), the item's metadata and the item itself — the
 * only read of a value a receive makes. Returns the claims that succeeded and whether any item
 * was lost to another receiver.
 */
export async function claimChunk(ks: Keyspace, kvs: KeyValue[], leaseId: string): Promise<{ claims: Claim[]; lostAny: boolean }> {
  const batch = new Branch()
  const attempts = kvs.map((kv) => {
    const marker = queueKeys.marker(kv.key, kv.createRevision)
    const counter = queueKeys.counter(kv.key, kv.createRevision)
    const claim = ks.namedTxnOp([ks.compare(kv.key, 'Mod', '==', kv.modRevision), ks.compare(marker, 'Create', '==', 0)], {
      claim: [ks.put(marker, '', leaseId), ks.put(counter)],
      // Read after its put (a Txn's ops run in order): its version counts this receive too.
      counter: ks.get(counter, { keysOnly: true }),
      meta: ks.get(queueKeys.meta(kv.key)),
      item: ks.get(kv.key),
    })
    return batch.add({ claim })
  })
  const res = await ks.namedTxn([], batch.ops)
  const claims: Claim[] = []
  for (const attempt of attempts) {
    const { claim } = attempt(res.results)
    if (!claim.succeeded) continue
    const { item, counter, meta } = claim.results
    const kv = item.kvs[0]
    claims.push({ kv, claimRev: res.revision, count: Number(counter.kvs[0].version), meta: readMeta(meta.kvs[0], kv) })
  }
  return { claims, lostAny: claims.length < kvs.length }
}

/** What an item leaving the queue deletes besides itself: its claim marker, receive counter and metadata. */
export function leaveOps(ks: Keyspace, key: string, createRevision: bigint): DeleteOp[] {
  return [
    ks.deleteOp(key),
    ks.deleteOp(queueKeys.marker(key, createRevision)),
    ks.deleteOp(queueKeys.counter(key, createRevision)),
    ks.deleteOp(queueKeys.meta(key)),
  ]
}

/** The hand-on part for an item leaving (nothing for an ungrouped one). */
function handOnFor(q: QueueRef, group: string | undefined, createRevision: bigint): Promise<TxnPart> {
  return group === undefined ? Promise.resolve({ compares: [], ops: [] }) : handOnPart(q, group, createRevision)
}

function stale(op: string, key: string, q: QueueRef): QueueConflictError {
  return new QueueConflictError(
    `${op} of ${JSON.stringify(key)} in queue ${JSON.stringify(q.name)} kept conflicting with other writers of its message group ${STALE_TRIES} times; retry it`,
  )
}

/** Removes a claimed item (an ack) and passes its group's turn on; the {@link ClaimLostError} when the claim is not `r`'s. */
export function leave(q: QueueRef, r: Receipt): Promise<ClaimLostError | undefined> {
  const { ks } = q
  return retryStale<ClaimLostError | undefined>(
    STALE_TRIES,
    async () => {
      const handOn = await handOnFor(q, r.group, r.createRev)
      const res = await ks.namedTxn(
        [...ownClaim(ks, r), ...handOn.compares],
        { leave: leaveOps(ks, r.key, r.createRev), handOn: handOn.ops },
        claimState(ks, r),
      )
      if (res.succeeded) return { done: true, value: undefined }
      const { item, marker } = res.results
      // The claim holds, so only the hand-on went stale (a producer joined the group): again.
      if (item.kvs[0]?.createRevision === r.createRev && marker.kvs[0]?.modRevision === r.claimRev) return { done: false }
      return { done: true, value: claimLost('ack', r, res.results, q.name) }
    },
    () => stale('ack', r.key, q),
  )
}

/**
 * Deletes a visible item (Go's Dequeue, plus our keys) if still unclaimed and unchanged, and
 * returns its value (read in the same Txn: `kv` has keys and revisions only). A plain item goes
 * in one Txn; one with metadata (grouped, moved) reads it first to pass its group's turn on.
 * Undefined when another consumer got it first.
 */
export async function take(q: QueueRef, kv: KeyValue): Promise<Buffer | undefined> {
  const { ks } = q
  const marker = queueKeys.marker(kv.key, kv.createRevision)
  const unclaimed = [ks.compare(kv.key, 'Mod', '==', kv.modRevision), ks.compare(marker, 'Create', '==', 0)]
  const meta = queueKeys.meta(kv.key)
  // The value is read before the deletes of the same Txn (its ops run in order): it goes first.
  const res = await ks.namedTxn(
    [...unclaimed, ks.compare(meta, 'Version', '==', 0)],
    { value: ks.get(kv.key), leave: leaveOps(ks, kv.key, kv.createRevision) },
    { meta: ks.get(meta) },
  )
  if (res.succeeded) return res.results.value.kvs[0].value
  const { group } = readMeta(res.results.meta.kvs[0], kv)
  return retryStale<Buffer | undefined>(
    STALE_TRIES,
    async () => {
      const handOn = await handOnFor(q, group, kv.createRevision)
      const again = await ks.namedTxn(
        [...unclaimed, ...handOn.compares],
        { value: ks.get(kv.key), leave: leaveOps(ks, kv.key, kv.createRevision), handOn: handOn.ops },
        { item: ks.get(kv.key, { keysOnly: true }), marker: ks.get(marker, { keysOnly: true }) },
      )
      if (again.succeeded) return { done: true, value: again.results.value.kvs[0].value }
      const [now, claimed] = [again.results.item.kvs[0], again.results.marker.kvs[0]]
      return now?.modRevision !== kv.modRevision || claimed !== undefined ? { done: true, value: undefined } : { done: false }
    },
    () => stale('dequeue', kv.key, q),
  )
}

/**
 * Moves a claimed item to the dead-letter queue `<dlq>/<unixNano>` (Go layout, same value; its
 * id, group and priority in the dead letter's metadata, for a redrive) and hands its group's turn on, in
 * one Txn guarded by the claim still being `r`'s. Resolves false, changing nothing, when the
 * claim is no longer `r`'s (whoever holds the item now deals with it).
 */
export async function deadLetter(q: QueueRef, r: Receipt, dlq: string, priority: number | undefined): Promise<boolean> {
  const { ks, name } = q
  const read = await ks.reads({ item: ks.get(r.key), meta: ks.get(queueKeys.meta(r.key)) })
  const item = read.results.item.kvs[0]
  if (item === undefined || item.createRevision !== r.createRev) return false
  const meta = readMeta(read.results.meta.kvs[0], item)
  const id = meta.id ?? item.createRevision.toString()
  return retryStale<boolean>(
    STALE_TRIES,
    async () => {
      const handOn = await handOnFor(q, meta.group, r.createRev)
      const target = uniqueSlot(ks, queueKeys.items(dlq))
      const res = await ks.namedTxn(
        [...ownClaim(ks, r), ...handOn.compares, ...target.compares],
        {
          leave: leaveOps(ks, r.key, r.createRev),
          deadLetter: [...target.ops(item.value), ...metaOps(ks, target.key, { id, group: meta.group, priority, ...traceOf(meta) })],
          handOn: handOn.ops,
        },
        claimState(ks, r),
      )
      if (res.succeeded) return { done: true, value: true }
      const [marker, now] = [res.results.marker.kvs[0], res.results.item.kvs[0]]
      if (marker?.modRevision !== r.claimRev || now?.createRevision !== r.createRev) return { done: true, value: false }
      return { done: false }
    },
    () =>
      new QueueConflictError(
        `moving ${JSON.stringify(r.key)} of queue ${JSON.stringify(name)} to dead-letter queue ${JSON.stringify(dlq)} kept conflicting with other writers; it stays claimed until its visibility timeout and is retried then`,
      ),
  )
}
