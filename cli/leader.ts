import { leaseHex } from '../lib/core/keys.js'
import { keyspace, type KeyValue } from '../lib/core/kv.js'
import { leaseTtls, noMoreArgs, requireArg, revisionNumber, type Command, type Report } from './common.js'
import { fields, jsonValue, showKey, showTtl, showValue, table, type LeaseTtl } from './table.js'

/**
 * `leader <election>`: the leader of a Go-compatible election (`<name>/<leaseHex>`, value = the
 * proposal; the lowest create revision under `<name>/` leads, as Go's `Election.Leader`) and
 * the candidates queued behind it, oldest first.
 */

/** Candidates listed at most: far more than any healthy election has queued. */
const MAX_CANDIDATES = 1000

function candidate(kv: KeyValue, ttls: Map<string, LeaseTtl>) {
  const ttl = ttls.get(kv.lease)
  return {
    key: kv.key,
    ...jsonValue(kv.value),
    rev: revisionNumber(kv.createRevision),
    modRevision: revisionNumber(kv.modRevision),
    lease: kv.lease === '0' ? null : leaseHex(kv.lease),
    leaseId: kv.lease,
    ttl: ttl?.remaining ?? null,
    grantedTtl: ttl?.granted ?? null,
  }
}

function render(name: string, kvs: KeyValue[], more: boolean, ttls: Map<string, LeaseTtl>): string {
  if (kvs.length === 0) return `election ${JSON.stringify(name)}: no leader (nobody is campaigning)`
  const [leader, ...waiting] = kvs
  const lease = (kv: KeyValue) => (kv.lease === '0' ? '-' : leaseHex(kv.lease))
  const lines = [
    fields([
      ['election', showKey(name)],
      ['leader', showKey(leader.key)],
      ['proposal', showValue(leader.value, 60)],
      ['rev', `${leader.createRevision} (leader since; proclaimed at ${leader.modRevision})`],
      ['lease', `${lease(leader)}  ttl ${showTtl(ttls.get(leader.lease))}`],
    ]),
  ]
  if (waiting.length > 0) {
    lines.push('', `candidates waiting (${waiting.length}${more ? '+' : ''}):`)
    lines.push(
      table(
        ['KEY', 'PROPOSAL', 'REV', 'LEASE', 'TTL'],
        waiting.map((kv) => [showKey(kv.key), showValue(kv.value), String(kv.createRevision), lease(kv), showTtl(ttls.get(kv.lease))]),
        ['left', 'left', 'right'],
      ),
    )
  } else {
    lines.push('', 'no candidates waiting')
  }
  return lines.join('\n')
}

export const leader: Command = {
  name: 'leader',
  summary: 'show the leader of an election and the candidates waiting',
  usage: 'leader <election>',
  help: `Shows the leader of the election <election> (Go / etcdctl elect layout: candidate keys
<election>/<leaseHex>, value = proposal; the oldest key leads) with its proposal, the
revision it became leader at (rev), its lease and the lease's remaining/granted TTL, then the
candidates waiting behind it, oldest first.

With no candidates it says "no leader" (exit status 0; --json gives "leader": null).`,
  async run({ args, connect }): Promise<Report> {
    const name = requireArg(leader, args, 0, 'election name')
    noMoreArgs(leader, args, 1)
    const client = connect()
    const res = await keyspace(client).range(`${name}/`, { prefix: true, sort: ['Create', 'Ascend'], limit: MAX_CANDIDATES })
    const ttls = await leaseTtls(
      client,
      res.kvs.map((kv) => kv.lease),
    )
    const [first, ...waiting] = res.kvs.map((kv) => candidate(kv, ttls))
    return {
      json: { election: name, revision: revisionNumber(res.revision), leader: first ?? null, candidates: waiting, more: res.more },
      text: render(name, res.kvs, res.more, ttls),
    }
  },
}
