/**
 * Turns the events of one partition scenario (or a flapping soak) into its figures and its
 * violations: lock and leadership histories (overlap, fence order, FIFO — history.ts), fenced
 * writes (etcd and Postgres), the queue's exactly-once checks (queue-check.ts) and the STM
 * counter.
 */
import { LockHistory, type Hold } from './history.js'
import { DeliveryLog, type Delivery } from './queue-check.js'
import type { WorkerEvent } from './workers.js'

/** The figures and violations of one scenario (or flapping soak). */
export interface ScenarioReport {
  label: string
  cut: string
  partitionMs: number
  raft: { leaderBefore: string; leaderAfter?: string; failoverMs?: number }
  /** Lock grants and leadership terms that started while the cut was in place. */
  grantsWhilePartitioned: number
  lockGrants: number
  leaderTerms: number
  /** Victim (c1): did its sessions report the loss, how long after the cut, and why. */
  victimLost: boolean
  victimSignalMs?: number
  victimSignalReason?: string
  victimLeaderSignalMs?: number
  /** First lock grant / leadership term on the majority side after the cut. */
  firstMajorityGrantMs?: number
  firstMajorityLeaderMs?: number
  messages: { produced: number; acked: number; lost: number; redelivered: number; ambiguousAcks: number; uncertainEnqueues: number }
  stm: { committed: number; failed: number; counter: number }
  fencing: {
    staleEtcdWrites: number
    staleEtcdRejected: number
    latePgWrites: number
    latePgRejected: number
    pgWrites: number
    pgApplied: number
    pgSuperseded: number
  }
  errors: Record<string, number>
  violations: string[]
}

/** Everything a scenario run recorded, for {@link analyse}. */
export interface ScenarioRecord {
  label: string
  cut: string
  events: (WorkerEvent & { host: string })[]
  summaries: Map<string, Record<string, any>>
  cutAt: number
  cutApplied: number
  healAt: number
  victim: { lock: string; leader: string }
  counter: number
  leftovers: string[]
  leaderBefore: string
  failover: { leader?: string; ms?: number }
  latePgWrites: string[]
}

const kindOf = (id: unknown) => String(id).split('.')[1]
const ms = (t: number | undefined, from: number) => (t === undefined ? undefined : Math.round(t - from))

/** Figures and violations of one recorded scenario. */
export function analyse(r: ScenarioRecord): ScenarioReport {
  const violations: string[] = []
  const histories = { lock: new LockHistory(), leader: new LockHistory() }
  const fencing = {
    staleEtcdWrites: 0,
    staleEtcdRejected: 0,
    latePgWrites: 0,
    latePgRejected: 0,
    pgWrites: 0,
    pgApplied: 0,
    pgSuperseded: 0,
  }
  const queue = new QueueRecord()
  let grantsWhilePartitioned = 0
  const firstGrant: Record<string, number | undefined> = {}
  const lostAt: Record<string, { at: number; reason?: string } | undefined> = {}
  const pgWrites: WorkerEvent[] = []

  for (const e of r.events) {
    const kind = kindOf(e.id) as 'lock' | 'leader'
    switch (e.event) {
      case 'grant':
        histories[kind].grant(e.id, BigInt(e.fence), BigInt(e.fence), e.at)
        if (e.at >= r.cutAt && e.at <= r.healAt) grantsWhilePartitioned++
        if (e.host !== 'c1' && e.at >= r.cutAt) firstGrant[kind] = Math.min(firstGrant[kind] ?? Infinity, e.at)
        break
      case 'release':
        histories[kind].release(e.id, { lost: e.lost, at: e.at })
        if (e.id === r.victim.lock || e.id === r.victim.leader) lostAt[e.id] = e.lost ? { at: e.at, reason: e.reason } : undefined
        break
      case 'write':
        if (e.ok && BigInt(e.prev) > BigInt(e.fence))
          violations.push(`${e.id}: fenced write with fence ${e.fence} landed after fence ${e.prev} had been written`)
        break
      case 'staleWrite':
        fencing.staleEtcdWrites++
        if (e.succeeded) violations.push(`${e.id}: etcd write guarded by a lost hold's ownerCompare() succeeded after healing`)
        else fencing.staleEtcdRejected++
        break
      case 'pgWrite':
        pgWrites.push(e)
        break
      default:
        queue.add(e)
    }
  }
  for (const e of pgWrites) checkPgWrite(e, r, histories.lock.holds, fencing, violations)
  for (const [kind, history] of Object.entries(histories)) {
    violations.push(...history.check().map((v) => `${kind} ${v.kind}: ${v.detail}`))
  }
  const messages = queue.figures(violations)
  const stm = { committed: 0, failed: 0, counter: r.counter }
  const errors: Record<string, number> = {}
  for (const [id, summary] of r.summaries) {
    if (summary.crashed) violations.push(`loop ${id} crashed: ${summary.crashed}`)
    if (kindOf(id) === 'stm') {
      stm.committed += summary.committed
      stm.failed += summary.failed
    }
    for (const [name, n] of Object.entries((summary.errors ?? {}) as Record<string, number>)) errors[name] = (errors[name] ?? 0) + n
  }
  if (stm.counter < stm.committed)
    violations.push(`STM counter is ${stm.counter} after ${stm.committed} committed increments: an increment was lost`)
  if (stm.counter > stm.committed + stm.failed)
    violations.push(`STM counter is ${stm.counter} after ${stm.committed} committed and ${stm.failed} failed increments: one applied twice`)
  violations.push(...r.leftovers.map((k) => `key left behind after every loop stopped: ${k}`))
  const victimLock = lostAt[r.victim.lock]
  return {
    label: r.label,
    cut: r.cut,
    partitionMs: Math.round(r.healAt - r.cutAt),
    raft: {
      leaderBefore: r.leaderBefore,
      leaderAfter: r.failover.leader,
      failoverMs: r.failover.ms === undefined ? undefined : Math.round(r.failover.ms),
    },
    grantsWhilePartitioned,
    lockGrants: histories.lock.holds.length,
    leaderTerms: histories.leader.holds.length,
    victimLost: victimLock !== undefined,
    victimSignalMs: ms(victimLock?.at, r.cutAt),
    victimSignalReason: victimLock?.reason,
    victimLeaderSignalMs: ms(lostAt[r.victim.leader]?.at, r.cutAt),
    firstMajorityGrantMs: ms(firstGrant.lock, r.cutAt),
    firstMajorityLeaderMs: ms(firstGrant.leader, r.cutAt),
    messages,
    stm,
    fencing,
    errors,
    violations,
  }
}

/**
 * A late write (the victim's, after it lost the lock) must be refused. A holder's own write must
 * land — unless a later holder (higher fence) had been granted before Postgres answered: then
 * the writer had lost the lock meanwhile (flapping links), and refusing it is fencing at work.
 */
function checkPgWrite(e: WorkerEvent, r: ScenarioRecord, holds: Hold[], fencing: ScenarioReport['fencing'], violations: string[]) {
  if (r.latePgWrites.includes(e.value)) {
    fencing.latePgWrites++
    if (e.error) violations.push(`${e.id}: late Postgres write ${e.value} got no answer: ${e.error}`)
    else if (e.applied) violations.push(`${e.id}: late Postgres write ${e.value} with the lost fence ${e.fence} was applied`)
    else fencing.latePgRejected++
    return
  }
  fencing.pgWrites++
  if (e.applied) return void fencing.pgApplied++
  const superseded = holds.some((h) => h.fence > BigInt(e.fence) && h.grantedAt < e.doneAt)
  if (superseded) fencing.pgSuperseded++
  else
    violations.push(
      `${e.id}: the current holder's Postgres write (fence ${e.fence}) was ${e.error ? `not answered: ${e.error}` : 'refused'} with no later holder granted`,
    )
}

/** The queue events of a run, fed to a {@link DeliveryLog}. */
class QueueRecord {
  private readonly log = new DeliveryLog()
  private readonly enqueued = new Map<string, string>()
  private readonly uncertain = new Set<string>()
  private readonly latest = new Map<string, Delivery>()

  add(e: WorkerEvent) {
    if (e.event === 'enqueued') this.enqueued.set(e.msgId, e.payload)
    if (e.event === 'enqueueFailed') this.uncertain.add(e.payload)
    if (e.event === 'delivered') for (const m of e.messages) this.latest.set(`${e.id}|${m.id}`, this.log.deliver(m))
    if (e.event === 'ack') {
      const d = this.latest.get(`${e.id}|${e.msgId}`)
      if (e.outcome === 'acked' && d) this.log.acked(d)
      if (e.outcome === 'ambiguous') this.log.ambiguousAck(e.msgId)
    }
  }

  figures(violations: string[]): ScenarioReport['messages'] {
    const produced = this.enqueued.size + this.uncertain.size
    const found = this.log.violations(this.enqueued, produced, this.uncertain)
    violations.push(...found.map((v) => `queue: ${v}`))
    const totals = this.log.totals()
    return {
      produced,
      acked: this.log.ackedCount(),
      lost: found.filter((v) => v.includes('never acked')).length,
      redelivered: totals.redeliveries,
      ambiguousAcks: totals.ambiguousAcks,
      uncertainEnqueues: this.uncertain.size,
    }
  }
}

/** One line per scenario, for the test output and the soak. */
export function formatReport(r: ScenarioReport): string {
  const { violations, errors, ...figures } = r
  return `[partitions] ${r.label}: ${JSON.stringify({ ...figures, errors, violations: violations.length })}${violations.length ? `\n  ${violations.slice(0, 20).join('\n  ')}` : ''}`
}
