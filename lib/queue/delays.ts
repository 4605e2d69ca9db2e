import type { Namespace } from 'etcd3'
import { grantLease } from '../core/leases.js'
import { SessionExpiredError } from '../errors.js'
import { queueKeys, unixNano } from '../core/keys.js'
import { chunked } from './moves.js'
import { Branch, type KeyValue, type Keyspace } from '../core/kv.js'
import { VALUES_PER_RESPONSE } from '../limits.js'
import { perClient } from '../core/per-client.js'
import { arrivalPart, type Arrival, type QueueRef } from './placement.js'
import { decodeEnvelope, encodeEnvelope, type ItemMeta } from './meta.js'

/**
 * Delayed messages. A delayed message waits outside the queue, in `__delayed/<name>/<due>`, so
 * no consumer — ours or Go's `Dequeue`, which only sees `<name>/` — can take it early. Its timer
 * `__timers/<name>/<due>` is put on a lease of at least the delay (whole seconds): it is due
 * once etcd has expired that lease, by the etcd leader's clock, never by comparing the clocks of
 * two functions. A receiver that sees a delayed message without its timer moves it into the
 * queue in one Txn (as if enqueued then). `<due>` is the producer's clock plus the delay: it
 * only says where a scan looks first (scan.ts): a message whose producer's clock is off
 * is found by the counts of delayed messages against timers, and holds none back.
 *
 * Timer leases are shared: a producer reuses a lease it granted recently when that lease has
 * certainly at least the delay left and less than a second more, so a burst of delayed
 * messages costs a few leases, not one each. "Certainly left" is the TTL minus the time since
 * the grant was sent, by whichever of the monotonic and the wall clock says more time passed
 * (a frozen function's monotonic clock may stand still while the server's lease runs down).
 */

/** Delayed messages (and timers) one read of a scan looks at. */
export const DUE_WINDOW = 64

/**
 * Seconds of a new timer lease for a delay in ms: the delay rounded up to whole seconds (1500 →
 * 2, 1000 → 1), so the message is due less than a second after its delay (plus etcd's 0.5 s
 * expiry tick). What the lease has beyond the delay is the window in which the producer's next
 * delayed messages can share it: none for a delay of whole seconds, which takes a lease per
 * message rather than a second's lateness.
 */
export function timerTtl(delayMs: number): number {
  return Math.max(1, Math.ceil(delayMs / 1000))
}

/** A timer lease this process granted: its id (once granted) and when the grant was sent. */
interface TimerLease {
  id: Promise<string>
  ttl: number
  sentAt: number
  sentAtWall: number
}

/** Recently granted timer leases, per client. */
const timerLeasesOf = perClient((): TimerLease[] => [])

/** Ms a timer lease certainly has left (0 once it may have expired). */
function certainlyLeft(l: TimerLease): number {
  const elapsed = Math.max(performance.now() - l.sentAt, Date.now() - l.sentAtWall)
  return Math.max(0, l.ttl * 1000 - elapsed)
}

/** A lease that expires no sooner than `delayMs` from now and, unless etcd is slow, within a second after. */
function timerLease(client: Namespace, delayMs: number): TimerLease {
  const list = timerLeasesOf(client)
  // Forget the ones that may have expired; none is ever revoked (others may share it): they expire.
  list.splice(0, list.length, ...list.filter((l) => certainlyLeft(l) > 0))
  const fit = list.find((l) => certainlyLeft(l) >= delayMs && certainlyLeft(l) < delayMs + 1000)
  if (fit) return fit
  const ttl = timerTtl(delayMs)
  const lease: TimerLease = { id: grantLease(client, ttl), ttl, sentAt: performance.now(), sentAtWall: Date.now() }
  lease.id.catch(() => {
    const i = list.indexOf(lease)
    if (i >= 0) list.splice(i, 1)
  })
  list.push(lease)
  return lease
}

/**
 * Writes a delayed message: its envelope and timer in one create-only Txn (retrying on a key
 * clash), the timer on a (shared) lease of at least the delay. Returns its key and the Txn's
 * revision (the message id).
 */
export async function putDelayed(
  client: Namespace,
  ks: Keyspace,
  name: string,
  arrival: Arrival,
  delayMs: number,
): Promise<{ key: string; revision: bigint }> {
  for (;;) {
    const lease = timerLease(client, delayMs)
    const leaseId = await lease.id
    const due = (BigInt(unixNano()) + BigInt(delayMs) * 1_000_000n).toString().padStart(19, '0')
    const key = `${queueKeys.delayed(name)}${due}`
    const timer = queueKeys.timerOf(name, key)
    try {
      const res = await ks.txn(
        [ks.compare(key, 'Version', '==', 0), ks.compare(timer, 'Version', '==', 0)],
        [ks.put(key, encodeEnvelope(arrival.meta, arrival.payload)), ks.put(timer, '', leaseId)],
      )
      if (res.succeeded) return { key, revision: res.revision }
    } catch (err) {
      // The lease is gone (expired early by a slow round trip, or revoked): nothing was written.
      if (!(err instanceof SessionExpiredError)) throw err
      lease.ttl = 0
    }
  }
}

/**
 * The suffix of `__delayed/<name>/` that ends the region a scan reads first: now + 1 s by this
 * process's wall clock, as producers key their messages (a message keyed later is not due
 * unless its producer's clock runs ahead). Only where to look first: what is due is told by
 * the timers.
 */
export function dueEnd(): string {
  return ((BigInt(Date.now()) + 1000n) * 1_000_000n).toString().padStart(19, '0')
}

/** Due messages moved in by one Txn (nested Txns of 3 ops: N + 3 <= etcd's default --max-txn-ops of 128). */
const PROMOTE_CHUNK = 64

/** Payload bytes one promoting Txn writes at most: with the keys and metadata, within etcd's 1.5 MiB request limit. */
const PROMOTE_BYTES = 1_000_000

/**
 * Moves due delayed messages into the queue, each guarded by it still being there and its
 * timer still being gone (another receiver may have moved it first: then nothing happens).
 * Plain FIFO messages go many per Txn, each in its own nested Txn; a grouped or prioritised one
 * alone (its group head or priority bucket must not be written twice in one Txn).
 */
export async function promoteAll(q: QueueRef, due: KeyValue[]): Promise<void> {
  // The scan read keys only: read the envelopes now, as many per Txn as surely fit an answer.
  const found = (await Promise.all(chunked(due, VALUES_PER_RESPONSE).map((c) => q.ks.getKeys(c.map((kv) => kv.key))))).flat()
  const decoded = found.map((kv) => ({ kv, ...decodeEnvelope(kv.value) }))
  const plain = decoded.filter((d) => d.meta.group === undefined && d.meta.priority === undefined)
  const single = decoded.filter((d) => !plain.includes(d))
  // Each Txn writes the payloads it moves: keep the request within etcd's limit.
  let chunk: typeof plain = []
  let bytes = 0
  for (const d of plain) {
    if (chunk.length > 0 && (chunk.length >= PROMOTE_CHUNK || bytes + d.kv.value.length > PROMOTE_BYTES)) {
      await promoteChunk(q, chunk)
      ;[chunk, bytes] = [[], 0]
    }
    chunk.push(d)
    bytes += d.kv.value.length
  }
  if (chunk.length > 0) await promoteChunk(q, chunk)
  for (const d of single) await promote(q, d.kv)
}

async function promoteChunk(q: QueueRef, chunk: { kv: KeyValue; meta: ItemMeta; payload: Buffer }[]): Promise<void> {
  const { ks, name } = q
  const parts = await Promise.all(
    chunk.map(async ({ kv, meta, payload }) => ({
      kv,
      part: await arrivalPart(q, { payload, meta: { ...meta, id: meta.id ?? kv.createRevision.toString() } }),
    })),
  )
  const batch = new Branch()
  const moves = parts.map(({ kv, part }) => {
    const move = ks.namedTxnOp(
      [...guard(ks, name, kv), ...part.compares],
      { take: ks.deleteOp(kv.key), arrival: part.ops },
      { delayed: ks.get(kv.key, { keysOnly: true }) },
    )
    return { kv, move: batch.add({ move }) }
  })
  const res = await ks.namedTxn([], batch.ops)
  // A nested Txn that failed was mostly moved by another receiver first (its key is gone);
  // otherwise its key slot clashed: the one-by-one path sorts those out.
  const clashed = moves.filter(({ kv, move }) => {
    const outcome = move(res.results).move
    return !outcome.succeeded && outcome.results.delayed.kvs[0]?.modRevision === kv.modRevision
  })
  for (const { kv } of clashed) await promote(q, kv)
}

function guard(ks: Keyspace, name: string, delayed: KeyValue) {
  return [ks.compare(delayed.key, 'Mod', '==', delayed.modRevision), ks.compare(queueKeys.timerOf(name, delayed.key), 'Version', '==', 0)]
}

/** Moves one due delayed message into the queue; returns quietly when another receiver moved it first. */
async function promote(q: QueueRef, delayed: KeyValue): Promise<void> {
  const { ks, name } = q
  const { meta, payload } = decodeEnvelope(delayed.value)
  const arrival: Arrival = { payload, meta: { ...meta, id: meta.id ?? delayed.createRevision.toString() } }
  const timer = queueKeys.timerOf(name, delayed.key)
  for (;;) {
    const part = await arrivalPart(q, arrival)
    const res = await ks.namedTxn(
      [...guard(ks, name, delayed), ...part.compares],
      { take: ks.deleteOp(delayed.key), arrival: part.ops },
      { delayed: ks.get(delayed.key, { keysOnly: true }), timer: ks.get(timer, { keysOnly: true }) },
    )
    if (res.succeeded) return
    // Moved by another receiver (or purged), or not due after all: nothing to do. Else a key clashed: again.
    const [now, timerNow] = [res.results.delayed.kvs[0], res.results.timer.kvs[0]]
    if (now === undefined || now.modRevision !== delayed.modRevision || timerNow !== undefined) return
  }
}
