// Queue spans by the messaging semantic conventions and trace context through the queue, with
// the OTel SDK registered: a message enqueued inside a span is processed in a span linked to
// the producer's — in-process (receive), through queueConsumer, and through the dispatcher.
import middy from '@middy/core'
import { SpanKind, SpanStatusCode } from '@opentelemetry/api'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { describe, expect, it } from 'vitest'
import { runDispatcher } from '../../dispatch/dispatcher.js'
import { PriorityQueue, Queue, type QueueDispatchEvent } from '../../lib/index.js'
import { queueKeys } from '../../lib/core/keys.js'
import { MESSAGING_ATTRIBUTES as M } from '../../lib/index.js'
import { queueConsumer } from '../../middleware/index.js'
import { uniqueName, until, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'
import { useOtelSdk } from './otel-sdk.js'

const etcd = useEtcd()
const otel = await useOtelSdk()

/** Enqueues `value` inside a span of its own; returns the `send` span (a child of it). */
async function enqueueTraced(q: Queue | PriorityQueue, value: string, priority?: number): Promise<ReadableSpan> {
  const { id } = await otel.tracer.startActiveSpan('producer', async (parent) => {
    const enqueued = q instanceof PriorityQueue ? await q.enqueue(value, priority ?? 0) : await q.enqueue(value)
    parent.end()
    return enqueued
  })
  const [send] = otel.spansOf(`send ${q.name}`, { [M.messageId]: id })
  expect(send.kind).toBe(SpanKind.PRODUCER)
  expect(send.parentSpanContext?.spanId).toBe(otel.spansOf('producer').at(-1)!.spanContext().spanId)
  return send
}

const traceparentOf = (span: ReadableSpan) => `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`
const linksTo = (span: ReadableSpan, producer: ReadableSpan) =>
  span.links.some((l) => l.context.spanId === producer.spanContext().spanId && l.context.traceId === producer.spanContext().traceId)

describe('queue telemetry', () => {
  it('send, receive and settle spans with the conventions’ attributes; the item’s value stays the bare payload (Go layout)', async () => {
    const name = uniqueName('tq')
    const q = new Queue(etcd.client, name)
    const send = await enqueueTraced(q, 'payload-1')
    expect(send.attributes).toMatchObject({
      [M.system]: 'etcd',
      [M.destination]: name,
      [M.operationName]: 'send',
      [M.operationType]: 'send',
    })
    // What a Go consumer reads: the item's raw value is the payload; the trace context is in __meta.
    const items = await etcd.client.getAll().prefix(`${name}/`).strings()
    expect(Object.values(items)).toEqual(['payload-1'])
    const itemKey = Object.keys(items)[0]
    const meta = JSON.parse((await etcd.client.get(queueKeys.meta(itemKey)).string())!)
    expect(meta.traceparent).toBe(traceparentOf(send))

    const [message] = await q.receive()
    expect(message.raw.toString()).toBe('payload-1')
    expect(message.traceparent).toBe(traceparentOf(send))
    const [receive] = otel.spansOf(`receive ${name}`)
    expect(receive.kind).toBe(SpanKind.CLIENT)
    expect(receive.attributes).toMatchObject({ [M.batchCount]: 1, [M.messageId]: message.id, [M.deliveryCount]: 1 })
    expect(linksTo(receive, send)).toBe(true)
    await q.ack(message)
    const [settle] = otel.spansOf(`settle ${name}`)
    expect(settle.attributes).toMatchObject({ [M.operationName]: 'ack', [M.operationType]: 'settle', [M.messageId]: message.id })
    expect(await otel.counted('messaging.client.sent.messages', { [M.destination]: name })).toBe(1)
    expect(await otel.counted('messaging.client.consumed.messages', { [M.destination]: name })).toBe(1)
    expect(await otel.recorded('messaging.client.operation.duration', { [M.destination]: name, [M.operationName]: 'ack' })).toBe(1)
  })

  it('the trace context survives a delay, a message group and a PriorityQueue', async () => {
    const name = uniqueName('tq-moves')
    const q = new Queue(etcd.client, name)
    const delayedSend = await otel.tracer.startActiveSpan('producer', async (parent) => {
      const { id } = await q.enqueue('later', { delayMs: 300 })
      parent.end()
      return otel.spansOf(`send ${name}`, { [M.messageId]: id })[0]
    })
    const grouped = await otel.tracer.startActiveSpan('producer', async (parent) => {
      await q.enqueue('g1', { group: 'g' })
      const { id } = await q.enqueue('g2', { group: 'g' }) // waits behind g1, in an envelope
      parent.end()
      return otel.spansOf(`send ${name}`, { [M.messageId]: id })[0]
    })
    const seen = new Map<string, string | undefined>()
    await until('every message', 10_000, async () => {
      for (const m of await q.receive({ max: 10, wait: false })) {
        seen.set(m.value, m.traceparent)
        await q.ack(m)
      }
      return seen.size === 3
    })
    expect(seen.get('later')).toBe(traceparentOf(delayedSend))
    expect(seen.get('g2')).toBe(traceparentOf(grouped))

    const pq = new PriorityQueue(etcd.client, uniqueName('tpq'))
    const send = await enqueueTraced(pq, 'urgent', 1)
    const [m] = await pq.receive()
    expect(m.traceparent).toBe(traceparentOf(send))
    await pq.ack(m)
  })

  it('a receive stopped by its signal on an empty queue ends with no message and no error', async () => {
    const name = uniqueName('tq-empty')
    const stop = new AbortController()
    const waiting = new Queue(etcd.client, name).receive({ signal: stop.signal })
    setTimeout(() => stop.abort(), 100)
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' })
    const [receive] = otel.spansOf(`receive ${name}`)
    expect(receive.attributes[M.batchCount]).toBe(0)
    expect(receive.attributes[M.errorType]).toBeUndefined()
    expect(receive.status.code).toBe(SpanStatusCode.UNSET)
  })

  it('nack counts a redelivery and the dead-letter move; the settle span says nack, then dead_letter', async () => {
    const name = uniqueName('tq-dlq')
    const q = new Queue(etcd.client, name, { maxReceives: 2, deadLetterQueue: `${name}-dead` })
    await enqueueTraced(q, 'poison')
    const [first] = await q.receive()
    await q.nack(first, { delay: 0 })
    const [second] = await q.receive()
    expect(second.receiveCount).toBe(2)
    await q.nack(second)
    expect(otel.spansOf(`settle ${name}`).map((s) => s.attributes[M.operationName])).toEqual(['nack', 'dead_letter'])
    expect(await otel.counted('middy_etcd.queue.redeliveries', { [M.destination]: name })).toBe(1)
    expect(await otel.counted('middy_etcd.queue.dead_letters', { [M.destination]: name })).toBe(1)
    const [dead] = await new Queue(etcd.client, `${name}-dead`).receive()
    expect(dead.value).toBe('poison')
  })

  it('queueConsumer: a process span linked to the producer’s send span, ended after the batch is settled', async () => {
    const name = uniqueName('tq-consumer')
    const q = new Queue(etcd.client, name)
    const send = await enqueueTraced(q, 'job')
    let handled = 0
    const handler = middy(async (_e: unknown, context: any) => {
      handled += context.etcd.messages.length
      return { batchItemFailures: [] }
    }).use(queueConsumer({ queue: name, client: etcd.client }))
    await handler({}, lambdaContext())
    expect(handled).toBe(1)
    const [processSpan] = otel.spansOf(`process ${name}`)
    expect(processSpan.kind).toBe(SpanKind.CONSUMER)
    expect(processSpan.attributes).toMatchObject({
      [M.system]: 'etcd',
      [M.operationType]: 'process',
      [M.batchCount]: 1,
      [M.deliveryCount]: 1,
    })
    expect(linksTo(processSpan, send)).toBe(true)
    expect(processSpan.status.code).toBe(SpanStatusCode.UNSET)
    expect(otel.spansOf(`settle ${name}`)).toHaveLength(1)
    expect(await otel.recorded('messaging.process.duration', { [M.destination]: name })).toBe(1)
    expect(await q.size()).toBe(0)
  })

  it('a throwing handler ends its process span as an error', async () => {
    const name = uniqueName('tq-throws')
    const q = new Queue(etcd.client, name)
    await enqueueTraced(q, 'job')
    const handler = middy(async () => {
      throw new Error('nope')
    }).use(queueConsumer({ queue: name, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toThrow('nope')
    const [processSpan] = otel.spansOf(`process ${name}`)
    expect(processSpan.status.code).toBe(SpanStatusCode.ERROR)
    expect(processSpan.attributes[M.errorType]).toBe('Error')
    expect(otel.spansOf(`settle ${name}`)[0].attributes[M.operationName]).toBe('nack')
  })

  it('through the dispatcher: its process span (the Invoke call’s parent) and the function’s both link to the producer', async () => {
    const name = uniqueName('tq-dispatch')
    const q = new Queue(etcd.client, name)
    const send = await enqueueTraced(q, 'dispatched')
    const handler = middy(async () => ({ batchItemFailures: [] })).use(queueConsumer({ queue: name, client: etcd.newClient() }))
    const abort = new AbortController()
    let invocations = 0
    const running = runDispatcher({
      client: etcd.client,
      subscriptions: [{ function: 'worker', queue: name }],
      signal: abort.signal,
      invoke: async (_fn, event) => {
        invocations++
        // As through the Invoke API: the event as JSON, the function in its own context.
        await handler(JSON.parse(JSON.stringify(event)) as QueueDispatchEvent, lambdaContext())
        return { ok: true }
      },
    })
    await until('the dispatched message to be acked', 15_000, async () => (await q.size()) === 0)
    abort.abort()
    await running
    expect(invocations).toBe(1)
    await until('both process spans', 5_000, () => otel.spansOf(`process ${name}`).length === 2)
    const spans = otel.spansOf(`process ${name}`)
    for (const s of spans) expect(linksTo(s, send)).toBe(true)
    // The function's span is a child of the dispatcher's (the Invoke call ran inside it).
    const [inner, outer] = spans.sort((a, b) => (a.parentSpanContext ? -1 : 0) - (b.parentSpanContext ? -1 : 0))
    expect(inner.parentSpanContext?.spanId).toBe(outer.spanContext().spanId)
  })
})
