import type { Attributes, Link, Span, SpanContext } from '@opentelemetry/api'
import { outcomeOf } from './coordination.js'
import { MESSAGING_ATTR, MESSAGING_SYSTEM } from './names.js'
import { activeInstruments, activeTracer, otelApi, type Instruments } from './otel.js'

/**
 * Queue spans and metrics by the OpenTelemetry messaging semantic conventions (v1.44+,
 * Development): `send {queue}` (producer) on enqueue, `receive {queue}` (client) on receive,
 * `process {queue}` (consumer) around the processing of a batch, `settle {queue}` (client) on
 * ack / nack / dead-letter; `messaging.client.operation.duration`, `messaging.client.sent.messages`,
 * `messaging.client.consumed.messages`, `messaging.process.duration`.
 *
 * Trace context travels with the message in W3C form (`traceparent`, `tracestate`), written
 * and parsed here rather than by the registered propagator: a link needs only the producer's
 * span context, and an application that registered a tracer provider without a W3C propagator
 * still gets its links. The queue stores it in the message's metadata (lib/queue/meta.ts), never
 * in the item's value, so Go consumers read the payload unchanged.
 */

/** The W3C trace context a message carries. */
export interface MessageTrace {
  traceparent?: string
  tracestate?: string
}

/** What a message offers the consumer side: its id, delivery count and trace context. */
export interface TracedMessage extends MessageTrace {
  readonly id: string
  readonly receiveCount: number
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-|$)/

/** The W3C `traceparent` of a span context (version 00). */
function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`
}

/** The span context a message's trace context names (undefined when it carries none, or one that is not valid). */
export function messageSpanContext(m: MessageTrace): SpanContext | undefined {
  const api = otelApi()
  if (api === undefined || typeof m.traceparent !== 'string') return undefined
  const parts = TRACEPARENT.exec(m.traceparent)
  if (!parts || parts[1] === 'ff') return undefined
  const sc: SpanContext = {
    traceId: parts[2],
    spanId: parts[3],
    traceFlags: Number.parseInt(parts[4], 16),
    isRemote: true,
    ...(typeof m.tracestate === 'string' && m.tracestate !== '' ? { traceState: api.createTraceState(m.tracestate) } : {}),
  }
  return api.isSpanContextValid(sc) ? sc : undefined
}

function linksOf(messages: readonly MessageTrace[]): Link[] {
  const links: Link[] = []
  for (const m of messages) {
    const context = messageSpanContext(m)
    if (context) links.push({ context })
  }
  return links
}

function baseAttributes(queue: string, operationName: string, operationType: string): Attributes {
  return {
    [MESSAGING_ATTR.system]: MESSAGING_SYSTEM,
    [MESSAGING_ATTR.destination]: queue,
    [MESSAGING_ATTR.operationName]: operationName,
    [MESSAGING_ATTR.operationType]: operationType,
  }
}

/** One messaging operation: its span and its `messaging.client.operation.duration`. */
export class MessagingProbe {
  private readonly started = performance.now()
  private done = false

  constructor(
    readonly span: Span | undefined,
    private readonly instruments: Instruments | undefined,
    private readonly attributes: Attributes,
    private readonly duration: 'operationDuration' | 'processDuration',
  ) {}

  /** The trace context to store with a message this operation sends (none when no span records it). */
  trace(): MessageTrace | undefined {
    if (this.span === undefined) return undefined
    const sc = this.span.spanContext()
    if (!otelApi()?.isSpanContextValid(sc)) return undefined
    const tracestate = sc.traceState?.serialize()
    return tracestate ? { traceparent: formatTraceparent(sc), tracestate } : { traceparent: formatTraceparent(sc) }
  }

  /** Ends the operation; `attributes` are added to its span (not to its metric). */
  end(attributes?: Attributes): void {
    if (this.done) return
    this.done = true
    if (this.span) {
      if (attributes) this.span.setAttributes(attributes)
      this.span.end()
    }
    this.instruments?.[this.duration].record((performance.now() - this.started) / 1000, this.attributes)
  }

  /** Ends the operation as failed: `error.type` on the span and the metric. */
  fail(err: unknown): void {
    if (this.done) return
    const errorType = errorTypeOf(err)
    this.attributes[MESSAGING_ATTR.errorType] = errorType
    if (this.span) {
      this.span.setAttribute(MESSAGING_ATTR.errorType, errorType)
      if (err instanceof Error) this.span.recordException(err)
      this.span.setStatus({ code: otelApi()?.SpanStatusCode.ERROR ?? 2, message: err instanceof Error ? err.message : String(err) })
    }
    this.end()
  }
}

/** The conventions' `error.type`: the error's code when it has one (ours all do), else its class name. */
function errorTypeOf(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code
  if (typeof code === 'string') return code
  if (outcomeOf(err) === 'timeout') return 'timeout'
  return err instanceof Error ? err.name : '_OTHER'
}

/** The span kinds, as numbers: the API's enum is only reachable once it is loaded. */
const KIND = { client: 2, producer: 3, consumer: 4 } as const

function start(
  operationType: string,
  operationName: string,
  queue: string,
  kind: number,
  duration: 'operationDuration' | 'processDuration',
  extra?: { attributes?: Attributes; links?: Link[] },
): MessagingProbe | undefined {
  const tracer = activeTracer()
  const instruments = activeInstruments()
  if (tracer === undefined && instruments === undefined) return undefined
  const attributes = baseAttributes(queue, operationName, operationType)
  // Named by the operation type (`settle q`, not `ack q`): one span name per kind of operation.
  const span = tracer?.startSpan(`${operationType} ${queue}`, {
    kind,
    attributes: { ...attributes, ...extra?.attributes },
    links: extra?.links,
  })
  return new MessagingProbe(span, instruments, attributes, duration)
}

/** `send {queue}`: an enqueue. Store {@link MessagingProbe.trace} with the message; end with its id. */
export function startSend(queue: string): MessagingProbe | undefined {
  return start('send', 'send', queue, KIND.producer, 'operationDuration')
}

/** Ends a send: the message id on its span, one message counted as sent. */
export function endSend(probe: MessagingProbe, queue: string, id: string): void {
  probe.end({ [MESSAGING_ATTR.messageId]: id })
  activeInstruments()?.sentMessages.add(1, baseAttributes(queue, 'send', 'send'))
}

/** `receive {queue}`: a receive (its wait for messages included). */
export function startReceive(queue: string): MessagingProbe | undefined {
  return start('receive', 'receive', queue, KIND.client, 'operationDuration')
}

/** Ends a receive: the batch size, links to the messages' producers, consumed and redelivered messages counted. */
export function endReceive(probe: MessagingProbe, queue: string, messages: readonly TracedMessage[]): void {
  probe.span?.addLinks(linksOf(messages))
  probe.end({
    [MESSAGING_ATTR.batchCount]: messages.length,
    ...(messages.length === 1
      ? { [MESSAGING_ATTR.messageId]: messages[0].id, [MESSAGING_ATTR.deliveryCount]: messages[0].receiveCount }
      : {}),
  })
  const instruments = activeInstruments()
  if (instruments === undefined || messages.length === 0) return
  const attributes = baseAttributes(queue, 'receive', 'receive')
  instruments.consumedMessages.add(messages.length, attributes)
  const again = messages.filter((m) => m.receiveCount > 1).length
  if (again > 0) instruments.redeliveries.add(again, { [MESSAGING_ATTR.system]: MESSAGING_SYSTEM, [MESSAGING_ATTR.destination]: queue })
}

/**
 * `process {queue}`: the processing of a batch, linked to each message's producer span (the
 * trace context each carries), whatever process received it. End it when the batch is settled.
 */
export function startProcess(queue: string, messages: readonly TracedMessage[]): MessagingProbe | undefined {
  return start('process', 'process', queue, KIND.consumer, 'processDuration', {
    attributes: {
      [MESSAGING_ATTR.batchCount]: messages.length,
      ...(messages.length === 1
        ? { [MESSAGING_ATTR.messageId]: messages[0].id, [MESSAGING_ATTR.deliveryCount]: messages[0].receiveCount }
        : {}),
    },
    links: linksOf(messages),
  })
}

/**
 * Runs `work` with the process span as the active span (its own spans, and the Invoke call of
 * a dispatcher, are its children), when a context manager is registered.
 */
export function withProcess<T>(probe: MessagingProbe | undefined, work: () => Promise<T>): Promise<T> {
  const api = otelApi()
  if (probe?.span === undefined || api === undefined) return work()
  return api.context.with(api.trace.setSpan(api.context.active(), probe.span), work)
}

/** How a message was settled: the conventions' operation names for `settle`. */
export type Settlement = 'ack' | 'nack' | 'dead_letter'

/** `settle {queue}`: an ack, nack or move to the dead-letter queue of `count` messages. */
export function startSettle(queue: string, how: Settlement, count: number, id?: string): MessagingProbe | undefined {
  return start('settle', how, queue, KIND.client, 'operationDuration', {
    attributes: { [MESSAGING_ATTR.batchCount]: count, ...(id === undefined ? {} : { [MESSAGING_ATTR.messageId]: id }) },
  })
}

/** Counts `count` messages moved to a dead-letter queue. */
export function countDeadLetters(queue: string, count: number): void {
  if (count > 0)
    activeInstruments()?.deadLetters.add(count, { [MESSAGING_ATTR.system]: MESSAGING_SYSTEM, [MESSAGING_ATTR.destination]: queue })
}
