import { setMaxListeners } from 'node:events'
import type { Namespace } from 'etcd3'
import { WatchLostError } from '../errors.js'

/**
 * Knowing when a client is closed. etcd3's `close()` tears down the connections but tells no
 * pending watch: its watchers emit neither `error` nor `end` and keep reconnecting, so a wait
 * would stay pending forever and keep the process alive. Every wait and session therefore also
 * listens to {@link closedSignal}, which aborts (with a {@link WatchLostError}) when the client
 * (or any namespace of it: they share one connection pool) is closed.
 */

interface Pool {
  close(): void
}

const controllers = new WeakMap<Pool, AbortController>()
const unclosable = new AbortController().signal

/**
 * An AbortSignal that aborts once `client` is closed. The first call for a client hooks its
 * connection pool's `close`; every primitive calls it when it is built (see `keyspace`), so a
 * client closed after any primitive used it is always noticed.
 */
export function closedSignal(client: Namespace): AbortSignal {
  const pool = (client as unknown as { pool?: Pool }).pool
  if (!pool || typeof pool.close !== 'function') return unclosable
  let controller = controllers.get(pool)
  if (!controller) {
    const created = new AbortController()
    // Every session and every wait of the client listens: hundreds at once is normal, not a leak.
    setMaxListeners(0, created.signal)
    const close = pool.close.bind(pool)
    pool.close = () => {
      try {
        close()
      } finally {
        created.abort(
          new WatchLostError('the etcd client was closed while waiting; the wait was given up and its watch cancelled', {
            reason: 'client-closed',
          }),
        )
      }
    }
    controllers.set(pool, created)
    controller = created
  }
  return controller.signal
}
