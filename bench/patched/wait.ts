import type { IWatchResponse, Namespace, Watcher } from 'etcd3'
import { WatchLostError } from '../../lib/errors.js'
import type { Keyspace, KeyValue } from '../../lib/kv.js'

/**
 * Bench-only copy of a proposed change to lib/wait.ts (see docs/BENCHMARKS.md, "hot lock").
 *
 * etcd (3.4 and later, mvcc/watchable_store.go) puts a watcher whose start revision is <= the
 * store's current revision into the "unsynced" group, which a background loop catches up only
 * every 100 ms. Go's waitDelete (and lib/wait.ts) watch the predecessor from the revision of the
 * range that found it — always <= current — so every wait starts unsynced and a handoff costs
 * 0–100 ms (50 ms on average) whatever the network. A watch with no start revision starts at
 * "now" and is synced at once; the revisions between our read and the watch start are covered
 * by the created response's header revision: if it is past our read, one range tells whether
 * the key we wait for is already gone (or was deleted and re-created by its owner re-locking).
 */
export function waitGone(client: Namespace, ks: Keyspace, target: KeyValue, seenAt: bigint, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  const watcher: Watcher = client.watch().key(target.key).watcher()
  return new Promise<void>((resolve, reject) => {
    let done = false
    const finish = (settle: () => void) => {
      if (done) return
      done = true
      signal?.removeEventListener('abort', onAbort)
      watcher.removeAllListeners()
      watcher.on('error', () => {})
      watcher.cancel().catch(() => {})
      settle()
    }
    const onAbort = () => finish(() => reject(signal!.reason))
    watcher.on('connected', (res: IWatchResponse) => {
      if (BigInt(res.header.revision) <= seenAt) return // nothing was written since our read
      ks.range(target.key).then(
        (r) => {
          if (r.kvs.length === 0 || r.kvs[0].createRevision !== target.createRevision) finish(resolve)
        },
        (err) => finish(() => reject(err)),
      )
    })
    watcher.on('delete', () => finish(resolve))
    watcher.on('error', (err: Error) => finish(() => reject(new WatchLostError(`watch on ${JSON.stringify(target.key)} ended: ${err.message}`, { cause: err }))))
    watcher.on('end', () => finish(() => reject(new WatchLostError(`watch on ${JSON.stringify(target.key)} ended before the awaited delete`))))
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Drop-in replacement for lib/wait.ts's `waitDeletes` (same signature and result): each round
 * finds the youngest key older than the caller and waits for it with {@link waitGone}, whose
 * watch starts synced. Only this function changes; Mutex and Election pick it up as they are.
 */
export async function waitDeletes(ks: Keyspace, prefix: string, maxCreateRevision: bigint, signal?: AbortSignal): Promise<bigint> {
  for (;;) {
    signal?.throwIfAborted()
    const older = await ks.range(prefix, { prefix: true, sort: ['Create', 'Descend'], limit: 1, maxCreateRevision })
    if (older.kvs.length === 0) return older.revision
    await waitGone(ks.client, ks, older.kvs[0], older.revision, signal)
  }
}
