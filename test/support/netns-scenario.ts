/**
 * One partition scenario on a {@link Lab}, end to end: the victim client (c1) takes a lock,
 * leadership and a queue batch; the majority clients run lock, leader, consumer, producer and
 * STM loops; the cut is applied, held, healed; the victim then tries its stale writes (etcd,
 * and Postgres when the lab has it). Every event is checked afterwards (see netns-report.ts).
 */
import type { Worker, WorkerEvent } from './workers.js'
import type { PgTarget } from './netns-loops.js'
import { machineNow } from './history.js'
import type { Arrangement, Lab, Scenario } from './netns-lab.js'
import { analyse, type ScenarioReport } from './netns-report.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A scenario's timing. */
export interface Timing {
  /** Lease TTL of every session, seconds. */
  ttl: number
  /** How long the cut stays at least, ms. */
  partitionMs: number
  /**
   * How long it may stay at most, ms: it is held past `partitionMs` until the majority side has
   * handed the lock over a few times and elected a leader, so a slow failover on a loaded
   * machine shows up as a longer cut, not as a scenario that checked nothing.
   */
  maxPartitionMs: number
  /** Steady state before the cut, ms. */
  warmupMs: number
}

/** The timing of `test/partitions.test.ts`. */
export const DEFAULT_TIMING: Timing = { ttl: 3, partitionMs: 8000, maxPartitionMs: 30_000, warmupMs: 1500 }

/** Majority-side progress that must happen while the cut is in place. */
const PROGRESS = { lockGrants: 3, leaderTerms: 1 }

/** Waits until an event matching `pred` has arrived (without taking it from the worker's list). */
export async function seen(w: Worker, pred: (e: WorkerEvent) => boolean, timeoutMs: number, what: string): Promise<WorkerEvent> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const hit = w.events.find(pred)
    if (hit) return hit
    const failed = w.events.find((e) => e.event === 'error')
    if (failed) throw new Error(`agent ${w.pid}: ${failed.op} ${failed.id ?? ''} failed: ${failed.name}: ${failed.message}`)
    if (performance.now() > deadline) throw new Error(`agent ${w.pid}: no ${what} within ${timeoutMs} ms; stderr: ${w.stderr.slice(-1500)}`)
    await sleep(50)
  }
}

/** Starts a loop on an agent. */
export const startLoop = (w: Worker, spec: Record<string, unknown>) => w.request({ op: 'loop', ...spec }, 'started', 30_000)

/** Stops a loop; resolves with its summary. */
export async function stopLoop(w: Worker, id: string): Promise<Record<string, any>> {
  w.send({ op: 'stop', id })
  const done = await seen(w, (e) => e.event === 'stopped' && e.id === id, 60_000, `stop of ${id}`)
  return done.summary
}

/** Names of one scenario's primitives (fresh per scenario). */
export function scenarioNames(label: string) {
  return {
    lock: `${label}/lock`,
    lockFence: `${label}/lock-fence`,
    election: `${label}/leader`,
    electionFence: `${label}/leader-fence`,
    queue: `${label}/queue`,
    counter: `${label}/counter`,
    stale: `${label}/stale-target`,
  }
}

/** What one scenario run keeps track of. */
interface Run {
  lab: Lab
  label: string
  plan: Arrangement
  names: ReturnType<typeof scenarioNames>
  timing: Timing
  victim: Worker
  majority: (readonly [string, Worker])[]
  pg?: PgTarget
  loops: [Worker, string][]
}

/** Runs `scenario` once; returns its figures and every violation found. */
export async function runScenario(
  lab: Lab,
  label: string,
  scenario: Scenario,
  options: { timing?: Timing; duringCut?: (plan: Arrangement) => Promise<unknown> } = {},
): Promise<ScenarioReport & { probe?: unknown }> {
  const leaderBefore = await lab.etcd.waitForLeader()
  const plan = scenario(lab, leaderBefore)
  for (const w of lab.agents.values()) w.events.splice(0)
  const run: Run = {
    lab,
    label,
    plan,
    names: scenarioNames(label),
    timing: options.timing ?? DEFAULT_TIMING,
    victim: lab.agents.get('c1')!,
    majority: lab.clients.filter((c) => c !== 'c1').map((c) => [c, lab.agents.get(c)!] as const),
    pg: lab.pg && { host: lab.pg.host, port: lab.pg.port, user: lab.pg.user, database: lab.pg.database, row: label },
    loops: [],
  }
  const victim = await startWorkload(run)
  const cutAt = machineNow()
  await plan.apply()
  const cutApplied = machineNow()
  let cut = true
  const raftFailover = watchFailover(lab, plan.majority, leaderBefore, cutAt, () => cut)
  const probe = await options.duringCut?.(plan)
  const late = await holdCut(run, victim.lock, cutAt)
  const healAt = machineNow()
  cut = false
  await lab.net.heal()
  const failover = await raftFailover
  late.push(...(await actOnStaleState(run, victim)))
  await lab.etcd.waitForLeader({ timeoutMs: 30_000 })
  const summaries = await stopAll(lab, run.loops, 30_000)
  const admin = lab.agents.get('admin')!
  const counter = await admin.request({ op: 'get', endpoints: lab.etcd.endpoints, key: run.names.counter }, 'value', 30_000)
  const leftovers = await leftoverKeys(admin, lab.etcd.endpoints, run.names, run.timing.ttl)
  const events = [...lab.agents.entries()].flatMap(([host, w]) => w.events.splice(0).map((e) => ({ ...e, host })))
  const report = analyse({
    label,
    cut: plan.cut,
    events,
    summaries,
    cutAt,
    cutApplied,
    healAt,
    victim,
    counter: Number(counter.value ?? '0'),
    leftovers,
    leaderBefore,
    failover,
    latePgWrites: late,
  })
  return probe === undefined ? report : { ...report, probe }
}

async function startIn(run: Run, w: Worker, host: string, kind: string, spec: Record<string, unknown>): Promise<string> {
  const id = `${host}.${kind}.${run.label}#${run.loops.filter(([x]) => x === w).length}`
  run.loops.push([w, id])
  await startLoop(w, { id, kind, ttl: run.timing.ttl, ...spec })
  return id
}

/**
 * The victim (c1) takes the lock, leadership and a claimed batch before anyone else queues;
 * then the majority clients start their loops and c2 produces. Returns the victim's loop ids.
 */
async function startWorkload(run: Run): Promise<{ lock: string; leader: string; queue: string }> {
  const { victim, plan, names, timing, pg } = run
  const mine = { endpoints: plan.victimEndpoints }
  const lock = await startIn(run, victim, 'c1', 'lock', { ...mine, name: names.lock, fenceKey: names.lockFence, once: true, pg })
  await seen(victim, (e) => e.event === 'grant' && e.id === lock, 30_000, 'victim lock grant')
  const leader = await startIn(run, victim, 'c1', 'leader', { ...mine, name: names.election, fenceKey: names.electionFence, once: true })
  await seen(victim, (e) => e.event === 'grant' && e.id === leader, 30_000, 'victim leadership')
  const [firstHost, first] = run.majority[0]
  const seed = await startIn(run, first, firstHost, 'produce', { endpoints: plan.majorityEndpoints, queue: names.queue, count: 60 })
  await seen(first, (e) => e.event === 'ended' && e.id === seed, 60_000, 'seed messages')
  const queue = await startIn(run, victim, 'c1', 'consume', {
    ...mine,
    queue: names.queue,
    batch: 10,
    visibilityTimeout: timing.ttl,
    holdBatch: true,
  })
  await seen(victim, (e) => e.event === 'delivered' && e.id === queue, 30_000, 'victim batch')
  await startIn(run, victim, 'c1', 'stm', { ...mine, key: names.counter })
  for (const [host, w] of run.majority) {
    const on = { endpoints: plan.majorityEndpoints }
    await startIn(run, w, host, 'lock', { ...on, name: names.lock, fenceKey: names.lockFence, holdMs: 30, pg })
    await startIn(run, w, host, 'leader', { ...on, name: names.election, fenceKey: names.electionFence, holdMs: 100 })
    await startIn(run, w, host, 'consume', { ...on, queue: names.queue, batch: 5, visibilityTimeout: 5 })
    await startIn(run, w, host, 'stm', { ...on, key: names.counter })
  }
  // Messages produced while the cut is in place, too.
  await startIn(run, first, firstHost, 'produce', { endpoints: plan.majorityEndpoints, queue: names.queue, count: 40, intervalMs: 150 })
  await sleep(timing.warmupMs)
  return { lock, leader, queue }
}

/**
 * Holds the cut: at least `partitionMs`, and until the majority made progress (at most
 * `maxPartitionMs`). Once someone else wrote to Postgres, the victim — cut off from etcd but
 * not from the database — writes with its old fence. Returns the late writes it made.
 */
async function holdCut(run: Run, victimLock: string, cutAt: number): Promise<string[]> {
  const { victim, timing, pg } = run
  const workers = run.majority.map(([, w]) => w)
  const since =
    (type: string, kind = '') =>
    (e: WorkerEvent) =>
      e.event === type && e.at > cutAt && String(e.id).includes(kind)
  await until(
    () =>
      count(workers, since('grant', '.lock.')) >= PROGRESS.lockGrants && count(workers, since('grant', '.leader.')) >= PROGRESS.leaderTerms,
    cutAt + timing.maxPartitionMs,
  )
  const late: string[] = []
  const lost = victim.events.some((e) => e.event === 'release' && e.id === victimLock && e.lost)
  if (pg && lost && count(workers, (e) => since('pgWrite')(e) && e.applied) > 0) {
    victim.send({ op: 'pgWrite', id: victimLock, pg, value: 'late-during' })
    late.push('late-during')
    await seen(victim, (e) => e.event === 'pgWrite' && e.value === 'late-during', 30_000, 'late-during answer')
  }
  await sleep(Math.max(0, cutAt + timing.partitionMs - machineNow()))
  return late
}

/** After healing, the victim acts on its stale state: an etcd write guarded by its old ownership, a Postgres write with its old fence, the ack of its batch. */
async function actOnStaleState(run: Run, ids: { lock: string; queue: string }): Promise<string[]> {
  const { victim, pg, names } = run
  const late = pg ? ['late-after'] : []
  victim.send({ op: 'staleWrite', id: ids.lock, key: names.stale, value: 'stale' })
  if (pg) victim.send({ op: 'pgWrite', id: ids.lock, pg, value: 'late-after' })
  victim.send({ op: 'ackHeld', id: ids.queue })
  await seen(victim, (e) => e.event === 'staleWrite', 30_000, 'stale write answer')
  for (const value of late) await seen(victim, (e) => e.event === 'pgWrite' && e.value === value, 30_000, `${value} answer`)
  return late
}

const count = (workers: Worker[], pred: (e: WorkerEvent) => boolean) => workers.reduce((n, w) => n + w.events.filter(pred).length, 0)

/** Polls `done` until it holds or the wall clock reaches `deadline`. */
async function until(done: () => boolean, deadline: number) {
  while (!done() && machineNow() < deadline) await sleep(100)
}

/** While the cut lasts: when the majority's members agree on a leader other than the old one. */
async function watchFailover(
  lab: Lab,
  among: string[],
  old: string,
  cutAt: number,
  isCut: () => boolean,
): Promise<{ leader?: string; ms?: number }> {
  while (isCut()) {
    const leader = await lab.etcd.leader(among)
    if (!isCut()) break // healed while asking: a leader seen now may be the heal's doing
    if (leader && leader !== old) return { leader, ms: machineNow() - cutAt }
    await sleep(100)
  }
  return {}
}

/**
 * Stops every loop: producers first (given `drainMs` to finish), then, once every message whose
 * enqueue returned was acked (or `drainMs` is up: the checks then say what is missing), the rest.
 */
export async function stopAll(lab: Lab, loops: [Worker, string][], drainMs: number): Promise<Map<string, Record<string, any>>> {
  const summaries = new Map<string, Record<string, any>>()
  const producers = loops.filter(([, id]) => id.includes('.produce.'))
  await waitFor(() => producers.every(([w, id]) => w.events.some((e) => e.event === 'ended' && e.id === id)), drainMs)
  for (const [w, id] of producers) summaries.set(id, await stopLoop(w, id))
  await waitFor(() => {
    const all = [...lab.agents.values()].flatMap((w) => w.events)
    const acked = new Set(all.filter((e) => e.event === 'ack' && e.outcome !== 'lost' && e.outcome !== 'failed').map((e) => e.msgId))
    return all.every((e) => e.event !== 'enqueued' || acked.has(e.msgId))
  }, drainMs)
  for (const [w, id] of loops) if (!summaries.has(id)) summaries.set(id, await stopLoop(w, id))
  return summaries
}

async function waitFor(done: () => boolean, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs
  while (!done() && performance.now() < deadline) await sleep(200)
}

/**
 * Keys still there once every loop stopped: a stale write's target (must never exist), and
 * lock, candidate and queue keys. A key whose release failed (etcd unavailable just then) goes
 * with its lease, so keys are looked for again until one TTL (and some slack) has passed.
 */
export async function leftoverKeys(
  admin: Worker,
  endpoints: string[],
  names: ReturnType<typeof scenarioNames>,
  ttl: number,
): Promise<string[]> {
  const target = await admin.request({ op: 'get', endpoints, key: names.stale }, 'value', 30_000)
  const stale = target.value === undefined ? [] : [`${names.stale} = ${JSON.stringify(target.value)}: a stale fenced write landed`]
  const deadline = performance.now() + ttl * 1000 + 3000
  for (;;) {
    const left: string[] = []
    for (const prefix of [
      `${names.lock}/`,
      `${names.election}/`,
      `${names.queue}/`,
      `__claims/${names.queue}/`,
      `__receives/${names.queue}/`,
    ]) {
      const res = await admin.request({ op: 'keys', endpoints, prefix }, 'keys', 30_000)
      left.push(...res.keys.map((k: { key: string; lease: string }) => `${k.key} (lease ${k.lease})`))
    }
    if (left.length === 0 || performance.now() > deadline) return [...stale, ...left]
    await sleep(500)
  }
}
