import { etcdEvents, type EtcdEvent } from './events.js'

/**
 * The Powertools bridge: for services that publish metrics with Powertools for AWS Lambda
 * (`@aws-lambda-powertools/metrics`, CloudWatch EMF) rather than OpenTelemetry, the middlewares'
 * {@link etcdEvents} become Powertools metrics under the names and dimensions of the OTel
 * metrics (README, "Telemetry"): `middy_etcd.wait.duration`, `middy_etcd.hold.duration`,
 * `middy_etcd.lease.losses`, `middy_etcd.rate_limit.admissions` / `.rejections`,
 * `messaging.client.consumed.messages`. Each event is published at once as a single metric
 * (`metrics.singleMetric()`): its dimensions (primitive, outcome) are its own, and the
 * service's default dimensions come along.
 */

/** What the bridge uses of a Powertools `Metrics` (typed here so that the package stays optional). */
export interface PowertoolsMetricsLike {
  singleMetric(): {
    addDimension(name: string, value: string): unknown
    addMetric(name: string, unit: 'Seconds' | 'Count', value: number): unknown
  }
}

/** One metric an event turns into. */
export interface BridgedMetric {
  name: string
  unit: 'Seconds' | 'Count'
  value: number
  dimensions: Record<string, string>
}

/** The OTel metrics' primitive names for the events' (an rwLock event does not say its mode). */
const PRIMITIVE: Record<EtcdEvent['primitive'], string> = {
  lock: 'lock',
  rwLock: 'rwlock',
  semaphore: 'semaphore',
  rateLimit: 'rate_limit',
  leader: 'election',
  barrier: 'barrier',
  doubleBarrier: 'double_barrier',
  queue: 'queue',
  stm: 'stm',
  idempotency: 'idempotency',
  // etcdConfig's 'changed' and 'reloaded' are neither waits nor holds: they turn into no metric.
  config: 'config',
}

/** What a skipped call's wait ended with, by primitive (a try-lock miss, a refused rate, a duplicate…). */
function skippedOutcome(event: EtcdEvent): string | undefined {
  switch (event.primitive) {
    case 'rateLimit':
      return 'rejected'
    case 'idempotency':
      return event.detail?.reason === 'duplicate' ? 'duplicate' : event.detail?.reason === 'in-progress' ? 'in_progress' : undefined
    case 'queue':
      return undefined // an empty receive: no wait of a primitive
    default:
      return 'locked'
  }
}

/** The metrics one event turns into (none for `waiting`, which only announces a wait). */
export function metricsOfEvent(event: EtcdEvent): BridgedMetric[] {
  const primitive = PRIMITIVE[event.primitive]
  const wait = (outcome: string, ms = 0): BridgedMetric => ({
    name: 'middy_etcd.wait.duration',
    unit: 'Seconds',
    value: ms / 1000,
    dimensions: { 'middy_etcd.primitive': primitive, 'middy_etcd.outcome': outcome },
  })
  const hold = (outcome: string, ms: number): BridgedMetric => ({
    name: 'middy_etcd.hold.duration',
    unit: 'Seconds',
    value: ms / 1000,
    dimensions: { 'middy_etcd.primitive': primitive, 'middy_etcd.outcome': outcome },
  })
  const count = (name: string, value: number, dimensions: Record<string, string>): BridgedMetric => ({
    name,
    unit: 'Count',
    value,
    dimensions,
  })
  const out: BridgedMetric[] = []
  switch (event.type) {
    case 'acquired':
      if (event.primitive === 'queue') {
        const messages = Number(event.detail?.messages ?? 0)
        out.push(
          count('messaging.client.consumed.messages', messages, { 'messaging.system': 'etcd', 'messaging.destination.name': event.name }),
        )
        break
      }
      if (event.waitedMs !== undefined) out.push(wait('acquired', event.waitedMs))
      if (event.primitive === 'rateLimit') out.push(count('middy_etcd.rate_limit.admissions', 1, {}))
      break
    case 'skipped': {
      const outcome = skippedOutcome(event)
      if (outcome !== undefined) out.push(wait(outcome))
      if (event.primitive === 'rateLimit') out.push(count('middy_etcd.rate_limit.rejections', 1, {}))
      break
    }
    case 'released':
      if (event.heldMs !== undefined) out.push(hold('released', event.heldMs))
      break
    case 'lost':
      if (event.heldMs !== undefined) out.push(hold('lost', event.heldMs))
      out.push(count('middy_etcd.lease.losses', 1, { 'middy_etcd.primitive': primitive }))
      break
  }
  return out
}

/**
 * Publishes every middleware event of this process as Powertools metrics from now on; returns
 * the function that stops it. A metric Powertools refuses (e.g. an invalid dimension) is
 * dropped: observability must not fail the invocation.
 */
export function etcdPowertoolsMetrics(metrics: PowertoolsMetricsLike): () => void {
  const listener = (event: EtcdEvent) => {
    for (const m of metricsOfEvent(event)) {
      try {
        const single = metrics.singleMetric()
        for (const [name, value] of Object.entries(m.dimensions)) single.addDimension(name, value)
        single.addMetric(m.name, m.unit, m.value)
      } catch {
        // dropped, as above
      }
    }
  }
  etcdEvents.on('event', listener)
  return () => etcdEvents.off('event', listener)
}
