import type { Namespace } from 'etcd3'
import { ClaimQueue, type DeadLetterOptions, type Enqueued } from './claims.js'
import { KeyExistsError } from './errors.js'
import { putUnique } from './keys.js'
import { checkValue } from './kv.js'
import { FIFO_ORDER } from './queue-order.js'

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
  constructor(client: Namespace, name: string, options: QueueOptions = {}) {
    super(client, name, FIFO_ORDER, options, 'Queue')
  }

  /**
   * Appends a value as `<name>/<unixNano>` with a create-only Txn (`version(key) == 0`),
   * retrying with a new timestamp if another producer took the same nanosecond (Go's `newUniqueKV`).
   */
  async enqueue(value: string | Buffer): Promise<Enqueued> {
    const buf = checkValue(value, 'Queue value')
    const { key, revision } = await putUnique(this.ks, this.prefix, buf, {
      onExhausted: () => new KeyExistsError(`Queue ${JSON.stringify(this.name)}: 16 fresh item keys in a row already existed; check for clock problems or a writer of foreign keys under ${JSON.stringify(this.prefix)}`),
    })
    return { key, id: revision.toString() }
  }
}
