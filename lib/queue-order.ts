import type { SortTarget } from './kv.js'

/**
 * The order a queue serves its items in, as a value the claim code is given (not a subclass
 * hook): how to sort a Range of the items, and the priority an item key encodes, if any.
 */
export interface QueueOrder {
  /** The Range sort that lists the first-served item first. */
  readonly sort: [SortTarget, 'Ascend']
  /** The priority an item key encodes (lower is served first), or undefined if the queue has none. */
  priorityOf(itemKey: string, itemsPrefix: string): number | undefined
}

/** Go's Queue: the oldest mod revision first (items are written once, so: enqueue order). */
export const FIFO_ORDER: QueueOrder = {
  sort: ['Mod', 'Ascend'],
  priorityOf: () => undefined,
}

/** Highest priority number (Go's `uint16`); 0 is served first. */
export const MAX_PRIORITY = 65535

/** Go's PriorityQueue: the smallest key first, i.e. the lowest `%05d` priority, then the lowest sequence. */
export const PRIORITY_ORDER: QueueOrder = {
  sort: ['Key', 'Ascend'],
  priorityOf(itemKey, itemsPrefix) {
    const p = Number(itemKey.slice(itemsPrefix.length, itemsPrefix.length + 5))
    // A foreign key without a priority field sorts after every real priority.
    return Number.isInteger(p) ? p : MAX_PRIORITY + 1
  },
}
