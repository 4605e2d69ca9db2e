/**
 * The queue's exactly-once checks (test code), shared by the fault workloads and the partition
 * scenarios: every delivery and ack is recorded here, and `violations()` lists what went wrong.
 */

/** One delivery of a message to some consumer. */
export interface Delivery {
  id: string
  value: string
  receiveCount: number
  acked: boolean
}

/** Every delivery and ack of one queue, and the exactly-once checks over them. */
export class DeliveryLog {
  readonly deliveries = new Map<string, Delivery[]>()
  /** Acks answered "gone" after an attempt that may have landed: message id -> how many. */
  readonly ambiguous = new Map<string, number>()
  private readonly early: string[] = []

  /** A consumer received `m`. Flags a delivery of a message already acked. */
  deliver(m: { id: string; value: string; receiveCount: number }): Delivery {
    const d = { id: m.id, value: m.value, receiveCount: m.receiveCount, acked: false }
    const list = this.deliveries.get(m.id) ?? []
    if (list.some((x) => x.acked)) this.early.push(`message ${m.id} delivered again (receive ${m.receiveCount}) after it was acked`)
    list.push(d)
    this.deliveries.set(m.id, list)
    return d
  }

  /** An ack of a delivery succeeded. */
  acked(d: Delivery): void {
    d.acked = true
  }

  /** An ack answered "gone" after an attempt whose answer was lost (it may have landed). */
  ambiguousAck(id: string): void {
    this.ambiguous.set(id, (this.ambiguous.get(id) ?? 0) + 1)
  }

  /** Messages acked (successful acks, plus ambiguous ones no other ack claims). */
  ackedCount(): number {
    let n = 0
    for (const [id, list] of this.deliveries) if (list.some((d) => d.acked) || this.ambiguous.has(id)) n++
    return n
  }

  /** Deliveries in total, and how many of them were redeliveries. */
  totals(): { deliveries: number; redeliveries: number; ambiguousAcks: number } {
    const deliveries = [...this.deliveries.values()].reduce((n, l) => n + l.length, 0)
    const ambiguousAcks = [...this.ambiguous.keys()].filter((id) => !(this.deliveries.get(id) ?? []).some((d) => d.acked)).length
    return { deliveries, redeliveries: deliveries - this.deliveries.size, ambiguousAcks }
  }

  /**
   * Every violation of exactly-once, given what `enqueue()` returned (`enqueued`: id -> payload),
   * how many messages were produced, and the payloads whose enqueue failed ambiguously
   * (`uncertain`: it may have landed): a message acked twice or never (lost), delivered after
   * its ack, twice with one receive count, or acked on a delivery older than another; a payload
   * enqueued twice; an item nobody's enqueue() returned (unless its payload is uncertain).
   */
  violations(enqueued: Map<string, string>, produced: number, uncertain: Set<string> = new Set()): string[] {
    const out = [...this.early]
    const ackedById = new Map<string, number>()
    for (const [id, list] of this.deliveries) {
      const acked = list.filter((d) => d.acked)
      ackedById.set(id, acked.length)
      if (acked.length > 1) out.push(`message ${id} acked ${acked.length} times`)
      const counts = list.map((d) => d.receiveCount)
      if (new Set(counts).size !== counts.length) out.push(`message ${id} delivered twice with the same receive count: ${counts.join(',')}`)
      if (acked.length === 1 && acked[0].receiveCount !== Math.max(...counts))
        out.push(`message ${id}: receive ${Math.max(...counts)} came after the acked receive ${acked[0].receiveCount}`)
    }
    for (const id of enqueued.keys()) {
      if ((ackedById.get(id) ?? 0) === 0 && !this.ambiguous.has(id)) out.push(`message ${id} (${enqueued.get(id)}) was never acked`)
    }
    const confirmed = produced - uncertain.size
    const payloads = new Set(enqueued.values())
    if (payloads.size !== confirmed)
      out.push(`${confirmed} payloads enqueued for sure, ${payloads.size} distinct ones returned by enqueue()`)
    if (enqueued.size !== confirmed) out.push(`${confirmed} payloads enqueued for sure, ${enqueued.size} ids returned by enqueue()`)
    // An item nobody enqueued: a producer's write that landed although enqueue() reported
    // otherwise (or wrote twice), so its payload is in the queue more than once. A payload whose
    // enqueue failed ambiguously may be there once.
    const unreturned = new Map<string, string[]>()
    for (const [id, list] of this.deliveries) {
      if (enqueued.has(id)) continue
      const payload = list[0].value
      if (!uncertain.has(payload))
        out.push(`message ${id} (${payload}) was delivered but no enqueue() returned it: duplicate of the payload`)
      unreturned.set(payload, [...(unreturned.get(payload) ?? []), id])
    }
    for (const [payload, ids] of unreturned)
      if (ids.length > 1 && uncertain.has(payload))
        out.push(`payload ${payload} (enqueue failed) is in the queue ${ids.length} times: ${ids.join(', ')}`)
    return out
  }
}
