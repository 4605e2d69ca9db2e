/**
 * A 3-member etcd cluster whose members each run in their own namespace of a {@link Network}
 * (`ip netns exec <ns> etcd …`), with the flags `testing/etcd.ts` uses (50 ms heartbeat, 500 ms
 * election timeout). The test process cannot reach those addresses itself, so health and raft
 * status are asked with `etcdctl` run inside an observer host's namespace.
 */
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { EtcdNotFoundError, resolveEtcdBin } from '../../offline/etcd-process.js'
import { etcdProcessEnv } from '../../offline/etcd-release.js'
import type { Network } from './netns.js'

const CLIENT_PORT = 2379
const PEER_PORT = 2380

/** What one member says about itself and the raft leader. */
export interface MemberStatus {
  member: string
  /** The host name of the member it takes for the leader (undefined: none). */
  leader?: string
  raftTerm: string
  revision: string
}

/** A running cluster in namespaces, and what the observer can ask it. */
export interface NetnsEtcd {
  /** Host names of the members, in start order. */
  members: string[]
  /** `http://<ip>:2379` of each member, same order. */
  endpoints: string[]
  endpoint(member: string): string
  /** The member's own view, asked from `observer` (undefined if it does not answer within 1 s). */
  status(member: string): Promise<MemberStatus | undefined>
  /** The leader that every answering member of `among` agrees on (undefined: none, or no agreement). */
  leader(among?: string[]): Promise<string | undefined>
  /** Waits until the members of `among` agree on a leader (not `not`); returns it. */
  waitForLeader(options?: { among?: string[]; not?: string; timeoutMs?: number }): Promise<string>
  /** Recent log lines of a member (warnings and errors). */
  logs(member: string): string[]
  stop(): Promise<void>
}

/** Starts one member on each host of `members` (with `extraArgs` on top) and waits until all are healthy. */
export async function startNetnsEtcd(net: Network, members: string[], observer: string, extraArgs: string[] = []): Promise<NetnsEtcd> {
  const bin = resolveEtcdBin()
  if (spawnSync('sh', ['-c', 'command -v etcdctl'], { stdio: 'ignore' }).status !== 0) {
    throw new EtcdNotFoundError('etcdctl')
  }
  const peer = (m: string) => `http://${net.ip(m)}:${PEER_PORT}`
  const endpoint = (m: string) => `http://${net.ip(m)}:${CLIENT_PORT}`
  const initialCluster = members.map((m) => `${m}=${peer(m)}`).join(',')
  const logs = new Map(members.map((m) => [m, [] as string[]]))
  const procs = members.map((m) => {
    const proc = net.spawn(
      m,
      bin,
      [
        `--name=${m}`,
        `--data-dir=${join(net.dir, `etcd-${m}`)}`,
        `--listen-client-urls=${endpoint(m)}`,
        `--advertise-client-urls=${endpoint(m)}`,
        `--listen-peer-urls=${peer(m)}`,
        `--initial-advertise-peer-urls=${peer(m)}`,
        `--initial-cluster=${initialCluster}`,
        `--initial-cluster-token=${net.subnet}`,
        '--initial-cluster-state=new',
        '--heartbeat-interval=50',
        '--election-timeout=500',
        '--logger=zap',
        '--log-level=warn',
        ...extraArgs,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: etcdProcessEnv() },
    )
    for (const stream of [proc.stdout!, proc.stderr!]) {
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        const lines = logs.get(m)!
        lines.push(...chunk.split('\n').filter(Boolean))
        if (lines.length > 400) lines.splice(0, lines.length - 400)
      })
    }
    return proc
  })

  const ids = new Map<string, string>() // member id (decimal) -> host name
  const ctl = (args: string[]) => net.exec(observer, 'etcdctl', ['--dial-timeout=1s', '--command-timeout=1s', ...args], 3000)

  const status = async (member: string): Promise<MemberStatus | undefined> => {
    let out: string
    try {
      out = await ctl([`--endpoints=${endpoint(member)}`, 'endpoint', 'status', '-w', 'json'])
    } catch {
      return undefined
    }
    // Member ids are uint64: keep them as strings rather than lose precision in JSON.parse.
    const parsed = JSON.parse(out.replace(/"(member_id|leader|cluster_id)":(\d+)/g, '"$1":"$2"'))[0].Status
    ids.set(parsed.header.member_id, member)
    // etcdctl leaves `leader` out when the member knows none.
    const leader = parsed.leader === undefined || parsed.leader === '0' ? undefined : (ids.get(parsed.leader) ?? `id:${parsed.leader}`)
    return { member, leader, raftTerm: String(parsed.raftTerm), revision: String(parsed.header.revision) }
  }

  const cluster: NetnsEtcd = {
    members,
    endpoints: members.map(endpoint),
    endpoint,
    status,
    async leader(among = members) {
      // Learn every member's id first, so a leader id maps to its host name.
      if (ids.size < members.length) await Promise.all(members.map(status))
      const views = (await Promise.all(among.map(status))).filter((s): s is MemberStatus => s !== undefined)
      const named = new Set(views.map((s) => s.leader))
      if (views.length === 0 || named.size !== 1) return undefined
      return views[0].leader
    },
    async waitForLeader({ among = members, not, timeoutMs = 20_000 } = {}) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const leader = await cluster.leader(among)
        if (leader && leader !== not && !leader.startsWith('id:')) return leader
        if (Date.now() > deadline)
          throw new Error(`no leader agreed by ${among.join(', ')}${not ? ` other than ${not}` : ''} within ${timeoutMs} ms`)
        await new Promise((r) => setTimeout(r, 100))
      }
    },
    logs: (m) => [...(logs.get(m) ?? [])],
    async stop() {
      const exits = procs.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r))))
      for (const p of procs) p.kill('SIGKILL')
      await Promise.all(exits)
    },
  }

  const deadline = Date.now() + 30_000
  for (;;) {
    const exited = procs.findIndex((p) => p.exitCode !== null || p.signalCode !== null)
    if (exited >= 0)
      throw new Error(`etcd member ${members[exited]} exited during start-up: ${cluster.logs(members[exited]).slice(-5).join('\n')}`)
    const ok = await ctl([`--endpoints=${cluster.endpoints.join(',')}`, 'endpoint', 'health']).then(
      () => true,
      () => false,
    )
    if (ok) break
    if (Date.now() > deadline)
      throw new Error(
        `etcd cluster in namespaces not healthy within 30 s: ${members.map((m) => cluster.logs(m).slice(-3).join('\n')).join('\n')}`,
      )
    await new Promise((r) => setTimeout(r, 200))
  }
  await cluster.waitForLeader()
  return cluster
}
