import { InvalidArgumentError } from '../errors.js'
import { queueKeys } from '../core/keys.js'
import type { KeyValue, Keyspace, Op } from '../core/kv.js'
import { MAX_GROUP_BYTES } from '../limits.js'

/**
 * What a message carries besides its payload. Items under `<name>/` keep Go's layout (the
 * value is the bare payload), so their extras live beside them in `__meta/<itemKey>`; messages
 * waiting outside the queue (delayed, or behind their group's head) carry them in an envelope.
 */

/** The extras of one message. */
export interface ItemMeta {
  /** The message id when it is not the item's create revision (the message was moved: delayed, grouped, redriven). */
  id?: string
  /** Its message group (Queue only). */
  group?: string
  /** Its priority (PriorityQueue: while the message waits outside its bucket, or as a dead letter). */
  priority?: number
  /**
   * The W3C trace context of the enqueue's `send` span (lib/telemetry/messaging.ts), when a tracer
   * was registered: here, beside the item, never in its value, which Go consumers read.
   */
  traceparent?: string
  tracestate?: string
}

/** The trace context fields of `meta` (none when it has none), to carry along when a message moves. */
export function traceOf(meta: ItemMeta): Pick<ItemMeta, 'traceparent' | 'tracestate'> {
  if (meta.traceparent === undefined) return {}
  return meta.tracestate === undefined ? { traceparent: meta.traceparent } : { traceparent: meta.traceparent, tracestate: meta.tracestate }
}

/** Puts the metadata of an item written in the same Txn (nothing when there is none). */
export function metaOps(ks: Keyspace, itemKey: string, meta: ItemMeta): Op[] {
  const { id, group, priority, traceparent, tracestate } = meta
  if (id === undefined && group === undefined && priority === undefined && traceparent === undefined) return []
  return [ks.put(queueKeys.meta(itemKey), JSON.stringify({ id, group, priority, traceparent, tracestate }))]
}

/**
 * The metadata of `item` from its `__meta` key as read (undefined if none): only valid when
 * written in the item's own Txn, so one left over from an earlier item of the same key (a
 * PriorityQueue sequence reused after a Go Dequeue) is ignored.
 */
export function readMeta(stored: KeyValue | undefined, item: { createRevision: bigint }): ItemMeta {
  if (stored === undefined || stored.modRevision !== item.createRevision) return {}
  try {
    const parsed = JSON.parse(stored.value.toString()) as ItemMeta
    const meta: ItemMeta = {}
    if (typeof parsed.id === 'string') meta.id = parsed.id
    if (typeof parsed.group === 'string') meta.group = parsed.group
    if (Number.isInteger(parsed.priority)) meta.priority = parsed.priority
    if (typeof parsed.traceparent === 'string') meta.traceparent = parsed.traceparent
    if (typeof parsed.tracestate === 'string') meta.tracestate = parsed.tracestate
    return meta
  } catch {
    return {}
  }
}

/** A waiting message's value: one line of JSON extras, then the payload bytes. */
export function encodeEnvelope(meta: ItemMeta, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${JSON.stringify(meta)}\n`), payload])
}

/** The extras and payload of an envelope ({@link encodeEnvelope}); a value that is none is all payload. */
export function decodeEnvelope(value: Buffer): { meta: ItemMeta; payload: Buffer } {
  const end = value.indexOf(0x0a)
  if (end < 0 || value[0] !== 0x7b) return { meta: {}, payload: value }
  try {
    const meta = JSON.parse(value.subarray(0, end).toString()) as ItemMeta
    return { meta, payload: value.subarray(end + 1) }
  } catch {
    return { meta: {}, payload: value }
  }
}

/** Checks a message group name. */
export function checkGroup(group: unknown, what: string): string {
  if (typeof group !== 'string' || group === '')
    throw new InvalidArgumentError(
      `${what}: group must be a non-empty string (the message group, e.g. a customer id), got ${group === null ? 'null' : typeof group === 'string' ? '""' : typeof group}`,
    )
  if (Buffer.byteLength(group) > MAX_GROUP_BYTES)
    throw new InvalidArgumentError(
      `${what}: group is ${Buffer.byteLength(group)} bytes; keep group names to ${MAX_GROUP_BYTES} bytes (hash longer ones)`,
    )
  if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(group))
    throw new InvalidArgumentError(`${what}: group contains a lone UTF-16 surrogate; use well-formed text`)
  return group
}
