import type { Namespace } from 'etcd3'
import { ClaimQueue, type Enqueued, type PriorityEnqueueOptions, type QueueOptions } from './consumer.js'
import { checkInteger } from '../core/check.js'
import { checkValue } from '../core/kv.js'
import { sequentialItemSlot } from './placement.js'
import { checkEnqueue } from './options.js'
import { MAX_PRIORITY, PRIORITY_ORDER } from './order.js'

export { MAX_PRIORITY } from './order.js'

/** Options of {@link PriorityQueue}: receive and retry defaults. */
export type PriorityQueueOptions = QueueOptions

/**
 * A priority queue, key-compatible with Go's `recipe.PriorityQueue`: items are
 * `<name>/<%05d priority>/<%016d seq>`, with the bookkeeping key `__<name>/<%05d priority>`
 * serialising producers of one priority. The lexically smallest key is served first: lower
 * priority numbers first, FIFO within a priority. Same consumer API as {@link Queue}
 * (dead-lettered messages go to a plain Go-layout Queue); no message groups.
 */
export class PriorityQueue extends ClaimQueue {
  constructor(client: Namespace, name: string, options: PriorityQueueOptions = {}) {
    super(client, name, PRIORITY_ORDER, sequentialItemSlot, options, 'PriorityQueue')
  }

  /**
   * Appends a value at `priority` (integer 0..65535, lower served first) as Go's
   * `newSequentialKV` does: read the bucket's last key, then in one Txn guarded by
   * `mod_revision(__<bucket>) < readRevision + 1` put the bookkeeping key and
   * `<bucket>/<last seq + 1>`; a concurrent producer makes the compare fail and we read again.
   * With `delayMs` it waits outside the queue until due, then joins its bucket.
   */
  async enqueue(value: string | Buffer, priority: number, options?: PriorityEnqueueOptions): Promise<Enqueued> {
    checkInteger(priority, 'PriorityQueue priority', 0, MAX_PRIORITY, { minNote: 'served first' })
    const buf = checkValue(value, 'PriorityQueue value')
    const { delayMs } = checkEnqueue(options, 'PriorityQueue enqueue', false)
    // Go ranges the bucket without a trailing "/"; with 5-digit buckets the keys are the same.
    return this.arrive(buf, { priority }, delayMs)
  }
}
