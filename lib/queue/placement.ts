import { queueKeys, sequentialSlot, uniqueSlot, type KeySlot } from '../core/keys.js'
import type { Compare, Keyspace, Op } from '../core/kv.js'
import { decodeEnvelope, encodeEnvelope, metaOps, traceOf, type ItemMeta } from './meta.js'

/**
 * Where a message lands when it enters a queue (enqueued, due after its delay, redriven, or its
 * group's turn came), written as compares + ops for the caller's own Txn, so that moving a
 * message is one atomic Txn: it is never lost and never doubled.
 *
 * Message groups (Queue only): at most one message of a group is under `<name>/` at a time —
 * its head, marked by `__group-heads/<name>/<group>` (written in the Txn that wrote the item, so
 * its mod revision is the item's create revision). The others wait, in create-revision order,
 * under `__groups/<name>/<group>/`. When the head leaves the queue (acked, dead-lettered,
 * dequeued) the same Txn moves the first waiting message in, or deletes the head marker.
 */

/** A message entering the queue. */
export interface Arrival {
  payload: Buffer
  meta: ItemMeta
}

/** Compares and ops of one Txn. */
export interface TxnPart {
  compares: Compare[]
  ops: Op[]
}

/** How a queue keys its items: a fresh unique key (Queue) or the next sequence of a priority bucket (PriorityQueue). */
export type ItemSlot = (ks: Keyspace, name: string, priority: number | undefined) => Promise<KeySlot>

/** What moving messages in and out of a queue needs to know of it. */
export interface QueueRef {
  ks: Keyspace
  name: string
  slotOf: ItemSlot
}

/** Queue items: `<name>/<unixNano>`. */
export const uniqueItemSlot: ItemSlot = async (ks, name) => uniqueSlot(ks, queueKeys.items(name))

/** PriorityQueue items: `<name>/<%05d priority>/<%016d seq>`. */
export const sequentialItemSlot: ItemSlot = (ks, name, priority) => sequentialSlot(ks, queueKeys.bucket(name, priority ?? 0))

/**
 * The Txn part that puts `arrival` into queue `name`: the item (with its metadata) — or, for a
 * grouped message whose group already has a head, a place in the group's waiting list (a nested
 * Txn picks the branch, so a concurrent hand-on cannot slip between). `where` is the key written
 * when ungrouped or when the group was free, `waiting` the waiting-list key otherwise.
 */
export async function arrivalPart(q: QueueRef, arrival: Arrival): Promise<TxnPart & { where: string; waiting?: string }> {
  const { ks, name, slotOf } = q
  const slot = await slotOf(ks, name, arrival.meta.priority)
  const { group } = arrival.meta
  const itemMeta = { id: arrival.meta.id, group, ...traceOf(arrival.meta) }
  const itemOps = [...slot.ops(arrival.payload), ...metaOps(ks, slot.key, itemMeta)]
  if (group === undefined) return { compares: slot.compares, ops: itemOps, where: slot.key }
  const head = queueKeys.groupHead(name, group)
  const wait = uniqueSlot(ks, queueKeys.groupWaiting(name, group))
  const envelope = encodeEnvelope(
    { ...(arrival.meta.id === undefined ? {} : { id: arrival.meta.id }), ...traceOf(arrival.meta) },
    arrival.payload,
  )
  const choose = ks.txnOp([ks.compare(head, 'Version', '==', 0)], [...itemOps, ks.put(head, slot.key)], wait.ops(envelope))
  return { compares: [...slot.compares, ...wait.compares], ops: [choose], where: slot.key, waiting: wait.key }
}

/**
 * The Txn part that passes group `group`'s turn on when its head item (created at
 * `headCreateRevision`) leaves the queue: the first waiting message becomes the head, or the
 * group is freed. Nothing (but a compare that the head marker is unchanged) when the item is
 * not the group's head. The caller retries with a fresh part when its Txn fails on these compares.
 */
export async function handOnPart(q: QueueRef, group: string, headCreateRevision: bigint): Promise<TxnPart> {
  const { ks, name, slotOf } = q
  const head = queueKeys.groupHead(name, group)
  const waitingPrefix = queueKeys.groupWaiting(name, group)
  const seen = await ks.reads({ head: ks.get(head), next: ks.get(waitingPrefix, { prefix: true, sort: ['Create', 'Ascend'], limit: 1 }) })
  const marker = seen.results.head.kvs[0]
  if (marker === undefined) return { compares: [ks.compare(head, 'Version', '==', 0)], ops: [] }
  if (marker.modRevision !== headCreateRevision) return { compares: [ks.compare(head, 'Mod', '==', marker.modRevision)], ops: [] }
  const owns = ks.compare(head, 'Mod', '==', headCreateRevision)
  const next = seen.results.next.kvs[0]
  if (next === undefined)
    return { compares: [owns, ks.compare(waitingPrefix, 'Version', '==', 0, { prefix: true })], ops: [ks.deleteOp(head)] }
  const { meta, payload } = decodeEnvelope(next.value)
  const slot = await slotOf(ks, name, undefined)
  const id = meta.id ?? next.createRevision.toString()
  return {
    compares: [owns, ks.compare(next.key, 'Mod', '==', next.modRevision), ...slot.compares],
    ops: [ks.deleteOp(next.key), ...slot.ops(payload), ...metaOps(ks, slot.key, { id, group, ...traceOf(meta) }), ks.put(head, slot.key)],
  }
}

/** Runs `attempt` until it reports done, at most `tries` times (a part went stale: a slot clashed, a group moved on). */
export async function retryStale<T>(
  tries: number,
  attempt: () => Promise<{ done: true; value: T } | { done: false }>,
  stale: () => Error,
): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const outcome = await attempt()
    if (outcome.done) return outcome.value
  }
  throw stale()
}
