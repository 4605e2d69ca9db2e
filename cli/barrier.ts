import { keyspace } from '../lib/kv.js'
import { noMoreArgs, requireArg, revisionNumber, type Command, type Report } from './common.js'
import { fields, showKey } from './table.js'

/**
 * `barrier <name>`: the state of a Go-compatible Barrier (up while the key `<name>` exists) and
 * DoubleBarrier of the same name (`<name>/waiters/*` = participants in, `<name>/ready` = the
 * last one arrived), read in one Txn so the three facts are from one revision.
 */

export const barrier: Command = {
  name: 'barrier',
  summary: 'show whether a barrier is held, and a double barrier\'s participants',
  usage: 'barrier <name>',
  help: `Shows, at one revision:
  barrier         held while the key <name> exists (Barrier.hold / Go recipe.Barrier)
  participants    keys under <name>/waiters/ (DoubleBarrier.enter; each on its lease)
  ready           whether <name>/ready exists (the last participant arrived; cleared by the
                  last one to leave)`,
  async run({ args, connect }): Promise<Report> {
    const name = requireArg(barrier, args, 0, 'barrier name')
    noMoreArgs(barrier, args, 1)
    const ks = keyspace(connect())
    const res = await ks.txn([], [
      ks.get(name),
      ks.get(`${name}/waiters/`, { prefix: true, countOnly: true }),
      ks.get(`${name}/ready`, { countOnly: true }),
    ])
    const [held, waiters, ready] = res.results.map((r) => r.range!)
    const key = held.kvs[0]
    const json = {
      barrier: name,
      revision: revisionNumber(res.revision),
      held: key !== undefined,
      heldSince: key ? revisionNumber(key.createRevision) : null,
      doubleBarrier: { participants: Number(waiters.count), ready: ready.count > 0n },
    }
    const text = fields([
      ['barrier', showKey(name)],
      ['held', key ? `yes (since revision ${key.createRevision})` : 'no'],
      ['participants', `${waiters.count} (double barrier, under ${showKey(`${name}/waiters/`)})`],
      ['ready', ready.count > 0n ? 'yes' : 'no'],
    ])
    return { json, text }
  },
}
