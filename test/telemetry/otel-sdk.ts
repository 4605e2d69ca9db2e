// The OTel SDK as an application registers it, with in-memory exporters: spans as they end and
// metrics on demand. OTel's globals are per process; vitest runs each test file in its own
// worker, so a file that calls this does not leak its providers into another file.
import { context, metrics, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { MeterProvider, MetricReader, type DataPoint, type Histogram, type MetricData } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { afterAll } from 'vitest'
import { telemetryReady } from '../../lib/index.js'

/** A reader collected by the test itself. */
class TestReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

export async function useOtelSdk() {
  const exporter = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const reader = new TestReader()
  const meterProvider = new MeterProvider({ readers: [reader] })
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  trace.setGlobalTracerProvider(tracerProvider)
  metrics.setGlobalMeterProvider(meterProvider)
  if (!(await telemetryReady())) throw new Error('@opentelemetry/api did not load')
  afterAll(async () => {
    await tracerProvider.shutdown()
    await meterProvider.shutdown()
  })

  /** Every finished span so far. */
  const spans = (): ReadableSpan[] => exporter.getFinishedSpans()
  /** The finished spans named `name` whose attributes include `attrs`. */
  const spansOf = (name: string, attrs: Record<string, unknown> = {}) =>
    spans().filter((s) => s.name === name && Object.entries(attrs).every(([k, v]) => s.attributes[k] === v))
  /** Every metric collected now, by name. */
  const collect = async (): Promise<Map<string, MetricData>> => {
    const { resourceMetrics } = await reader.collect()
    return new Map(resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).map((m) => [m.descriptor.name, m]))
  }
  /** The data points of metric `name` whose attributes include `attrs`. */
  const pointsOf = async (name: string, attrs: Record<string, unknown> = {}): Promise<DataPoint<unknown>[]> => {
    const metric = (await collect()).get(name)
    const points = (metric?.dataPoints ?? []) as DataPoint<unknown>[]
    return points.filter((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v))
  }
  /** The sum of a counter's matching points. */
  const counted = async (name: string, attrs: Record<string, unknown> = {}) =>
    (await pointsOf(name, attrs)).reduce((n, p) => n + (p.value as number), 0)
  /** The count of a histogram's matching points. */
  const recorded = async (name: string, attrs: Record<string, unknown> = {}) =>
    (await pointsOf(name, attrs)).reduce((n, p) => n + (p.value as Histogram).count, 0)
  return { exporter, spans, spansOf, collect, pointsOf, counted, recorded, tracer: trace.getTracer('test') }
}
