import type { Namespace } from 'etcd3'
import { ClaimQueue, type EnqueueOptions, type Enqueued, type QueueOptions } from './consumer.js'
import { checkValue } from '../core/kv.js'
import { uniqueItemSlot } from './placement.js'
import { checkEnqueue } from './options.js'
import { FIFO_ORDER } from './order.js'

export type { QueueOptions } from './consumer.js'

/**
 * A FIFO queue, key-compatible with Go's `recipe.Queue`: items are `<name>/<unixNano>` (no
 * lease), served in key order (the producer's clock: see scan.ts; Go's Dequeue takes the
 * oldest mod revision). Go peers may enqueue and dequeue on the same name.
 * Besides Go's destructive `dequeue`, consumers can `receive` / `ack` / `nack` at least once
 * (see `ClaimQueue` in `consumer.ts` for the claim keys, which live outside `<name>/`), with
 * retry back-off, dead letters, delayed messages and message groups.
 * Unlike Go's, ranges and watches use `<name>/`, so queue `q` never sees queue `q2`'s items.
 */
export class Queue extends ClaimQueue {
  constructor(client: Namespace, name: string, options: QueueOptions = {}) {
    super(client, name, FIFO_ORDER, uniqueItemSlot, options, 'Queue')
  }

  /**
   * Appends a value as `<name>/<unixNano>` with a create-only Txn (`version(key) == 0`),
   * retrying with a new timestamp if another producer took the same nanosecond (Go's
   * `newUniqueKV`). With `delayMs` it waits outside the queue until due; with `group`, behind
   * the group's earlier messages (see {@link EnqueueOptions}).
   */
  async enqueue(value: string | Buffer, options?: EnqueueOptions): Promise<Enqueued> {
    const buf = checkValue(value, 'Queue value')
    const { delayMs, group } = checkEnqueue(options, 'Queue enqueue', true)
    return this.arrive(buf, group === undefined ? {} : { group }, delayMs)
  }
}
