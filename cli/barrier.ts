import type { EtcdClient } from '../lib/core/client.js'
import { doubleBarrier } from '../lib/core/keys.js'
import { keyspace } from '../lib/core/kv.js'
import { noMoreArgs, requireArg, revisionNumber, type Command, type Report } from './common.js'
import { fields, showKey } from './table.js'

/**
 * `barrier <name>`: the state of a Go-compatible Barrier (up while the key `<name>` exists) and
 * DoubleBarrier of the same name (`<name>/waiters/*` = participants in, `<name>/ready` = the
 * last one arrived), read in one Txn so the three facts are from one revision.
 */

/** A Barrier's and DoubleBarrier's state at one revision (one Txn); shared with the ui page. */
export async function readBarrier(client: EtcdClient, name: string) {
  const ks = keyspace(client)
  const res = await ks.reads({
    held: ks.get(name, { keysOnly: true }),
    waiters: ks.get(doubleBarrier.waiters(name), { prefix: true, countOnly: true }),
    ready: ks.get(doubleBarrier.ready(name), { countOnly: true }),
  })
  const { held, waiters, ready } = res.results
  const key = held.kvs[0]
  const json = {
    barrier: name,
    revision: revisionNumber(res.revision),
    held: key !== undefined,
    heldSince: key ? revisionNumber(key.createRevision) : null,
    doubleBarrier: { participants: Number(waiters.count), ready: ready.count > 0n },
  }
  return { json, key, waiters, ready }
}

export const barrier: Command = {
  name: 'barrier',
  summary: "show whether a barrier is held, and a double barrier's participants",
  usage: 'barrier <name>',
  help: `Shows, at one revision:
  barrier         held while the key <name> exists (Barrier.hold / Go recipe.Barrier)
  participants    keys under <name>/waiters/ (DoubleBarrier.enter; each on its lease)
  ready           whether <name>/ready exists (the last participant arrived; cleared by the
                  last one to leave)`,
  async run({ args, connect }): Promise<Report> {
    const name = requireArg(barrier, args, 0, 'barrier name')
    noMoreArgs(barrier, args, 1)
    const { json, key, waiters, ready } = await readBarrier(connect(), name)
    const text = fields([
      ['barrier', showKey(name)],
      ['held', key ? `yes (since revision ${key.createRevision})` : 'no'],
      ['participants', `${waiters.count} (double barrier, under ${showKey(doubleBarrier.waiters(name))})`],
      ['ready', ready.count > 0n ? 'yes' : 'no'],
    ])
    return { json, text }
  },
}
