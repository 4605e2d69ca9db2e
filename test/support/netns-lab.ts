/**
 * The partition lab: a {@link Network} with a 3-member etcd (hosts e1, e2, e3), an observer
 * host (`admin`, never cut off, for checks), client hosts c1..cN each running a
 * `netns-agent.ts` process, and optionally a PostgreSQL server on host `db`. Plus the cuts of
 * the partition scenarios, each decided from the current raft leader.
 */
import { fileURLToPath } from 'node:url'
import { startNetnsEtcd, type NetnsEtcd } from './netns-etcd.js'
import { Network } from './netns.js'
import { startPostgres, type PgServer } from './postgres.js'
import { Worker } from './workers.js'

/** The etcd members' host names. */
export const MEMBERS = ['e1', 'e2', 'e3']
const AGENT = fileURLToPath(new URL('./netns-agent.ts', import.meta.url))

/** A running lab. */
export interface Lab {
  net: Network
  etcd: NetnsEtcd
  /** Agent processes by host: `admin`, `c1`, … */
  agents: Map<string, Worker>
  /** Client hosts, `c1`…`cN`. */
  clients: string[]
  pg?: PgServer
  stop(): Promise<void>
}

/** Starts the network, the cluster (`etcdArgs`: extra member flags), the agents and (optionally) Postgres; tears all down on failure. */
export async function startLab(options: { clients?: number; postgres?: boolean; etcdArgs?: string[] } = {}): Promise<Lab> {
  const clients = Array.from({ length: options.clients ?? 3 }, (_, i) => `c${i + 1}`)
  const net = await Network.create([...MEMBERS, 'admin', ...clients, ...(options.postgres ? ['db'] : [])])
  const agents = new Map<string, Worker>()
  let pg: PgServer | undefined
  const stop = async () => {
    await Promise.all([...agents.values()].map((a) => a.kill()))
    await pg?.stop().catch(() => {})
    await net.destroy()
  }
  try {
    const etcd = await startNetnsEtcd(net, MEMBERS, 'admin', options.etcdArgs)
    if (options.postgres) {
      pg = await startPostgres({ on: { net, host: 'db' } })
      await pg.admin.query('CREATE TABLE fenced_rows (id text PRIMARY KEY, value text NOT NULL, fence bigint NOT NULL)')
    }
    // One at a time: each start compiles TypeScript, and the machine's two cores are shared.
    for (const host of ['admin', ...clients])
      agents.set(host, await Worker.start(etcd.endpoints, '', { netns: net.host(host).ns, script: AGENT }))
    return { net, etcd, agents, clients, pg, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/** How a scenario splits the lab: who is cut off (the victim client c1 and members), how. */
export interface Arrangement {
  /** What is cut, in words (for the report). */
  cut: string
  /** Endpoints the victim client (c1) uses. */
  victimEndpoints: string[]
  /** Endpoints the majority clients (c2, c3, …) use. */
  majorityEndpoints: string[]
  /** Members that keep quorum. */
  majority: string[]
  /** Applies the cut. */
  apply(): Promise<void>
}

/** Decides a scenario's cut from the lab and the current raft leader. */
export type Scenario = (lab: Lab, leader: string) => Arrangement

const others = (lab: Lab, exclude: string[]) => lab.etcd.members.filter((m) => !exclude.includes(m))
const endpoints = (lab: Lab, members: string[]) => members.map((m) => lab.etcd.endpoint(m))
const majorityClients = (lab: Lab) => lab.clients.filter((c) => c !== 'c1')

/** 1. The raft leader and its client (c1, attached to it only) cut off from both followers and their clients. */
export const leaderIsolated: Scenario = (lab, leader) => {
  const followers = others(lab, [leader])
  return {
    cut: `leader ${leader} + c1 | ${followers.join(', ')} + ${majorityClients(lab).join(', ')}`,
    victimEndpoints: endpoints(lab, [leader]),
    majorityEndpoints: endpoints(lab, followers),
    majority: followers,
    apply: () => lab.net.partition([leader, 'c1'], [...followers, ...majorityClients(lab)]),
  }
}

/** 2. A client (c1, configured with every member) cut off from every member; it still reaches the database. */
export const clientCutOff: Scenario = (lab) => ({
  cut: `c1 | ${lab.etcd.members.join(', ')} (c1 still reaches db)`,
  victimEndpoints: lab.etcd.endpoints,
  majorityEndpoints: lab.etcd.endpoints,
  majority: lab.etcd.members,
  apply: () => lab.net.partition(['c1'], lab.etcd.members),
})

/** 3a. The leader can send to the followers but receives nothing from them; c1 stays attached to it. */
export const leaderSendOnly: Scenario = (lab, leader) => {
  const followers = others(lab, [leader])
  return {
    cut: `${followers.join(', ')} -> ${leader} dropped (leader sends, cannot receive)`,
    victimEndpoints: endpoints(lab, [leader]),
    majorityEndpoints: endpoints(lab, followers),
    majority: followers,
    apply: () => lab.net.block(followers, leader),
  }
}

/** 3b. The leader receives from the followers but cannot send to them; c1 stays attached to it. */
export const leaderReceiveOnly: Scenario = (lab, leader) => {
  const followers = others(lab, [leader])
  return {
    cut: `${leader} -> ${followers.join(', ')} dropped (leader receives, cannot send)`,
    victimEndpoints: endpoints(lab, [leader]),
    majorityEndpoints: endpoints(lab, followers),
    majority: followers,
    apply: () => lab.net.block(leader, followers),
  }
}

/** 4. A follower and its client (c1, attached to it only) cut off from the two other members. */
export const minorityMember: Scenario = (lab, leader) => {
  const minority = others(lab, [leader])[0]
  const majority = others(lab, [minority])
  return {
    cut: `follower ${minority} + c1 | ${majority.join(', ')} + ${majorityClients(lab).join(', ')}`,
    victimEndpoints: endpoints(lab, [minority]),
    majorityEndpoints: endpoints(lab, majority),
    majority,
    apply: () => lab.net.partition([minority, 'c1'], [...majority, ...majorityClients(lab)]),
  }
}
