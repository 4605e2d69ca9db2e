import type { Namespace } from 'etcd3'
import { grantLease, revokeLease } from './claim-leases.js'
import { SessionExpiredError } from './errors.js'
import { queueKeys, unixNano } from './keys.js'
import type { KeyValue, Keyspace, Op, TxnResult } from './kv.js'
import { arrivalPart, type Arrival, type QueueRef } from './placement.js'
import { decodeEnvelope, encodeEnvelope } from './queue-meta.js'

/**
 * Delayed messages. A delayed message waits outside the queue, in `__delayed/<name>/<due>`, so
 * no consumer — ours or Go's `Dequeue`, which only sees `<name>/` — can take it early. Its timer
 * `__timers/<name>/<due>` is put on a lease whose TTL is the delay, rounded up to whole seconds:
 * it is due once etcd has expired that lease, by the etcd leader's clock, never by comparing the
 * clocks of two functions. A receiver that sees a delayed message without its timer moves it
 * into the queue in one Txn (as if enqueued then). `<due>` is the producer's clock plus the
 * delay: it only orders the delayed messages, so that a scan looks at the soonest first.
 */

/** Delayed messages (and timers) one scan looks at. */
export const DUE_WINDOW = 64

/** Seconds of the timer lease of a delay in ms: rounded up, at least 1. */
export function timerTtl(delayMs: number): number {
  return Math.max(1, Math.ceil(delayMs / 1000))
}

/**
 * Writes a delayed message: grants its timer lease, then puts the envelope and the timer in one
 * create-only Txn (retrying on a key clash). Returns its key and the Txn's revision (the message id).
 */
export async function putDelayed(client: Namespace, ks: Keyspace, name: string, arrival: Arrival, delayMs: number): Promise<{ key: string; revision: bigint }> {
  const lease = await grantLease(client, timerTtl(delayMs))
  try {
    for (;;) {
      const due = (BigInt(unixNano()) + BigInt(delayMs) * 1_000_000n).toString().padStart(19, '0')
      const key = `${queueKeys.delayed(name)}${due}`
      const timer = queueKeys.timerOf(name, key)
      const res = await ks.txn(
        [ks.compare(key, 'Version', '==', 0), ks.compare(timer, 'Version', '==', 0)],
        [ks.put(key, encodeEnvelope(arrival.meta, arrival.payload)), ks.put(timer, '', lease)],
      )
      if (res.succeeded) return { key, revision: res.revision }
    }
  } catch (err) {
    // The timer's lease expired before the put (a delay shorter than the round trip): nothing was written.
    if (err instanceof SessionExpiredError) return putDelayed(client, ks, name, arrival, delayMs)
    await revokeLease(client, lease).catch(() => {})
    throw err
  }
}

/** The reads a scan adds to its Txn: the soonest delayed messages and their timers. */
export function dueReads(ks: Keyspace, name: string): Op[] {
  const window = { prefix: true, sort: ['Key', 'Ascend'] as ['Key', 'Ascend'], limit: DUE_WINDOW }
  return [ks.get(queueKeys.delayed(name), window), ks.get(queueKeys.timers(name), window)]
}

/**
 * From the {@link dueReads} results (at `offset` in `res`): the delayed messages that are due
 * (no timer), and whether any delayed message waits at all. Timers are a subset of the delayed
 * keys and sort the same way, so a delayed key among the first N whose timer is not among the
 * first N timers has none.
 */
export function dueOf(name: string, res: TxnResult, offset: number): { due: KeyValue[]; delayed: boolean } {
  const delayed = res.results[offset].range!.kvs
  const timers = new Set(res.results[offset + 1].range!.kvs.map((kv) => kv.key))
  return { due: delayed.filter((kv) => !timers.has(queueKeys.timerOf(name, kv.key))), delayed: delayed.length > 0 }
}

/**
 * Moves one due delayed message into the queue, in one Txn guarded by it still being there and
 * its timer still being gone. Returns quietly when another receiver moved it first.
 */
export async function promote(q: QueueRef, delayed: KeyValue): Promise<void> {
  const { ks, name } = q
  const { meta, payload } = decodeEnvelope(delayed.value)
  const arrival: Arrival = { payload, meta: { ...meta, id: meta.id ?? delayed.createRevision.toString() } }
  for (;;) {
    const part = await arrivalPart(q, arrival)
    const timer = queueKeys.timerOf(name, delayed.key)
    const guard = [ks.compare(delayed.key, 'Mod', '==', delayed.modRevision), ks.compare(timer, 'Version', '==', 0)]
    const res = await ks.txn([...guard, ...part.compares], [ks.delete(delayed.key), ...part.ops], [ks.get(delayed.key), ks.get(timer)])
    if (res.succeeded) return
    // Moved by another receiver (or purged), or not due after all: nothing to do. Else a key clashed: again.
    const [now, timerNow] = [res.results[0].range!.kvs[0], res.results[1].range!.kvs[0]]
    if (now === undefined || now.modRevision !== delayed.modRevision || timerNow !== undefined) return
  }
}
