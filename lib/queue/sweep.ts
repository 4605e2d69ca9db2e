import { groupOfSegment, queueKeys } from '../core/keys.js'
import { KeyPager } from './key-windows.js'
import { Branch, type KeyValue } from '../core/kv.js'
import { handOnPart, type QueueRef } from './placement.js'

/**
 * Removing what a consumer that knows only Go's layout leaves behind. A Go `Dequeue` deletes the
 * item and nothing else, so a message it took keeps its receive counter (`__receives/…`), its
 * metadata (`__meta/…`), its claim marker (until the claim's lease ends) and, if it was its
 * group's current message, the group's head (`__group-heads/…`), which holds the rest of the
 * group back for good. A sweep pages through those keys in key order (bounded windows, keys
 * only), removes each whose item is gone or is another item now (a PriorityQueue sequence
 * reused), and passes a headless group's turn on — each in a Txn guarded by the item still not
 * being there, so a sweep never races a claim, an ack or a move.
 *
 * Consumers sweep as they go (`ClaimQueue`: a step when a receive finds nothing, at most every
 * 5 s, and beside a claim every 30 s); `middy-etcd queue sweep <name>` sweeps a queue
 * to the end at once.
 */

/** What a sweep removed. */
export interface Swept {
  counters: number
  metadata: number
  markers: number
  /** Groups whose current message was gone: their turn passed on. */
  groups: number
}

/** Keys of each kind one step looks at: their items are read in one Txn of at most 120 gets. */
const PAGE = 40

/** Attempts to pass a headless group's turn on while its waiting list changes under it. */
const HAND_ON_TRIES = 8

type Kind = 'counters' | 'metadata' | 'markers'

/** Sweeps one queue step by step; keeps where each kind of key got to. */
export class Sweeper {
  private readonly pagers: Record<Kind, KeyPager>
  private readonly heads: KeyPager

  constructor(private readonly q: QueueRef) {
    const { ks, name } = q
    this.pagers = {
      counters: new KeyPager(ks, queueKeys.receives(name), PAGE),
      metadata: new KeyPager(ks, queueKeys.metas(name), PAGE),
      markers: new KeyPager(ks, queueKeys.claims(name), PAGE),
    }
    this.heads = new KeyPager(ks, queueKeys.groupHeads(name), PAGE)
  }

  /** One page of each kind of key; `done` once every kind reached its end in this round (the next step starts them over). */
  async step(): Promise<Swept & { done: boolean }> {
    const all = [...Object.values(this.pagers), this.heads]
    if (all.every((p) => p.done)) for (const p of all) p.rewind()
    const swept: Swept = { counters: 0, metadata: 0, markers: 0, groups: 0 }
    const pages = await Promise.all(
      (Object.keys(this.pagers) as Kind[]).map(async (kind) => ({
        kind,
        kvs: this.pagers[kind].done ? [] : (await this.pagers[kind].next()).kvs,
      })),
    )
    const bookkeeping = pages
      .flatMap(({ kind, kvs }) => kvs.map((kv) => ({ kind, kv, ...itemOf(kind, kv) })))
      .filter((b) => b.item !== undefined)
    const orphans = await this.gone(bookkeeping)
    if (orphans.length > 0) {
      const { ks } = this.q
      // Each in a nested Txn: gone only if its item still is not the one it was written for.
      const batch = new Branch()
      const removals = orphans.map((o) => ({
        kind: o.kind,
        removal: batch.add({
          remove: ks.namedTxnOp([ks.compare(o.item!, 'Create', '!=', o.rev!), ks.compare(o.kv.key, 'Mod', '==', o.kv.modRevision)], {
            remove: ks.deleteOp(o.kv.key),
          }),
        }),
      }))
      const res = await ks.namedTxn([], batch.ops)
      for (const { kind, removal } of removals) if (removal(res.results).remove.succeeded) swept[kind]++
    }
    if (!this.heads.done) swept.groups = await this.handOnHeadless((await this.heads.next()).kvs)
    return { ...swept, done: all.every((p) => p.done) }
  }

  /** The bookkeeping keys whose item is gone, or is another item (its create revision differs), read in one Txn. */
  private async gone<T extends { item?: string; rev?: bigint }>(list: T[]): Promise<T[]> {
    if (list.length === 0) return []
    const { ks } = this.q
    const items = await ks.getKeys([...new Set(list.map((b) => b.item!))], { keysOnly: true })
    const created = new Map(items.map((kv) => [kv.key, kv.createRevision]))
    return list.filter((b) => created.get(b.item!) !== b.rev)
  }

  /** Passes on the turn of each group whose head points at an item that is gone; returns how many. */
  private async handOnHeadless(heads: KeyValue[]): Promise<number> {
    if (heads.length === 0) return 0
    const { ks, name } = this.q
    // The head's value is its item's key (small); the item's create revision is the head's mod revision.
    const stillThere = await ks.getKeys(heads.map((h) => h.key))
    const headless = await this.gone(stillThere.map((h) => ({ head: h, item: h.value.toString(), rev: h.modRevision })))
    let passed = 0
    for (const { head, item } of headless) {
      const group = groupOfSegment(head.key.slice(queueKeys.groupHeads(name).length))
      for (let attempt = 0; attempt < HAND_ON_TRIES; attempt++) {
        const part = await handOnPart(this.q, group, head.modRevision)
        // No ops: the head is gone or points at another item now (another sweeper was first).
        if (part.ops.length === 0) break
        const res = await ks.txn([ks.compare(item, 'Create', '!=', head.modRevision), ...part.compares], part.ops)
        if (res.succeeded) {
          passed++
          break
        }
      }
    }
    return passed
  }
}

/** Sweeps queue `q` to the end of every kind of bookkeeping key. */
export async function sweepQueue(q: QueueRef, signal?: AbortSignal): Promise<Swept> {
  const sweeper = new Sweeper(q)
  const total: Swept = { counters: 0, metadata: 0, markers: 0, groups: 0 }
  for (;;) {
    signal?.throwIfAborted()
    const step = await sweeper.step()
    for (const k of Object.keys(total) as (keyof Swept)[]) total[k] += step[k]
    if (step.done) return total
  }
}

/**
 * The item a bookkeeping key belongs to, and the create revision that item must have:
 * `__receives/<item>/<rev>` and `__claims/<item>/<rev>` say it; `__meta/<item>` is valid while
 * its mod revision is the item's create revision (both are written in one Txn). A key of
 * another shape belongs to nothing we know and is left alone.
 */
function itemOf(kind: Kind, kv: KeyValue): { item?: string; rev?: bigint } {
  if (kind === 'metadata') return { item: queueKeys.itemOfMeta(kv.key), rev: kv.modRevision }
  const owner = queueKeys.itemOfClaim(kv.key)
  return owner === undefined ? {} : { item: owner.item, rev: owner.createRevision }
}
