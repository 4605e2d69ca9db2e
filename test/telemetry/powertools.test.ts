// The Powertools bridge: middleware events become CloudWatch EMF metrics through a real
// @aws-lambda-powertools/metrics instance (its EMF lines read from stdout, where it writes
// them), under the names and dimensions of the OTel metrics. No OTel SDK in this file.
import middy from '@middy/core'
import { Metrics } from '@aws-lambda-powertools/metrics'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { etcdLock, etcdPlugin, etcdPowertoolsMetrics, etcdRateLimit } from '../../middleware/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

interface Emf {
  _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: string }[] }[] }
  [key: string]: unknown
}

let lines: string[] = []
let stop: () => void = () => {}
beforeEach(() => {
  lines = []
  const write = process.stdout.write.bind(process.stdout) as (...args: unknown[]) => boolean
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = chunk.toString()
    if (text.includes('"_aws"')) lines.push(...text.trim().split('\n'))
    return write(chunk, ...rest)
  })
  stop = etcdPowertoolsMetrics(new Metrics({ namespace: 'middy-etcd-test', serviceName: 'orders' }))
})
afterEach(() => {
  stop()
  vi.restoreAllMocks()
})

/** The EMF documents of metric `name` whose fields include `fields`. */
const emfOf = (name: string, fields: Record<string, unknown> = {}) =>
  lines
    .map((l) => JSON.parse(l) as Emf)
    .filter((d) => d._aws.CloudWatchMetrics[0].Metrics.some((m) => m.Name === name))
    .filter((d) => Object.entries(fields).every(([k, v]) => d[k] === v))

describe('Powertools bridge', () => {
  it('an etcdLock invocation publishes its wait and hold durations (seconds) with primitive and outcome as dimensions', async () => {
    const name = uniqueName('pt-lock')
    const handler = middy(async () => 'ran', etcdPlugin()).use(etcdLock({ name, client: etcd.client }))
    expect(await handler({}, lambdaContext())).toBe('ran')
    const [wait] = emfOf('middy_etcd.wait.duration', { 'middy_etcd.primitive': 'lock' })
    expect(wait['middy_etcd.outcome']).toBe('acquired')
    expect(wait._aws.CloudWatchMetrics[0]).toMatchObject({
      Namespace: 'middy-etcd-test',
      Metrics: [{ Name: 'middy_etcd.wait.duration', Unit: 'Seconds' }],
    })
    expect(wait._aws.CloudWatchMetrics[0].Dimensions[0]).toEqual(
      expect.arrayContaining(['service', 'middy_etcd.primitive', 'middy_etcd.outcome']),
    )
    expect(typeof wait['middy_etcd.wait.duration']).toBe('number')
    const [hold] = emfOf('middy_etcd.hold.duration', { 'middy_etcd.primitive': 'lock', 'middy_etcd.outcome': 'released' })
    expect(hold['middy_etcd.hold.duration'] as number).toBeGreaterThanOrEqual(0)
    expect(hold.service).toBe('orders')
  })

  it('a rate limit admits, then refuses: admissions, rejections and a `rejected` wait', async () => {
    const name = uniqueName('pt-rate')
    const handler = middy(async () => 'ran').use(etcdRateLimit({ name, rate: 1, per: 60_000, acquire: 'try', client: etcd.client }))
    const results = []
    for (let i = 0; i < 4; i++) results.push(await handler({}, lambdaContext()))
    const admitted = results.filter((r) => r === 'ran').length
    expect(admitted).toBeGreaterThan(0)
    expect(admitted).toBeLessThan(4) // at most the burst (+1) of a 1-per-minute rate
    expect(emfOf('middy_etcd.rate_limit.admissions')).toHaveLength(admitted)
    expect(emfOf('middy_etcd.rate_limit.rejections')).toHaveLength(4 - admitted)
    expect(emfOf('middy_etcd.rate_limit.rejections')[0]['middy_etcd.rate_limit.rejections']).toBe(1)
    const outcomes = emfOf('middy_etcd.wait.duration', { 'middy_etcd.primitive': 'rate_limit' }).map((d) => d['middy_etcd.outcome'])
    expect(outcomes).toEqual([...Array(admitted).fill('acquired'), ...Array(4 - admitted).fill('rejected')])
  })

  it('stops publishing once stopped', async () => {
    stop()
    const handler = middy(async () => 'ran').use(etcdLock({ name: uniqueName('pt-off'), client: etcd.client }))
    await handler({}, lambdaContext())
    expect(lines).toEqual([])
  })
})
