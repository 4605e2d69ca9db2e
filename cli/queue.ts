import type { EtcdClient } from '../lib/client.js'
import { checkName, keyspace, type KeyValue } from '../lib/kv.js'
import { MAX_PRIORITY, PriorityQueue } from '../lib/priority-queue.js'
import { Queue } from '../lib/queue.js'
import { intOption, noMoreArgs, requireArg, revisionNumber, UsageError, type Command, type Invocation, type Report } from './common.js'
import { fields, jsonValue, showKey, showValue, table } from './table.js'

/**
 * `queue stats|peek|push|purge <name>`: a Go-layout Queue (`<name>/<unixNano>`) or
 * PriorityQueue (`<name>/<%05d prio>/<%016d seq>`), with the at-least-once claim keys of
 * lib/claims.ts: a claimed (in-flight) item has a marker `__claims/<itemKey>/<createRev>` on
 * the receiver's lease, and `__receives/<itemKey>/<createRev>` counts its receives (version).
 */

const PEEK_DEFAULT = 10
/** Peeked items are read back with their receive counters in one Txn (etcd's default op limit is 128). */
const PEEK_MAX = 100
const PRIORITY_ITEM = /^\d{5}\/\d{16}$/

const claimsOf = (name: string) => `__claims/${name}/`
const receivesOf = (name: string) => `__receives/${name}/`
const markerOf = (kv: KeyValue) => `__claims/${kv.key}/${kv.createRevision}`
const counterOf = (kv: KeyValue) => `__receives/${kv.key}/${kv.createRevision}`

/** Items, claimed items (claim markers) and, if named, the dead-letter queue's items. */
async function stats(client: EtcdClient, name: string, deadLetter: string | undefined): Promise<Report> {
  const ks = keyspace(client)
  const [items, claims, dead] = await Promise.all([
    new Queue(client, name).size(),
    ks.range(claimsOf(name), { prefix: true, countOnly: true }),
    deadLetter === undefined ? undefined : new Queue(client, deadLetter).size(),
  ])
  const claimed = Number(claims.count)
  // A marker can outlive its item for a moment (a Go Dequeue took a claimed item): never below 0.
  const visible = Math.max(0, items - claimed)
  const json = { queue: name, items, visible, claimed, deadLetter: deadLetter === undefined ? null : { queue: deadLetter, items: dead } }
  const text = fields([
    ['queue', showKey(name)],
    ['items', String(items)],
    ['visible', String(visible)],
    ['claimed', `${claimed} (in flight: received, not yet acked)`],
    ['dead-letter', deadLetter === undefined ? '- (name it with --dead-letter <queue>)' : `${dead} in ${showKey(deadLetter)}`],
  ])
  return { json, text }
}

/**
 * The first `limit` items in the order consumers get them (Queue: oldest mod revision;
 * PriorityQueue: smallest key), without claiming any, each with its claim state and receive
 * count. Two reads: the items, then their markers and counters at the same revision.
 */
async function peek(client: EtcdClient, name: string, limit: number): Promise<Report> {
  const ks = keyspace(client)
  const prefix = `${name}/`
  const first = await ks.range(prefix, { prefix: true, limit: 1 })
  const priority = first.kvs.length > 0 && PRIORITY_ITEM.test(first.kvs[0].key.slice(prefix.length))
  const items = await ks.range(prefix, { prefix: true, sort: priority ? ['Key', 'Ascend'] : ['Mod', 'Ascend'], limit, revision: first.revision })
  const state = items.kvs.length === 0 ? [] : (await ks.txn([], items.kvs.flatMap((kv) => [ks.get(markerOf(kv), { revision: first.revision }), ks.get(counterOf(kv), { revision: first.revision })]))).results
  const rows = items.kvs.map((kv, i) => ({
    key: kv.key,
    id: kv.createRevision.toString(),
    ...(priority ? { priority: Number(kv.key.slice(prefix.length, prefix.length + 5)) } : {}),
    claimed: state[2 * i].range!.kvs.length > 0,
    receives: Number(state[2 * i + 1].range!.kvs[0]?.version ?? 0n),
    ...jsonValue(kv.value),
  }))
  const json = { queue: name, kind: priority ? 'priority' : 'fifo', revision: revisionNumber(first.revision), items: rows, more: items.more }
  if (rows.length === 0) return { json, text: `queue ${JSON.stringify(name)} is empty` }
  const text = table(
    ['#', 'ID', ...(priority ? ['PRIO'] : []), 'STATE', 'RECEIVES', 'KEY', 'VALUE'],
    rows.map((r, i) => [String(i + 1), r.id, ...(priority ? [String(r.priority)] : []), r.claimed ? 'claimed' : 'visible', String(r.receives), showKey(r.key), showValue(items.kvs[i].value)]),
    ['right', 'right', ...(priority ? ['right' as const] : []), 'left', 'right'],
  )
  return { json, text: items.more ? `${text}\n(first ${rows.length}; --limit N shows more)` : text }
}

/** What the first item under `<name>/` says the queue is; undefined when it is empty. */
async function queueKind(client: EtcdClient, name: string): Promise<'priority' | 'fifo' | undefined> {
  const prefix = `${name}/`
  const first = await keyspace(client).range(prefix, { prefix: true, limit: 1 })
  if (first.kvs.length === 0) return undefined
  return PRIORITY_ITEM.test(first.kvs[0].key.slice(prefix.length)) ? 'priority' : 'fifo'
}

/**
 * Enqueues as the queue's own kind: a FIFO-shaped key in a PriorityQueue (or the reverse)
 * would be served out of order by every consumer, so a push that does not match the items
 * already there is refused (exit 2) and writes nothing.
 */
async function push(client: EtcdClient, name: string, value: string, priority: number | undefined): Promise<Report> {
  const kind = await queueKind(client, name)
  if (kind === 'priority' && priority === undefined) {
    throw new UsageError(`queue push: ${JSON.stringify(name)} is a PriorityQueue (its items are <name>/<priority>/<seq>): give --priority N (0 is served first)`, queue)
  }
  if (kind === 'fifo' && priority !== undefined) {
    throw new UsageError(`queue push: ${JSON.stringify(name)} is a FIFO Queue (its items are <name>/<unixNano>): drop --priority`, queue)
  }
  const done = priority === undefined ? await new Queue(client, name).enqueue(value) : await new PriorityQueue(client, name).enqueue(value, priority)
  const json = { queue: name, key: done.key, id: done.id, ...(priority === undefined ? {} : { priority }) }
  return { json, text: `enqueued ${showKey(done.key)} (id ${done.id})` }
}

/**
 * Deletes every item under `<name>/` with its claim markers, receive counters and the
 * PriorityQueue bookkeeping keys `__<name>/*`, in one Txn (all or nothing).
 */
async function purge(client: EtcdClient, name: string): Promise<Report> {
  const ks = keyspace(client)
  const res = await ks.txn([], [`${name}/`, claimsOf(name), receivesOf(name), `__${name}/`].map((p) => ks.delete(p, { prefix: true })))
  const deleted = Number(res.results[0].deleted ?? 0n)
  const claims = Number(res.results[1].deleted ?? 0n)
  return {
    json: { queue: name, deleted, claimsDeleted: claims, revision: revisionNumber(res.revision) },
    text: `purged queue ${showKey(name)}: deleted ${deleted} item${deleted === 1 ? '' : 's'}${claims ? ` (${claims} of them claimed)` : ''}`,
  }
}

export const queue: Command = {
  name: 'queue',
  summary: 'queue depth, claimed and dead-letter counts; peek, push, purge',
  usage: 'queue stats <name> [--dead-letter <queue>]\nqueue peek <name> [--limit N]\nqueue push <name> <value> [--priority N]\nqueue purge <name> --yes',
  help: `Works on a Queue (Go layout <name>/<unixNano>) or PriorityQueue (<name>/<prio>/<seq>):
  stats   items in the queue, how many are visible and how many claimed (received by an
          at-least-once consumer, not yet acked: in flight); with --dead-letter <queue>,
          the items in that dead-letter queue
  peek    the first N items (default ${PEEK_DEFAULT}, at most ${PEEK_MAX}) in the order consumers get
          them, without claiming: id (create revision), state, receive count, value
  push    enqueue <value> (Queue.enqueue; with --priority N, PriorityQueue.enqueue, 0 served first)
  purge   delete every item with its claim and receive-count keys, in one transaction;
          needs --yes, prints how many items went

<name> is a raw key prefix: items of a queue nested under it (<name>/sub/...) count too.`,
  options: {
    limit: { type: 'string' },
    priority: { type: 'string' },
    'dead-letter': { type: 'string' },
    yes: { type: 'boolean' },
  },
  async run({ args, options, connect }: Invocation): Promise<Report> {
    const action = requireArg(queue, args, 0, 'action (stats, peek, push or purge)')
    const only = (allowed: string[]) => {
      for (const option of ['limit', 'priority', 'dead-letter', 'yes']) {
        if (options[option] !== undefined && !allowed.includes(option)) throw new UsageError(`queue ${action}: --${option} does not apply here`, queue)
      }
    }
    switch (action) {
      case 'stats': {
        only(['dead-letter'])
        const name = checkedName(args[1], action)
        noMoreArgs(queue, args, 2)
        const dead = options['dead-letter'] as string | undefined
        return stats(connect(), name, dead === undefined ? undefined : checkName(dead, '--dead-letter'))
      }
      case 'peek': {
        only(['limit'])
        const name = checkedName(args[1], action)
        noMoreArgs(queue, args, 2)
        return peek(connect(), name, intOption(queue, options.limit, 'limit', PEEK_DEFAULT, 1, PEEK_MAX))
      }
      case 'push': {
        only(['priority'])
        const name = checkedName(args[1], action)
        const value = args[2]
        if (value === undefined) throw new UsageError('queue push: missing value', queue)
        noMoreArgs(queue, args, 3)
        const priority = options.priority === undefined ? undefined : intOption(queue, options.priority, 'priority', 0, 0, MAX_PRIORITY)
        return push(connect(), name, value, priority)
      }
      case 'purge': {
        only(['yes'])
        const name = checkedName(args[1], action)
        noMoreArgs(queue, args, 2)
        if (options.yes !== true) throw new UsageError(`queue purge deletes every item of ${JSON.stringify(name)}: add --yes to confirm`, queue)
        return purge(connect(), name)
      }
      default:
        throw new UsageError(`queue: unknown action ${JSON.stringify(action)} (use stats, peek, push or purge)`, queue)
    }
  },
}

function checkedName(name: string | undefined, action: string): string {
  if (name === undefined || name === '') throw new UsageError(`queue ${action}: missing queue name`, queue)
  return name
}
