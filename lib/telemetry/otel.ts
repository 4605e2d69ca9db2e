import type { Counter, Histogram, Meter, Tracer } from '@opentelemetry/api'

/**
 * The one door to OpenTelemetry. `@opentelemetry/api` is an optional peer dependency: it is
 * loaded here with a guarded dynamic import (an unresolvable `import()` with a `.catch` is no
 * error for Node nor a build error for esbuild), so a service without it imports the library as
 * before and nothing here does any work. With it, spans and metrics go to whatever provider the
 * application registered (the OTel SDK, the Lambda layer), read from the API's globals on each
 * use, so a provider registered after this module loaded is found. When neither a tracer nor a
 * meter provider is registered, {@link activeTracer} and {@link activeInstruments} return
 * undefined after a few property reads and callers allocate nothing: one branch on the hot path.
 */

type Api = typeof import('@opentelemetry/api')

/** The instrumentation scope of every span and instrument (exported by the barrel through names.ts). */
export const INSTRUMENTATION_SCOPE = 'middy-etcd'

let api: Api | undefined

/** @internal Resolves once the API has been looked for: true when it is installed. */
export const apiLoaded: Promise<boolean> = import('@opentelemetry/api').then(
  (module) => {
    api = module
    return true
  },
  () => false,
)

/** @internal The loaded API (undefined while loading and when it is not installed). */
export function otelApi(): Api | undefined {
  return api
}

/** The provider behind the global proxy: the API's no-op one until an SDK registers its own. */
let seenTracerDelegate: unknown
let tracer: Tracer | undefined
let noopTracerDelegate: unknown

/** @internal Our tracer when a tracer provider is registered, else undefined. */
export function activeTracer(): Tracer | undefined {
  if (api === undefined) return undefined
  const provider = api.trace.getTracerProvider()
  // The API hands out one proxy provider, before and after registration; what changes is its delegate.
  const delegate = 'getDelegate' in provider && typeof provider.getDelegate === 'function' ? provider.getDelegate() : provider
  if (delegate === seenTracerDelegate) return tracer
  // A fresh proxy's delegate is the API's no-op provider: the one to compare with.
  noopTracerDelegate ??= new api.ProxyTracerProvider().getDelegate()
  seenTracerDelegate = delegate
  tracer = delegate === noopTracerDelegate ? undefined : provider.getTracer(INSTRUMENTATION_SCOPE)
  return tracer
}

/** Every instrument, created once per meter provider (names and units: README, "Telemetry"). */
export interface Instruments {
  waitDuration: Histogram
  holdDuration: Histogram
  leaseLosses: Counter
  rateAdmissions: Counter
  rateRejections: Counter
  stmConflicts: Counter
  operationDuration: Histogram
  sentMessages: Counter
  consumedMessages: Counter
  processDuration: Histogram
  deadLetters: Counter
  redeliveries: Counter
}

/** Bucket bounds (s) for waits and holds: from a one-round-trip grant to a Lambda's whole run. */
const DURATION_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900]

function createInstruments(meter: Meter): Instruments {
  const seconds = (name: string, description: string) =>
    meter.createHistogram(name, { unit: 's', description, advice: { explicitBucketBoundaries: DURATION_BOUNDARIES } })
  return {
    waitDuration: seconds(
      'middy_etcd.wait.duration',
      'Time a call waited for a lock, permit, rate token, leadership, barrier or idempotency record',
    ),
    holdDuration: seconds('middy_etcd.hold.duration', 'Time a grant was held, from its grant to its release or loss'),
    leaseLosses: meter.createCounter('middy_etcd.lease.losses', { unit: '{loss}', description: 'Grants whose lease was lost while held' }),
    rateAdmissions: meter.createCounter('middy_etcd.rate_limit.admissions', {
      unit: '{call}',
      description: 'Calls a rate limiter admitted',
    }),
    rateRejections: meter.createCounter('middy_etcd.rate_limit.rejections', {
      unit: '{call}',
      description: 'Calls a rate limiter refused',
    }),
    stmConflicts: meter.createCounter('middy_etcd.stm.conflicts', {
      unit: '{conflict}',
      description: 'STM attempts that conflicted and ran again',
    }),
    operationDuration: seconds('messaging.client.operation.duration', 'Duration of a messaging operation (send, receive, settle)'),
    sentMessages: meter.createCounter('messaging.client.sent.messages', { unit: '{message}', description: 'Messages enqueued' }),
    consumedMessages: meter.createCounter('messaging.client.consumed.messages', { unit: '{message}', description: 'Messages received' }),
    processDuration: seconds('messaging.process.duration', 'Duration of processing a batch of received messages'),
    deadLetters: meter.createCounter('middy_etcd.queue.dead_letters', {
      unit: '{message}',
      description: 'Messages moved to a dead-letter queue',
    }),
    redeliveries: meter.createCounter('middy_etcd.queue.redeliveries', {
      unit: '{message}',
      description: 'Messages received again (receive count above 1)',
    }),
  }
}

let seenMeterProvider: unknown
let instruments: Instruments | undefined

/** @internal The instruments when a meter provider is registered, else undefined. */
export function activeInstruments(): Instruments | undefined {
  if (api === undefined) return undefined
  const provider = api.metrics.getMeterProvider()
  if (provider === seenMeterProvider) return instruments
  seenMeterProvider = provider
  const meter = provider.getMeter(INSTRUMENTATION_SCOPE)
  // The API's no-op provider hands out the one no-op meter: instruments of it would record nothing.
  instruments = meter === api.createNoopMeter() ? undefined : createInstruments(meter)
  return instruments
}

/** A span attribute for a fence or revision: a number while exact (every real revision), else its decimal string. */
export function revisionAttribute(revision: bigint): number | string {
  return revision <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(revision) : revision.toString()
}
