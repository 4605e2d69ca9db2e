import { ClaimLostError, InvalidArgumentError } from '../errors.js'
import { groupOfSegment, groupSegment, queueKeys } from '../core/keys.js'
import type { Compare, Keyspace, NamedResults, RangeOp } from '../core/kv.js'

/**
 * Receipts: what identifies one claim of one message, so that `ack`/`nack` work in any process
 * (a dispatcher claims, a function settles). Format:
 * `<itemCreateRev>.<claimRev>.<leaseId>.<receiveCount>.<group>.<itemKey>` (`<group>` as a key
 * segment, empty for none). The receive count sets a nack's retry delay; the group names whose
 * turn an ack passes on. The older form `<itemCreateRev>.<claimRev>.<leaseId>.<itemKey>` is
 * still accepted (receive count unknown: taken as 1; no group).
 */

/** A parsed receipt. */
export interface Receipt {
  key: string
  createRev: bigint
  claimRev: bigint
  leaseId: string
  /** The receive count of this claim (1 when an older receipt did not say). */
  count: number
  /** The message group, if any. */
  group?: string
}

/** The receipt string of a claim. */
export function formatReceipt(r: Receipt): string {
  return `${r.createRev}.${r.claimRev}.${r.leaseId}.${r.count}.${r.group === undefined ? '' : groupSegment(r.group)}.${r.key}`
}

const CURRENT = /^([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)\.([^./]*)\.(.+)$/s
const OLDER = /^([0-9]+)\.([0-9]+)\.([0-9]+)\.(.+)$/s

/** A message's or receipt string's claim, checked to belong to the queue whose items live under `itemsPrefix`. */
export function parseReceipt(message: { receipt?: unknown } | string, itemsPrefix: string, queueName: string): Receipt {
  const text = typeof message === 'string' ? message : message?.receipt
  const r = typeof text === 'string' ? parse(text, itemsPrefix) : undefined
  if (!r) throw new InvalidArgumentError(`expected a message from receive() or its receipt string, got ${JSON.stringify(text)}`)
  if (!r.key.startsWith(itemsPrefix)) {
    throw new InvalidArgumentError(
      `receipt for ${JSON.stringify(r.key)} does not belong to queue ${JSON.stringify(queueName)}; settle it on the queue it was received from`,
    )
  }
  return r
}

function parse(text: string, itemsPrefix: string): Receipt | undefined {
  const m = CURRENT.exec(text)
  const o = OLDER.exec(text)
  const current = m ? fromCurrent(m) : undefined
  const older = o ? { createRev: BigInt(o[1]), claimRev: BigInt(o[2]), leaseId: o[3], count: 1, key: o[4] } : undefined
  // A key may contain dots: take the reading whose key belongs to this queue, the current one first.
  if (current?.key.startsWith(itemsPrefix)) return current
  if (older?.key.startsWith(itemsPrefix)) return older
  return current ?? older
}

function fromCurrent(m: RegExpExecArray): Receipt | undefined {
  let group: string | undefined
  try {
    group = m[5] === '' ? undefined : groupOfSegment(m[5])
  } catch {
    return undefined // not a segment we wrote
  }
  return { createRev: BigInt(m[1]), claimRev: BigInt(m[2]), leaseId: m[3], count: Number(m[4]), group, key: m[6] }
}

/** The claim marker of a receipt's item. */
export function receiptMarker(r: Receipt): string {
  return queueKeys.marker(r.key, r.createRev)
}

/** The compares that hold while a receipt's claim is current and its item still queued. */
export function ownClaim(ks: Keyspace, r: Receipt): Compare[] {
  return [ks.compare(receiptMarker(r), 'Mod', '==', r.claimRev), ks.compare(r.key, 'Create', '==', r.createRev)]
}

/** The else-branch reads of {@link claimState}: the item and its claim marker. */
export type ClaimStateReads = { item: RangeOp; marker: RangeOp }

/** Else-branch reads that explain a failed {@link ownClaim} (see {@link claimLost}): keys only, an ack of many answers with no value. */
export function claimState(ks: Keyspace, r: Receipt): ClaimStateReads {
  return { item: ks.get(r.key, { keysOnly: true }), marker: ks.get(receiptMarker(r), { keysOnly: true }) }
}

/** The error for an `op` whose {@link ownClaim} failed, from what the {@link claimState} reads found. */
export function claimLost(op: string, r: Receipt, found: NamedResults<ClaimStateReads>, queueName: string): ClaimLostError {
  const item = found.item.kvs[0]
  const marker = found.marker.kvs[0]
  const what = `${op} of ${JSON.stringify(r.key)} in queue ${JSON.stringify(queueName)} did nothing`
  if (item === undefined || item.createRevision !== r.createRev) {
    return new ClaimLostError(
      'gone',
      `${what}: the message is no longer queued (already acked, dequeued, or moved to the dead-letter queue)`,
    )
  }
  if (marker !== undefined) {
    return new ClaimLostError(
      'reclaimed',
      `${what}: its claim expired and another receiver (or a delayed nack) holds it now; it may be processed twice — raise visibilityTimeout or settle sooner`,
    )
  }
  return new ClaimLostError(
    'expired',
    `${what}: its claim expired after the visibility timeout and it is visible again; it will be delivered again — raise visibilityTimeout or settle sooner`,
  )
}
