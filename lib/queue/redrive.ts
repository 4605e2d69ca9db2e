import { chunked, leaveOps } from './moves.js'
import { KeyPager } from './key-windows.js'
import { queueKeys } from '../core/keys.js'
import { Branch, type KeyValue } from '../core/kv.js'
import { VALUES_PER_RESPONSE } from '../limits.js'
import { arrivalPart, type QueueRef } from './placement.js'
import { readMeta } from './meta.js'
import type { Redriven } from './options.js'

/**
 * Redrive: moving dead letters back into a queue. Each message moves in one Txn (deleted from
 * the dead-letter queue, written into the queue, or behind its group's head), so an interrupted
 * redrive has moved some messages whole and left the rest whole: nothing is lost or doubled,
 * and running it again moves the rest. The moved message is a new item, so its receive count
 * starts again from 0; its id and group come along (from the dead letter's metadata).
 */

/** Dead letters listed per page (keys only). */
const PAGE = 100

/**
 * Moves up to `max` dead letters from `from` into `target`, oldest first (in key order: when
 * each was dead-lettered), stopping between two messages when `signal` aborts. Pages of keys
 * are read in bounded windows; values and metadata {@link VALUES_PER_RESPONSE} at a time.
 */
export async function redrive(target: QueueRef, from: string, max: number, signal?: AbortSignal): Promise<Redriven> {
  const { ks } = target
  const done: Redriven = { moved: 0, skipped: 0 }
  const pager = new KeyPager(ks, queueKeys.items(from), PAGE)
  // Only what is there now: messages dead-lettered while we run (perhaps redriven ones failing again) wait for the next redrive.
  let upTo: bigint | undefined
  while (done.moved < max && !pager.done) {
    signal?.throwIfAborted()
    const page = await pager.next()
    upTo ??= page.revision
    const now = page.kvs.filter((kv) => kv.createRevision <= upTo!)
    for (const chunk of chunked(now, VALUES_PER_RESPONSE)) {
      if (done.moved >= max) break
      const batch = new Branch()
      const letters = chunk.map((kv) => ({ kv, read: batch.add({ item: ks.get(kv.key), meta: ks.get(queueKeys.meta(kv.key)) }) }))
      const res = await ks.namedTxn([], batch.ops)
      for (const { kv, read } of letters) {
        if (done.moved >= max) break
        signal?.throwIfAborted()
        const found = read(res.results)
        const [item, meta] = [found.item.kvs[0], found.meta.kvs[0]]
        const moved = item !== undefined && item.modRevision === kv.modRevision && (await moveOne(target, item, meta))
        if (moved) done.moved++
        else done.skipped++
      }
    }
  }
  return done
}

/** Moves one dead letter; false when it is claimed by a consumer of the dead-letter queue (or already gone). */
async function moveOne(target: QueueRef, kv: KeyValue, metaKv: KeyValue | undefined): Promise<boolean> {
  const { ks } = target
  const meta = readMeta(metaKv, kv)
  const arrival = { payload: kv.value, meta: { ...meta, id: meta.id ?? kv.createRevision.toString() } }
  const marker = queueKeys.marker(kv.key, kv.createRevision)
  for (;;) {
    const part = await arrivalPart(target, arrival)
    const res = await ks.namedTxn(
      [ks.compare(kv.key, 'Mod', '==', kv.modRevision), ks.compare(marker, 'Create', '==', 0), ...part.compares],
      { leave: leaveOps(ks, kv.key, kv.createRevision), arrival: part.ops },
      { item: ks.get(kv.key, { keysOnly: true }), marker: ks.get(marker, { keysOnly: true }) },
    )
    if (res.succeeded) return true
    const [now, claimed] = [res.results.item.kvs[0], res.results.marker.kvs[0]]
    if (now?.modRevision !== kv.modRevision || claimed !== undefined) return false
    // Only a key slot went stale (another writer took it): again.
  }
}
