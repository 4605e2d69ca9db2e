/**
 * The order a queue serves its items in, as a value the claim code is given (not a subclass
 * hook). Both kinds are served in key order — the only order etcd reads a window of without
 * reading the whole queue (see scan.ts) — and differ in what a key encodes.
 */
export interface QueueOrder {
  /** The priority an item key encodes (lower is served first), or undefined if the queue has none. */
  priorityOf(itemKey: string, itemsPrefix: string): number | undefined
}

/**
 * Go's Queue: keys `<unixNano>` of the producer's clock, so one producer's items in enqueue
 * order, several producers' within their clocks' offset. (Go's `Dequeue` takes the oldest mod
 * revision instead; both take only items.)
 */
export const FIFO_ORDER: QueueOrder = {
  priorityOf: () => undefined,
}

/** Highest priority number (Go's `uint16`); 0 is served first. */
export const MAX_PRIORITY = 65535

/** Go's PriorityQueue: the smallest key first, i.e. the lowest `%05d` priority, then the lowest sequence. */
export const PRIORITY_ORDER: QueueOrder = {
  priorityOf(itemKey, itemsPrefix) {
    const p = Number(itemKey.slice(itemsPrefix.length, itemsPrefix.length + 5))
    // A foreign key without a priority field sorts after every real priority.
    return Number.isInteger(p) ? p : MAX_PRIORITY + 1
  },
}
