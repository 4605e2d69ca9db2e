/**
 * Fault injection on a 3-member test cluster: find the raft leader, and stop / restart members
 * one at a time (the leader first), so the cluster keeps quorum while clients must fail over.
 */
import type { Etcd3 } from 'etcd3'
import { createClient } from '../../lib/index.js'
import type { EtcdCluster } from '../../testing/index.js'
import { machineNow } from './history.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** One injected fault: which member was down, from when to when (wall-clock ms). */
export interface Outage {
  member: number
  wasLeader: boolean
  from: number
  to: number
}

/**
 * The index of the raft leader among `cluster.endpoints`, asked through the maintenance Status
 * API of each running member (each reports its own member id and the leader's); undefined when
 * no running member knows one.
 */
export async function leaderIndex(cluster: EtcdCluster): Promise<number | undefined> {
  const pids = cluster.pids()
  const ids: (string | undefined)[] = []
  let leader: string | undefined
  for (let i = 0; i < cluster.endpoints.length; i++) {
    if (pids[i] === undefined) continue
    const client = createClient({ endpoints: [cluster.endpoints[i]], callTimeoutMs: 2000, env: {} }) as unknown as Etcd3
    try {
      const status = await client.maintenance.status()
      ids[i] = status.header.member_id
      if (status.leader !== '0') leader = status.leader
    } catch {
      // a member that does not answer is no help
    } finally {
      client.close()
    }
  }
  const index = ids.findIndex((id) => id !== undefined && id === leader)
  return index >= 0 ? index : undefined
}

export interface FaultOptions {
  /** How long each member stays down, ms. */
  downMs: number
  /** Pause after a member is back before the next fault, ms. */
  upMs: number
  /**
   * Pause after each full round (every member restarted once), ms. etcd 3.4 resets every
   * lease to its full TTL when leadership changes, so under non-stop restarts short leases
   * never expire; a quiet spell longer than the TTL lets them (see docs/RELIABILITY.md).
   */
  quietMs?: number
  /** Keep cycling until this returns true (checked between rounds); default: one round. */
  until?: () => boolean
  /** Called after each fault with the outage. */
  onFault?: (outage: Outage) => void
}

/**
 * Stops and restarts each member in turn: the current leader first, then the others, then
 * (while `until` says so) again from the then-current leader. At most one member is down at a
 * time. Returns every outage.
 */
export async function cycleFaults(cluster: EtcdCluster, options: FaultOptions): Promise<Outage[]> {
  const outages: Outage[] = []
  const n = cluster.endpoints.length
  do {
    // "The leader first" needs a leader: right after a restart, or with a member slow to answer
    // Status on a loaded machine, there may be none known for a moment.
    let leader = await leaderIndex(cluster)
    for (let tries = 0; leader === undefined && tries < 20; tries++) {
      await sleep(250)
      leader = await leaderIndex(cluster)
    }
    const order = leader === undefined ? [...Array(n).keys()] : [leader, ...[...Array(n).keys()].filter((i) => i !== leader)]
    for (const member of order) {
      const from = machineNow()
      await cluster.stopMember(member)
      await sleep(options.downMs)
      await cluster.startMember(member)
      const outage = { member, wasLeader: member === leader, from, to: machineNow() }
      outages.push(outage)
      options.onFault?.(outage)
      await sleep(options.upMs)
    }
    if (options.until && !options.until() && options.quietMs) await sleep(options.quietMs)
  } while (options.until && !options.until())
  return outages
}
