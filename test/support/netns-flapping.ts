/**
 * Flapping partitions, for the soak: for a while (a minute by default) a random cut is applied every
 * 0.5–2 s — a member cut off, the leader isolated, a member that only sends or only receives, a
 * client cut off from every member or from one — healed, and replaced by the next, while every
 * client runs lock (with fenced Postgres writes), leader-guard, consumer and STM loops and one
 * produces messages. Then everything heals and drains, and the same checks as the scenarios run.
 */
import { machineNow } from './history.js'
import { MEMBERS, startLab, type Lab } from './netns-lab.js'
import { analyse, formatReport, type ScenarioReport } from './netns-report.js'
import { leftoverKeys, scenarioNames, startLoop, stopAll } from './netns-scenario.js'
import type { Worker } from './workers.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const pick = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]

/** One random cut; returns its kind and what it did, in words. */
async function randomCut(lab: Lab): Promise<{ kind: string; what: string }> {
  const { net, etcd } = lab
  const member = pick(MEMBERS)
  const rest = MEMBERS.filter((m) => m !== member)
  const client = pick(lab.clients)
  const isolateLeader = async () => {
    const leader = (await etcd.leader()) ?? member
    await net.partition([leader, client], [...MEMBERS.filter((m) => m !== leader), ...lab.clients.filter((c) => c !== client)])
  }
  const cuts: [string, string, () => Promise<void>][] = [
    ['member cut off', `${member} | ${rest.join(',')}`, () => net.partition([member], rest)],
    ['leader + client isolated', `the leader + ${client} | rest`, isolateLeader],
    ['member only sends', `${rest.join(',')} -> ${member} dropped`, () => net.block(rest, member)],
    ['member only receives', `${member} -> ${rest.join(',')} dropped`, () => net.block(member, rest)],
    ['client cut off', `${client} | every member`, () => net.partition([client], MEMBERS)],
    ['client cut from one member', `${client} | ${member}`, () => net.partition([client], [member])],
  ]
  const [kind, what, apply] = pick(cuts)
  await apply()
  return { kind, what }
}

/** What a flapping soak found. */
export interface FlappingResult {
  report: ScenarioReport
  cuts: number
  kinds: Record<string, number>
  /** Lock grants in each 10 s from the first cut on. */
  grantsPer10s: number[]
}

/** Runs the flapping soak on a fresh lab (`etcdArgs`: extra etcd flags); `onCut` hears each cut. */
export async function flappingSoak(o: {
  seconds: number
  ttl?: number
  etcdArgs?: string[]
  onCut?: (what: string) => void
}): Promise<FlappingResult> {
  const ttl = o.ttl ?? 3
  const lab = await startLab({ clients: 3, postgres: true, etcdArgs: o.etcdArgs })
  try {
    const label = `flap-${Date.now()}`
    const names = scenarioNames(label)
    const pg = { host: lab.pg!.host, port: lab.pg!.port, user: lab.pg!.user, database: lab.pg!.database, row: label }
    const loops: [Worker, string][] = []
    const start = async (host: string, kind: string, spec: Record<string, unknown>) => {
      const w = lab.agents.get(host)!
      const id = `${host}.${kind}.${label}`
      loops.push([w, id])
      await startLoop(w, { id, kind, ttl, endpoints: lab.etcd.endpoints, ...spec })
    }
    for (const host of lab.clients) {
      await start(host, 'lock', { name: names.lock, fenceKey: names.lockFence, holdMs: 30, pg })
      await start(host, 'leader', { name: names.election, fenceKey: names.electionFence, holdMs: 100 })
      await start(host, 'consume', { queue: names.queue, batch: 5, visibilityTimeout: ttl })
      await start(host, 'stm', { key: names.counter })
    }
    // About 10 messages a second, so production ends with the flapping.
    await start('c1', 'produce', { queue: names.queue, count: o.seconds * 10, intervalMs: 60 })

    const kinds: Record<string, number> = {}
    const startedAt = machineNow()
    let cuts = 0
    while (machineNow() < startedAt + o.seconds * 1000) {
      const { kind, what } = await randomCut(lab)
      cuts++
      kinds[kind] = (kinds[kind] ?? 0) + 1
      o.onCut?.(what)
      await sleep(500 + Math.random() * 1500)
      await lab.net.heal()
    }
    const healAt = machineNow()
    await lab.etcd.waitForLeader({ timeoutMs: 30_000 })
    const summaries = await stopAll(lab, loops, 60_000)
    const admin = lab.agents.get('admin')!
    const counter = await admin.request({ op: 'get', endpoints: lab.etcd.endpoints, key: names.counter }, 'value', 30_000)
    const leftovers = await leftoverKeys(admin, lab.etcd.endpoints, names, ttl)
    const events = [...lab.agents.entries()].flatMap(([host, w]) => w.events.splice(0).map((e) => ({ ...e, host })))
    const report = analyse({
      label,
      cut: `${cuts} random cuts, 0.5-2 s each, over ${o.seconds} s`,
      events,
      summaries,
      cutAt: startedAt,
      cutApplied: startedAt,
      healAt,
      victim: { lock: '', leader: '' },
      counter: Number(counter.value ?? '0'),
      leftovers,
      leaderBefore: '',
      failover: {},
      latePgWrites: [],
    })
    // Progress over time: lock grants per 10 s from the first cut (the last bucket is the drain).
    const grantsPer10s: number[] = []
    for (const e of events as Record<string, any>[]) {
      if (e.event !== 'grant' || !String(e.id).includes('.lock.')) continue
      const bucket = Math.max(0, Math.floor((e.at - startedAt) / 10_000))
      while (grantsPer10s.length <= bucket) grantsPer10s.push(0)
      grantsPer10s[bucket]++
    }
    return { report, cuts, kinds, grantsPer10s }
  } finally {
    await lab.stop()
  }
}

/** One line per report (re-exported for the soak script). */
export { formatReport }
