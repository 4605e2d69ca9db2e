import type { Namespace } from 'etcd3'
import { ClaimQueue, unixNano, type DeadLetterOptions, type Enqueued } from './claims.js'
import { checkValue } from './kv.js'

/** Options of {@link Queue}: receive defaults. */
export type QueueOptions = DeadLetterOptions

/**
 * A FIFO queue, key-compatible with Go's `recipe.Queue`: items are `<name>/<unixNano>` (no
 * lease), served oldest mod revision first. Go peers may enqueue and dequeue on the same name.
 * Besides Go's destructive `dequeue`, consumers can `receive` / `ack` / `nack` at least once
 * (see `ClaimQueue` in `claims.ts` for the claim keys, which live outside `<name>/`).
 * Unlike Go's, ranges and watches use `<name>/`, so queue `q` never sees queue `q2`'s items.
 */
export class Queue extends ClaimQueue {
  protected readonly order = ['Mod', 'Ascend'] as ['Mod', 'Ascend']

  constructor(client: Namespace, name: string, options: QueueOptions = {}) {
    super(client, name, options, 'Queue')
  }

  /**
   * Appends a value as `<name>/<unixNano>` with a create-only Txn (`version(key) == 0`),
   * retrying with a new timestamp if another producer took the same nanosecond (Go's `newUniqueKV`).
   */
  async enqueue(value: string | Buffer): Promise<Enqueued> {
    const buf = checkValue(value, 'Queue value')
    for (;;) {
      const key = `${this.prefix}${unixNano()}`
      const res = await this.ks.txn([this.ks.compare(key, 'Version', '==', 0)], [this.ks.put(key, buf)])
      if (res.succeeded) return { key, id: res.revision.toString() }
    }
  }
}
