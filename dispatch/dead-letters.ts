// Who was dead-lettered: a watch on the dead-letter queues of the dispatcher's subscriptions.
// A message moves to its dead-letter queue from wherever its last delivery failed — a
// consumer's nack inside the function, the dispatcher's nack of a failed invocation, or the
// claim that finds it over-received — so the move is seen where it lands, not where it starts.
import type { IKeyValue, Namespace, Watcher } from 'etcd3'
import { queueKeys } from '../lib/core/keys.js'
import { keyspace } from '../lib/core/kv.js'
import { readMeta } from '../lib/queue/meta.js'
import { consumerDeadLetter } from '../lib/queue/options.js'
import type { QueueSubscription } from './subscriptions.js'

/** One message that arrived in a dead-letter queue of the subscriptions. */
export interface DeadLetter {
  /** The dead-letter queue. */
  deadLetterQueue: string
  /** The queues whose dead letters go there (usually one). */
  queues: string[]
  /** The message id its consumers saw (kept: `receive` on the dead-letter queue reports it too). */
  id: string
  /**
   * Its id as an item of the dead-letter queue: the create revision of its new key, which Go's
   * `Dequeue`, `middy-etcd queue peek` and `etcdctl` see.
   */
  deadLetterId: string
  /** Its new key. */
  key: string
}

/**
 * Calls `onDeadLetter` for every message that arrives in the dead-letter queue of one of
 * `subscriptions` from now on, until `signal` aborts. A dead letter carries its original id in
 * its metadata, written in the Txn that moved it; an item put there by other means (a producer
 * of the dead-letter queue) has none and is not reported.
 */
export function watchDeadLetters(
  client: Namespace,
  subscriptions: QueueSubscription[],
  onDeadLetter: (dead: DeadLetter) => void,
  signal: AbortSignal,
): void {
  const byQueue = new Map<string, Set<string>>()
  for (const sub of subscriptions) {
    const dlq = consumerDeadLetter(sub.queue, sub).deadLetterQueue
    if (dlq === undefined) continue // maxReceives: Infinity
    byQueue.set(dlq, (byQueue.get(dlq) ?? new Set()).add(sub.queue))
  }
  const ks = keyspace(client)
  for (const [dlq, queues] of byQueue) {
    const items = queueKeys.items(dlq)
    const watcher: Watcher = client.watch().prefix(items).only('put').watcher()
    watcher.on('put', (raw: IKeyValue) => {
      // A new item only (version 1), directly under the queue (a dead-letter queue is a Go-layout Queue).
      const key = raw.key.toString()
      if (raw.version !== '1' || key.slice(items.length).includes('/')) return
      const createRevision = BigInt(raw.create_revision)
      ks.txn([], [ks.get(queueKeys.meta(key))])
        .then((res) => {
          const { id } = readMeta(res.results[0].range!.kvs[0], { createRevision })
          if (id !== undefined)
            onDeadLetter({ deadLetterQueue: dlq, queues: [...queues], id, deadLetterId: createRevision.toString(), key })
        })
        // Only a log line is at stake (etcd going away, the client closing).
        .catch(() => {})
    })
    // etcd3 emits these only for a watch it has dropped already: nothing to cancel then.
    let dropped = false
    watcher.on('error', () => (dropped = true))
    watcher.on('end', () => (dropped = true))
    signal.addEventListener('abort', () => void (dropped ? undefined : watcher.cancel().catch(() => {})), { once: true })
  }
}
