import type { Namespace } from 'etcd3'
import { ClaimQueue, type DeadLetterOptions, type Enqueued } from './claims.js'
import { InvalidArgumentError, MiddyEtcdError } from './errors.js'
import { checkValue } from './kv.js'

/** Options of {@link PriorityQueue}: receive defaults. */
export type PriorityQueueOptions = DeadLetterOptions

/** Highest priority number (Go's `uint16`); 0 is served first. */
export const MAX_PRIORITY = 65535

/**
 * A priority queue, key-compatible with Go's `recipe.PriorityQueue`: items are
 * `<name>/<%05d priority>/<%016d seq>`, with the bookkeeping key `__<name>/<%05d priority>`
 * serialising producers of one priority. The lexically smallest key is served first: lower
 * priority numbers first, FIFO within a priority. Same consumer API as {@link Queue}
 * (dead-lettered messages go to a plain Go-layout Queue).
 */
export class PriorityQueue extends ClaimQueue {
  protected readonly order = ['Key', 'Ascend'] as ['Key', 'Ascend']

  constructor(client: Namespace, name: string, options: PriorityQueueOptions = {}) {
    super(client, name, options, 'PriorityQueue')
  }

  /**
   * Appends a value at `priority` (integer 0..65535, lower served first) as Go's
   * `newSequentialKV` does: read the bucket's last key, then in one Txn guarded by
   * `mod_revision(__<bucket>) < readRevision + 1` put the bookkeeping key and
   * `<bucket>/<last seq + 1>`; a concurrent producer makes the compare fail and we read again.
   */
  async enqueue(value: string | Buffer, priority: number): Promise<Enqueued> {
    if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 0 || priority > MAX_PRIORITY) {
      throw new InvalidArgumentError(`PriorityQueue priority must be a whole number from 0 (served first) to ${MAX_PRIORITY}, got ${String(priority)}`)
    }
    const buf = checkValue(value, 'PriorityQueue value')
    const bucket = `${this.prefix}${String(priority).padStart(5, '0')}`
    const base = `__${bucket}`
    for (;;) {
      // Go ranges the bucket without a trailing "/"; with 5-digit buckets the keys are the same.
      const last = await this.ks.range(`${bucket}/`, { prefix: true, sort: ['Key', 'Descend'], limit: 1 })
      const seq = last.kvs.length === 0 ? 0n : parseSeq(last.kvs[0].key) + 1n
      const key = `${bucket}/${seq.toString().padStart(16, '0')}`
      const res = await this.ks.txn([this.ks.compare(base, 'Mod', '<', last.revision + 1n)], [this.ks.put(base, ''), this.ks.put(key, buf)])
      if (res.succeeded) return { key, id: res.revision.toString() }
    }
  }

  protected override priorityOf(key: string): number {
    const p = Number(key.slice(this.prefix.length, this.prefix.length + 5))
    return Number.isInteger(p) ? p : MAX_PRIORITY + 1
  }
}

function parseSeq(key: string): bigint {
  const field = key.slice(key.lastIndexOf('/') + 1)
  if (!/^[0-9]+$/.test(field)) {
    throw new MiddyEtcdError(`priority queue key ${JSON.stringify(key)} does not end in a decimal sequence number; remove the foreign key from the queue's range`)
  }
  return BigInt(field)
}
