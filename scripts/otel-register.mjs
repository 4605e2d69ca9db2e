// Registers the OpenTelemetry SDK with in-memory exporters before anything else loads, for a
// run with telemetry on and no change to the code it runs — e.g. the lock-invocation bench row
// with the SDK (README, "Telemetry"):
//   node --import ./scripts/otel-register.mjs --import tsx bench/run.ts --only lock-invocation
// Spans go to an InMemorySpanExporter through a SimpleSpanProcessor (every span exported as it
// ends, the costliest honest set-up), metrics to a MeterProvider whose reader is never collected.
import { context, metrics, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'

const exporter = new InMemorySpanExporter()
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
metrics.setGlobalMeterProvider(new MeterProvider())
// Keep the exporter's memory bounded over a long run.
setInterval(() => exporter.reset(), 1_000).unref()
