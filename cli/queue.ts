import type { EtcdClient } from '../lib/core/client.js'
import { chunked } from '../lib/queue/moves.js'
import { KeyPager } from '../lib/queue/key-windows.js'
import { queueKeys, queueOfDeadLetterQueue } from '../lib/core/keys.js'
import { checkName, keyspace, type KeyValue } from '../lib/core/kv.js'
import { VALUES_PER_RESPONSE } from '../lib/limits.js'
import { MAX_PRIORITY, PriorityQueue } from '../lib/queue/priority-queue.js'
import { Queue } from '../lib/queue/queue.js'
import { intOption, noMoreArgs, requireArg, revisionNumber, UsageError, type Command, type Invocation, type Report } from './common.js'
import { fields, jsonValue, showKey, showValue, table } from './table.js'

/**
 * `queue stats|peek|push|purge <name>`: a Go-layout Queue (`<name>/<unixNano>`) or
 * PriorityQueue (`<name>/<%05d prio>/<%016d seq>`), with the at-least-once claim keys of
 * lib/core/keys.ts `queueKeys`: a claimed (in-flight) item has a marker `__claims/<itemKey>/<createRev>` on
 * the receiver's lease, and `__receives/<itemKey>/<createRev>` counts its receives (version).
 */

const PEEK_DEFAULT = 10
/** Most items one peek shows. */
const PEEK_MAX = 100

const markerOf = (kv: KeyValue) => queueKeys.marker(kv.key, kv.createRevision)
const counterOf = (kv: KeyValue) => queueKeys.counter(kv.key, kv.createRevision)

/**
 * Items, claimed items (claim markers), delayed messages, messages waiting behind their group's
 * head and, if named, the dead-letter queue's items.
 */
async function stats(client: EtcdClient, name: string, deadLetter: string | undefined): Promise<Report> {
  const ks = keyspace(client)
  const count = async (prefix: string) => Number((await ks.range(prefix, { prefix: true, countOnly: true })).count)
  const [items, claimed, delayed, waiting, dead] = await Promise.all([
    new Queue(client, name).size(),
    count(queueKeys.claims(name)),
    count(queueKeys.delayed(name)),
    count(queueKeys.groupsWaiting(name)),
    deadLetter === undefined ? undefined : new Queue(client, deadLetter).size(),
  ])
  // A marker can outlive its item for a moment (a Go Dequeue took a claimed item): never below 0.
  const visible = Math.max(0, items - claimed)
  const json = {
    queue: name,
    items,
    visible,
    claimed,
    delayed,
    waitingInGroups: waiting,
    deadLetter: deadLetter === undefined ? null : { queue: deadLetter, items: dead },
  }
  const text = fields([
    ['queue', showKey(name)],
    ['items', String(items)],
    ['visible', String(visible)],
    ['claimed', `${claimed} (in flight: received, not yet acked; or waiting out a retry delay)`],
    ['delayed', `${delayed} (not in the queue until their delay has passed)`],
    ['in groups', `${waiting} (waiting behind an earlier message of their group)`],
    ['dead-letter', deadLetter === undefined ? '- (name it with --dead-letter <queue>)' : `${dead} in ${showKey(deadLetter)}`],
  ])
  return { json, text }
}

/**
 * The first `limit` items in the order consumers get them (key order: a Queue's producer
 * timestamps, a PriorityQueue's priority then sequence), without claiming any, each with its
 * claim state and receive count. Keys are listed in bounded windows; values, markers and
 * counters read at the same revision, as many values per Txn as surely fit one answer.
 */
export async function peek(client: EtcdClient, name: string, limit: number): Promise<Report> {
  const ks = keyspace(client)
  const prefix = queueKeys.items(name)
  const pager = new KeyPager(ks, prefix, limit)
  const keys: KeyValue[] = []
  let revision: bigint | undefined
  let left = false
  while (keys.length < limit && !pager.done) {
    const page = await pager.next(revision === undefined ? {} : { revision })
    revision ??= page.revision
    left = page.kvs.length > limit - keys.length
    keys.push(...page.kvs.slice(0, limit - keys.length))
  }
  const more = left || !pager.done
  const at = { revision: revision ?? 0n }
  const state = await Promise.all(
    chunked(keys, VALUES_PER_RESPONSE).map(async (chunk) => {
      const { results } = await ks.reads(
        Object.fromEntries(
          chunk.flatMap((kv, i) => [
            [`item ${i}`, ks.get(kv.key, at)],
            [`marker ${i}`, ks.get(markerOf(kv), { ...at, countOnly: true })],
            [`counter ${i}`, ks.get(counterOf(kv), { ...at, keysOnly: true })],
          ]),
        ),
      )
      return chunk.map((_, i) => ({
        item: results[`item ${i}`].kvs[0],
        claimed: results[`marker ${i}`].count > 0n,
        receives: Number(results[`counter ${i}`].kvs[0]?.version ?? 0n),
      }))
    }),
  )
  const items = state.flat().filter((s) => s.item !== undefined)
  const priority = items.length > 0 && queueKeys.priorityOf(name, items[0].item!.key) !== undefined
  const rows = items.map(({ item, claimed, receives }) => ({
    key: item!.key,
    id: item!.createRevision.toString(),
    ...(priority ? { priority: queueKeys.priorityOf(name, item!.key) } : {}),
    claimed,
    receives,
    ...jsonValue(item!.value),
  }))
  const json = { queue: name, kind: priority ? 'priority' : 'fifo', revision: revisionNumber(at.revision), items: rows, more }
  if (rows.length === 0) return { json, text: `queue ${JSON.stringify(name)} is empty` }
  const text = table(
    ['#', 'ID', ...(priority ? ['PRIO'] : []), 'STATE', 'RECEIVES', 'KEY', 'VALUE'],
    rows.map((r, i) => [
      String(i + 1),
      r.id,
      ...(priority ? [String(r.priority)] : []),
      r.claimed ? 'claimed' : 'visible',
      String(r.receives),
      showKey(r.key),
      showValue(items[i].item!.value),
    ]),
    ['right', 'right', ...(priority ? ['right' as const] : []), 'left', 'right'],
  )
  return { json, text: more ? `${text}\n(first ${rows.length}; --limit N shows more)` : text }
}

/** What the first item under `<name>/` says the queue is; undefined when it is empty. */
async function queueKind(client: EtcdClient, name: string): Promise<'priority' | 'fifo' | undefined> {
  const first = await keyspace(client).range(queueKeys.items(name), { prefix: true, limit: 1, keysOnly: true })
  if (first.kvs.length === 0) return undefined
  return queueKeys.priorityOf(name, first.kvs[0].key) !== undefined ? 'priority' : 'fifo'
}

/**
 * Enqueues as the queue's own kind: a FIFO-shaped key in a PriorityQueue (or the reverse)
 * would be served out of order by every consumer, so a push that does not match the items
 * already there is refused (exit 2) and writes nothing.
 */
async function push(client: EtcdClient, name: string, value: string, priority: number | undefined): Promise<Report> {
  const kind = await queueKind(client, name)
  if (kind === 'priority' && priority === undefined) {
    throw new UsageError(
      `queue push: ${JSON.stringify(name)} is a PriorityQueue (its items are <name>/<priority>/<seq>): give --priority N (0 is served first)`,
      queue,
    )
  }
  if (kind === 'fifo' && priority !== undefined) {
    throw new UsageError(`queue push: ${JSON.stringify(name)} is a FIFO Queue (its items are <name>/<unixNano>): drop --priority`, queue)
  }
  const done =
    priority === undefined ? await new Queue(client, name).enqueue(value) : await new PriorityQueue(client, name).enqueue(value, priority)
  const json = { queue: name, key: done.key, id: done.id, ...(priority === undefined ? {} : { priority }) }
  return { json, text: `enqueued ${showKey(done.key)} (id ${done.id})` }
}

/**
 * Deletes every item under `<name>/` with its claim markers, receive counters and metadata, the
 * PriorityQueue bookkeeping keys `__<name>/*`, delayed messages and their timers, and message
 * groups, in one Txn (all or nothing).
 */
export async function purge(client: EtcdClient, name: string): Promise<Report> {
  const ks = keyspace(client)
  const all = (prefix: string) => ks.deleteOp(prefix, { prefix: true })
  const res = await ks.namedTxn([], {
    items: all(queueKeys.items(name)),
    claims: all(queueKeys.claims(name)),
    receives: all(queueKeys.receives(name)),
    buckets: all(queueKeys.buckets(name)),
    metas: all(queueKeys.metas(name)),
    delayed: all(queueKeys.delayed(name)),
    timers: all(queueKeys.timers(name)),
    groupsWaiting: all(queueKeys.groupsWaiting(name)),
    groupHeads: all(queueKeys.groupHeads(name)),
  })
  // No compare: the success branch always runs.
  const deletedOf = (what: 'items' | 'claims' | 'delayed' | 'groupsWaiting') => (res.succeeded ? Number(res.results[what]) : 0)
  const [deleted, claims, delayed, waiting] = [deletedOf('items'), deletedOf('claims'), deletedOf('delayed'), deletedOf('groupsWaiting')]
  const also = [claims && `${claims} of them claimed`, delayed && `${delayed} delayed`, waiting && `${waiting} waiting in groups`].filter(
    Boolean,
  )
  return {
    json: {
      queue: name,
      deleted,
      claimsDeleted: claims,
      delayedDeleted: delayed,
      waitingDeleted: waiting,
      revision: revisionNumber(res.revision),
    },
    text: `purged queue ${showKey(name)}: deleted ${deleted} item${deleted === 1 ? '' : 's'}${also.length ? ` (${also.join(', ')})` : ''}`,
  }
}

/**
 * Removes what consumers that know only Go's layout left behind in queue `name`
 * (`Queue.sweep`): receive counters, metadata and claim markers of messages a Go `Dequeue`
 * took, and the heads of groups whose current message it took (their turn passes on).
 */
async function sweep(client: EtcdClient, name: string): Promise<Report> {
  const done = await new Queue(client, name).sweep()
  const json = { queue: name, ...done }
  const parts = [
    `${done.counters} receive counter${done.counters === 1 ? '' : 's'}`,
    `${done.metadata} metadata key${done.metadata === 1 ? '' : 's'}`,
    `${done.markers} claim marker${done.markers === 1 ? '' : 's'}`,
  ]
  return {
    json,
    text: `swept queue ${showKey(name)}: removed ${parts.join(', ')} of messages no longer queued; passed the turn of ${done.groups} group${done.groups === 1 ? '' : 's'} on`,
  }
}

/** The queue a dead-letter queue's messages go back to unless `--to` says: `<name>` for `dlq/<name>`. */
export function redriveTarget(dlq: string, to: string | undefined): string {
  if (to !== undefined) return checkName(to, '--to')
  const queueOfDlq = queueOfDeadLetterQueue(dlq)
  if (queueOfDlq !== undefined) return queueOfDlq
  throw new UsageError(
    `queue redrive: ${JSON.stringify(dlq)} is not a default dead-letter queue (dlq/<queue>): name the queue to move its messages to with --to <queue>`,
    queue,
  )
}

/**
 * Moves up to `max` messages from dead-letter queue `dlq` back into `to` (`Queue.redrive`: one
 * Txn per message, receive counts reset). The target is a PriorityQueue when its items or the
 * dead letters' metadata say so.
 */
export async function redriveCommand(client: EtcdClient, dlq: string, to: string, max: number | undefined): Promise<Report> {
  const ks = keyspace(client)
  const [items, metas] = await Promise.all([
    ks.range(queueKeys.items(to), { prefix: true, limit: 1, keysOnly: true }),
    ks.range(queueKeys.metas(dlq), { prefix: true, limit: 1 }),
  ])
  const priority =
    (items.kvs.length > 0 && queueKeys.priorityOf(to, items.kvs[0].key) !== undefined) ||
    (metas.kvs.length > 0 && /"priority":/.test(metas.kvs[0].value.toString()))
  const target = priority ? new PriorityQueue(client, to) : new Queue(client, to)
  const done = await target.redrive({ from: dlq, ...(max === undefined ? {} : { max }) })
  const json = { from: dlq, to, kind: priority ? 'priority' : 'fifo', ...done }
  const skipped = done.skipped ? `; ${done.skipped} left there (claimed by a consumer of ${showKey(dlq)})` : ''
  return {
    json,
    text: `moved ${done.moved} message${done.moved === 1 ? '' : 's'} from ${showKey(dlq)} back to ${showKey(to)}, receive counts reset${skipped}`,
  }
}

export const queue: Command = {
  name: 'queue',
  summary: 'queue depth, claimed, delayed and dead-letter counts; peek, push, purge, redrive, sweep',
  usage:
    'queue stats <name> [--dead-letter <queue>]\nqueue peek <name> [--limit N]\nqueue push <name> <value> [--priority N]\nqueue purge <name> --yes\nqueue redrive <dlq> [--to <queue>] [--max N]\nqueue sweep <name>',
  help: `Works on a Queue (Go layout <name>/<unixNano>) or PriorityQueue (<name>/<prio>/<seq>):
  stats   items in the queue, how many are visible and how many claimed (received by an
          at-least-once consumer, not yet acked: in flight, or waiting out a retry delay),
          delayed messages and messages waiting behind their group; with --dead-letter
          <queue>, the items in that dead-letter queue
  peek    the first N items (default ${PEEK_DEFAULT}, at most ${PEEK_MAX}) in the order consumers get
          them (key order), without claiming: id (create revision), state, receive count, value
  push    enqueue <value> (Queue.enqueue; with --priority N, PriorityQueue.enqueue, 0 served first)
  purge   delete every item with its claim and receive-count keys, delayed and grouped
          messages, in one transaction; needs --yes, prints how many items went
  redrive move the messages of dead-letter queue <dlq> back (oldest first, at most --max N),
          each in one transaction:
          an interrupted redrive loses and doubles nothing, run it again for the rest;
          receive counts start again. --to defaults to <queue> for dlq/<queue>
  sweep   remove what Go consumers (a Go Dequeue deletes the item only) left behind: receive
          counters, metadata and claim markers of messages no longer queued; pass the turn of
          groups whose current message a Go Dequeue took on. Consumers of this library do the
          same a page at a time; this does the whole queue now

<name> is a raw key prefix: items of a queue nested under it (<name>/sub/...) count too.`,
  options: {
    limit: { type: 'string' },
    priority: { type: 'string' },
    'dead-letter': { type: 'string' },
    yes: { type: 'boolean' },
    to: { type: 'string' },
    max: { type: 'string' },
  },
  async run({ args, options, connect }: Invocation): Promise<Report> {
    const action = requireArg(queue, args, 0, 'action (stats, peek, push, purge, redrive or sweep)')
    const only = (allowed: string[]) => {
      for (const option of ['limit', 'priority', 'dead-letter', 'yes', 'to', 'max']) {
        if (options[option] !== undefined && !allowed.includes(option))
          throw new UsageError(`queue ${action}: --${option} does not apply here`, queue)
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
        if (options.yes !== true)
          throw new UsageError(`queue purge deletes every item of ${JSON.stringify(name)}: add --yes to confirm`, queue)
        return purge(connect(), name)
      }
      case 'redrive': {
        only(['to', 'max'])
        const dlq = checkedName(args[1], action)
        noMoreArgs(queue, args, 2)
        const to = redriveTarget(dlq, options.to as string | undefined)
        const max = options.max === undefined ? undefined : intOption(queue, options.max, 'max', 1, 1)
        return redriveCommand(connect(), dlq, to, max)
      }
      case 'sweep': {
        only([])
        const name = checkedName(args[1], action)
        noMoreArgs(queue, args, 2)
        return sweep(connect(), name)
      }
      default:
        throw new UsageError(`queue: unknown action ${JSON.stringify(action)} (use stats, peek, push, purge, redrive or sweep)`, queue)
    }
  },
}

function checkedName(name: string | undefined, action: string): string {
  if (name === undefined || name === '') throw new UsageError(`queue ${action}: missing queue name`, queue)
  return name
}
