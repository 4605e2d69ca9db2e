/**
 * The long version of test/faults.test.ts: `npm run soak -- --minutes N [--messages M]
 * [--produce-during-faults]`; with `--partitions [--minutes N] [--pre-vote]` (as root) the flapping network
 * partitions instead (test/support/netns-flapping.ts, one minute by default).
 * Starts a 3-member etcd and repeats rounds of the same checked workloads until N minutes have
 * passed (a round that started is finished):
 *   1. lock handoffs (4 contenders, history-checked) while each member, the leader first, restarts;
 *   2. a queue of M messages (default 10,000) through 4 consumers, one SIGKILLed mid-batch,
 *      while members keep restarting: every message acked exactly once;
 *   3. the STM bank (5 accounts of 100) while each member restarts: the sum stays 500;
 *   4. an STM counter while each member restarts: each committed runSTM adds exactly 1;
 *   5. the rate limiter, R = 20/s burst 5, 150 callers in 3 processes for --rate-seconds
 *      (default 60; members up): every 1 s window at most 25, at least 90 % of R used.
 * Prints each round's figures and the totals as JSON; exits 1 if any check found a violation.
 */
import { parseArgs } from 'node:util'
import { startEtcd } from '../testing/index.js'
import { cycleFaults } from '../test/support/faults.js'
import { machineNow } from '../test/support/history.js'
import { lockHandoffs, queueUnderFaults, rateLimitLoad, stmBank, stmCounter } from '../test/support/workloads.js'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string' },
    messages: { type: 'string', default: '10000' },
    'produce-during-faults': { type: 'boolean', default: false },
    partitions: { type: 'boolean', default: false },
    'pre-vote': { type: 'boolean', default: false },
    'rate-seconds': { type: 'string', default: '60' },
  },
})
if (values.partitions) {
  // Flapping network partitions instead of member restarts (needs root).
  const { flappingSoak, formatReport } = await import('../test/support/netns-flapping.js')
  const seconds = Math.round(Number(values.minutes ?? '1') * 60)
  if (!(seconds > 0)) {
    console.error('usage: npm run soak -- --partitions [--minutes N] [--pre-vote]')
    process.exit(2)
  }
  // etcd 3.4 runs without pre-vote by default: a member rejoining after a cut forces an election.
  const etcdArgs = values['pre-vote'] ? ['--pre-vote=true'] : []
  const result = await flappingSoak({ seconds, etcdArgs, onCut: (what) => console.log(`[soak] ${new Date().toISOString()} cut: ${what}`) })
  console.log(formatReport(result.report))
  console.log(`[soak] cuts: ${result.cuts} ${JSON.stringify(result.kinds)}; lock grants per 10 s: ${result.grantsPer10s.join(' ')}`)
  process.exit(result.report.violations.length === 0 ? 0 : 1)
}
const minutes = Number(values.minutes ?? '5')
const messages = Number(values.messages)
const rateSeconds = Number(values['rate-seconds'])
if (!(minutes > 0) || !Number.isInteger(messages) || messages < 100 || !(rateSeconds >= 0)) {
  console.error('usage: npm run soak -- --minutes N [--messages M (>= 100)] [--produce-during-faults] [--rate-seconds S (0: skip)]')
  process.exit(2)
}

const FAULTS = { downMs: 1500, upMs: 1000 }
const totals = {
  rounds: 0,
  faultsInjected: 0,
  leaderStops: 0,
  handoffsChecked: 0,
  grantsDuringOutage: 0,
  fencedWrites: 0,
  messagesMoved: 0,
  deliveries: 0,
  redeliveries: 0,
  ambiguousAcks: 0,
  stmTransfers: 0,
  stmSnapshots: 0,
  stmIncrements: 0,
  fencedWritesReplayed: 0,
  rateAdmitted: 0,
  rateMostInWindow: 0,
  violations: [] as string[],
}
const errors: Record<string, number> = {}
const addErrors = (e: Record<string, number>) => {
  for (const [k, n] of Object.entries(e)) errors[k] = (errors[k] ?? 0) + n
}
const log = (label: string, figures: object) => console.log(`[soak] ${new Date().toISOString()} ${label} ${JSON.stringify(figures)}`)

const cluster = await startEtcd({ nodes: 3 })
const stopAt = Date.now() + minutes * 60_000
try {
  while (Date.now() < stopAt) {
    const round = ++totals.rounds
    const outages: { wasLeader: boolean }[] = []
    const onFault = (o: { wasLeader: boolean }) => {
      outages.push(o)
      totals.faultsInjected++
      if (o.wasLeader) totals.leaderStops++
    }

    // 1. Lock handoffs during one round of restarts (leader first).
    let faultsDone = false
    const started = machineNow()
    const lockFaults = cycleFaults(cluster, { ...FAULTS, onFault }).finally(() => (faultsDone = true))
    const locks = await lockHandoffs(cluster, {
      name: `soak-lock-${round}`,
      contenders: 4,
      ttl: 5,
      until: () => faultsDone,
      duringOutage: () => cluster.pids().some((p) => p === undefined),
    })
    await lockFaults
    totals.handoffsChecked += locks.handoffs
    totals.grantsDuringOutage += locks.grantsDuringOutage
    totals.fencedWrites += locks.fencedWrites
    totals.fencedWritesReplayed += locks.replayedWrites
    totals.violations.push(...locks.violations.map((v) => `round ${round} lock ${v.kind}: ${v.detail}`))
    addErrors(locks.errors)
    log(`round ${round} locks`, { ...locks, violations: locks.violations.length, seconds: Math.round((machineNow() - started) / 1000) })

    // 2. The queue, with members restarting until every message is consumed.
    let consumed = false
    let queueFaults: Promise<unknown> = Promise.resolve()
    // A quiet spell after each round of restarts lets leases expire (etcd 3.4 resets them on
    // every leader change): the killed consumer's claims come back only then.
    const startQueueFaults = () => (queueFaults = cycleFaults(cluster, { ...FAULTS, quietMs: 4000, until: () => consumed, onFault }))
    const produceDuringFaults = values['produce-during-faults']
    if (produceDuringFaults) startQueueFaults()
    const queueStarted = machineNow()
    const queue = await queueUnderFaults(cluster, {
      name: `soak-queue-${round}`,
      messages,
      batch: 20,
      deadlineMs: Math.max(120_000, messages * 60),
      produceDuringFaults,
      onProduced: startQueueFaults,
    }).finally(() => (consumed = true))
    await queueFaults
    totals.messagesMoved += queue.acks + queue.ambiguousAcks
    totals.deliveries += queue.deliveries
    totals.redeliveries += queue.redeliveries
    totals.ambiguousAcks += queue.ambiguousAcks
    totals.violations.push(...queue.violations.map((v) => `round ${round} queue: ${v}`))
    addErrors(queue.errors)
    log(`round ${round} queue`, {
      ...queue,
      violations: queue.violations.slice(0, 10),
      seconds: Math.round((machineNow() - queueStarted) / 1000),
    })

    // 3. STM bank during one round of restarts.
    let bankDone = false
    const bankFaults = cycleFaults(cluster, { ...FAULTS, onFault }).finally(() => (bankDone = true))
    const bank = await stmBank(cluster, { name: `soak-bank-${round}`, workers: 4, until: () => bankDone })
    await bankFaults
    totals.stmTransfers += bank.transfers
    totals.stmSnapshots += bank.snapshots
    totals.violations.push(...bank.violations.map((v) => `round ${round} stm: ${v}`))
    addErrors(bank.errors)
    log(`round ${round} stm`, bank)

    // 4. STM counter during one round of restarts.
    let counterDone = false
    const counterFaults = cycleFaults(cluster, { ...FAULTS, onFault }).finally(() => (counterDone = true))
    const counter = await stmCounter(cluster, { name: `soak-counter-${round}`, workers: 4, until: () => counterDone })
    await counterFaults
    totals.stmIncrements += counter.committed
    totals.violations.push(...counter.violations.map((v) => `round ${round} stm counter: ${v}`))
    addErrors(counter.errors)
    log(`round ${round} stm counter`, counter)
    log(`round ${round} faults`, { injected: outages.length, leaderStops: outages.filter((o) => o.wasLeader).length })

    // 5. The rate limiter's bound and use, members up.
    if (rateSeconds > 0) {
      const rate = await rateLimitLoad(cluster.endpoints, {
        name: `soak-rate-${round}`,
        rate: 20,
        per: 1000,
        burst: 5,
        callers: 150,
        processes: 3,
        clients: 5,
        seconds: rateSeconds,
        minUsed: 0.9,
      })
      totals.rateAdmitted += rate.admitted
      totals.rateMostInWindow = Math.max(totals.rateMostInWindow, rate.mostInWindow)
      totals.violations.push(
        ...rate.violations.map((v) => `round ${round} rate limiter: ${v}`),
        ...rate.errors.slice(0, 5).map((e) => `round ${round} rate limiter error: ${e}`),
      )
      log(`round ${round} rate limiter`, { ...rate, perSecond: rate.perSecond.join(' '), errors: rate.errors.length })
    }
  }
} finally {
  await cluster.stop()
}
log('totals', { ...totals, violations: totals.violations.length, retriedErrors: errors })
for (const v of totals.violations.slice(0, 50)) console.log(`[soak] VIOLATION ${v}`)
process.exit(totals.violations.length === 0 ? 0 : 1)
