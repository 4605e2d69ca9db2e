/**
 * Server faults: a 3-member cluster whose members, the raft leader included, are
 * stopped and restarted one at a time while locks change hands, a queue moves messages and STM
 * transfers run. Clients are created with all three endpoints and must fail over. The same
 * workloads run for longer in `npm run soak -- --minutes N`.
 */
import { describe, expect, it } from 'vitest'
import { uniqueName, useEtcd } from './helpers.js'
import { cycleFaults, leaderIndex, type Outage } from './support/faults.js'
import { checkHolds, type Hold } from './support/history.js'
import { lockHandoffs, queueUnderFaults, stmBank } from './support/workloads.js'

const etcd = useEtcd(3)

/** Sizes that fit `npm test` (the soak run uses larger ones; see docs/RELIABILITY.md). */
const CI = { queueMessages: 1500, downMs: 1500, upMs: 1000 }

function report(label: string, figures: object) {
  console.log(`[faults] ${label}: ${JSON.stringify(figures)}`)
}

describe('the history checker', () => {
  const h = (holder: string, fence: number, queued: number, from: number, to: number): Hold => ({
    holder,
    fence: BigInt(fence),
    queuedRev: BigInt(queued),
    grantedAt: from,
    releasedAt: to,
  })

  it('accepts a correct history and names each kind of violation', () => {
    expect(checkHolds([h('a', 5, 5, 0, 10), h('b', 7, 7, 11, 20), h('c', 9, 9, 21, 22)])).toEqual([])
    expect(checkHolds([h('a', 5, 5, 0, 10), h('b', 7, 7, 9, 20)]).map((v) => v.kind)).toEqual(['overlap'])
    // A short hold inside a long one is an overlap too, even with a clean neighbour in between.
    expect(checkHolds([h('a', 5, 5, 0, 100), h('b', 7, 7, 10, 20), h('c', 9, 9, 30, 40)]).map((v) => v.kind)).toEqual([
      'overlap',
      'overlap',
    ])
    expect(checkHolds([h('a', 7, 5, 0, 10), h('b', 7, 6, 11, 20)]).map((v) => v.kind)).toEqual(['fence'])
    expect(checkHolds([h('a', 5, 6, 0, 10), h('b', 7, 5, 11, 20)]).map((v) => v.kind)).toEqual(['fifo'])
    expect(checkHolds([h('a', 5, 5, 10, 0)]).map((v) => v.kind)).toEqual(['interval'])
  })
})

describe('faults on a 3-member cluster', () => {
  it('finds the raft leader through the maintenance status API', async () => {
    const leader = await leaderIndex(etcd.cluster)
    expect(leader).toBeGreaterThanOrEqual(0)
    expect(leader).toBeLessThan(3)
  })

  it('lock handoffs stay exclusive, fenced and FIFO while every member (the leader first) restarts', async () => {
    const outages: Outage[] = []
    let faultsDone = false
    const faults = cycleFaults(etcd.cluster, { downMs: CI.downMs, upMs: CI.upMs, onFault: (o) => outages.push(o) }).finally(
      () => (faultsDone = true),
    )
    const duringOutage = (t: number) => {
      const pids = etcd.cluster.pids()
      return pids.some((p) => p === undefined) || outages.some((o) => t >= o.from && t <= o.to)
    }
    const result = await lockHandoffs(etcd.cluster, {
      name: uniqueName('handoff'),
      contenders: 4,
      ttl: 5,
      until: () => faultsDone,
      duringOutage,
    }).finally(() => faults)
    report('lock handoffs', {
      ...result,
      violations: result.violations.slice(0, 5),
      faults: outages.length,
      leaderStops: outages.filter((o) => o.wasLeader).length,
    })
    expect(result.violations).toEqual([])
    expect(outages.length).toBe(3)
    expect(outages[0].wasLeader).toBe(true)
    // The locks kept changing hands while a member was down: the clients failed over.
    expect(result.grantsDuringOutage).toBeGreaterThan(0)
    expect(result.handoffs).toBeGreaterThan(20)
    expect(result.fencedWrites).toBeGreaterThan(0)
  })

  it(`queue: ${CI.queueMessages} messages enqueued, then 4 consumers (one SIGKILLed mid-batch), members restarting: each acked exactly once`, async () => {
    let consumed = false
    const outages: Outage[] = []
    let faults: Promise<unknown> = Promise.resolve()
    // Rounds of restarts until the queue is drained, with a quiet spell after each round: the
    // killed consumer's 2 s claim leases can only expire while leadership is stable.
    const startFaults = () =>
      (faults = cycleFaults(etcd.cluster, {
        downMs: CI.downMs,
        upMs: CI.upMs,
        quietMs: 4000,
        until: () => consumed,
        onFault: (o) => outages.push(o),
      }))
    // The workload gives up (and reports what it saw) before the test timeout, so the faults
    // always stop before the next test.
    const result = await queueUnderFaults(etcd.cluster, {
      name: uniqueName('q'),
      messages: CI.queueMessages,
      batch: 20,
      deadlineMs: 75_000,
      onProduced: startFaults,
    }).finally(() => (consumed = true))
    await faults
    report('queue', { ...result, violations: result.violations.slice(0, 20), faults: outages.length })
    expect(result.violations).toEqual([])
    expect(result.messages).toBe(CI.queueMessages)
    expect(result.acks + result.ambiguousAcks).toBe(CI.queueMessages)
    // The killed consumer left claims behind, and they came back.
    expect(result.workerAbandoned).toBeGreaterThan(0)
    expect(result.redeliveries).toBeGreaterThanOrEqual(result.workerAbandoned)
    expect(outages.length).toBeGreaterThan(0)
  }, 100_000)

  it('STM bank: 5 accounts of 100, concurrent half-balance transfers while members restart: the sum stays 500', async () => {
    let faultsDone = false
    const outages: Outage[] = []
    const faults = cycleFaults(etcd.cluster, { downMs: CI.downMs, upMs: CI.upMs, onFault: (o) => outages.push(o) }).finally(
      () => (faultsDone = true),
    )
    const result = await stmBank(etcd.cluster, { name: uniqueName('bank'), workers: 4, until: () => faultsDone }).finally(() => faults)
    report('stm bank', { ...result, faults: outages.length })
    expect(result.violations).toEqual([])
    expect(result.transfers).toBeGreaterThan(20)
    expect(result.snapshots).toBeGreaterThan(5)
  })
})
