/**
 * Crashed and timed-out idempotent invocations: the key is free again as soon as the owner's
 * lease ends — never at some clock time (the failure of powertools-lambda-python #738, #1038,
 * #4759, where a record stays in progress until a clock-computed expiry).
 * Real child processes with wall clocks skewed by ±5 minutes run the function; the owner is
 * SIGKILLed mid-handler and a waiting duplicate runs the handler within TTL + 1 s.
 */
import middy from '@middy/core'
import { afterEach, describe, expect, it } from 'vitest'
import { keyspace } from '../../lib/core/kv.js'
import { etcdIdempotency } from '../../middleware/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)
const LEASE_TTL = 2
const FIVE_MINUTES = 5 * 60 * 1000

const workers: Worker[] = []
afterEach(async () => {
  for (const w of workers.splice(0)) await w.kill()
})

async function fn(skewMs: number) {
  const w = await Worker.start(etcd.cluster.endpoints, '', {
    script: 'idempotency-worker.ts',
    preload: ['skewed-clock.ts'],
    env: { CLOCK_SKEW_MS: String(skewMs) },
  })
  workers.push(w)
  return w
}

describe('a crashed owner frees its key when its lease ends', () => {
  it('SIGKILL mid-handler (clocks skewed +5 min / -5 min): the waiting duplicate runs the handler within TTL + 1 s', async () => {
    const key = uniqueName('order')
    const prefix = uniqueName('idem')
    const [ahead, behind] = await Promise.all([fn(+FIVE_MINUTES), fn(-FIVE_MINUTES)])
    const invoke = { op: 'invoke', key, prefix, leaseTtl: LEASE_TTL }

    const owner = await ahead.request({ ...invoke, hang: true }, 'running')
    // The skew is real: the owner's wall clock reads five minutes ahead of ours.
    expect(Math.abs(owner.wallClock - Date.now() - FIVE_MINUTES)).toBeLessThan(5_000)
    behind.send({ ...invoke, hang: false })
    // The duplicate is waiting on the in-progress record (it has not run the handler).
    await expect(behind.next('running', 500)).rejects.toThrow(/no running event/)

    await ahead.kill()
    const killedAt = performance.now()
    const retry = await behind.next('running', 15_000)
    const freedMs = performance.now() - killedAt
    console.log(
      `[idempotency crash] owner SIGKILLed; the duplicate ran the handler ${freedMs.toFixed(0)} ms later (lease TTL ${LEASE_TTL} s; wall clocks ${FIVE_MINUTES / 60000} min ahead / behind)`,
    )
    expect(Math.abs(retry.wallClock - Date.now() + FIVE_MINUTES)).toBeLessThan(5_000)
    expect(freedMs).toBeLessThan(LEASE_TTL * 1000 + 1000)
    const { response } = await behind.next('result')
    expect(response).toEqual({ ranBy: behind.pid })

    // Its answer is what later duplicates get, whatever their clock says.
    const later = await fn(+FIVE_MINUTES)
    later.send({ ...invoke, hang: true })
    expect((await later.next('result')).response).toEqual({ ranBy: behind.pid })
  })

  it('an invocation that runs past its deadline (hard timeout, no Middy early timeout): its key is free one lease TTL after the deadline', async () => {
    const prefix = uniqueName('idem')
    let running!: () => void
    const handlerRuns = new Promise<void>((r) => (running = r))
    // timeoutEarlyInMillis 0: Middy's own early timeout (5 ms by default, which would fail the
    // invocation and delete its record) is off, as when Lambda's hard timeout freezes the function.
    const hung = middy(async () => (running(), new Promise(() => {})), { timeoutEarlyInMillis: 0 }).use(
      etcdIdempotency({ key: () => 'k', prefix, leaseTtl: LEASE_TTL, client: etcd.client }),
    )
    void hung({}, lambdaContext(500)) // never settles, like a frozen, timed-out function
    await handlerRuns
    const retry = middy(async () => 'retried').use(etcdIdempotency({ key: () => 'k', prefix, leaseTtl: LEASE_TTL, client: etcd.client }))
    const started = performance.now()
    expect(await retry({}, lambdaContext(15_000))).toBe('retried')
    const freedMs = performance.now() - started
    console.log(`[idempotency timeout] deadline 500 ms, lease TTL ${LEASE_TTL} s: the retry ran after ${freedMs.toFixed(0)} ms`)
    expect(freedMs).toBeGreaterThan(500) // not before the deadline: the owner might still be working
    expect(freedMs).toBeLessThan(500 + LEASE_TTL * 1000 + 1500)
    expect((await keyspace(etcd.client).range(`${prefix}/k`)).kvs).toHaveLength(1)
  })
})
