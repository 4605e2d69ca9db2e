// With @opentelemetry/api installed but no SDK registered (this file registers none; OTel's
// globals are per process and vitest gives each file its own worker): nothing is recorded, no
// probe is made (the primitives' hot path is one branch), and the primitives work as before.
import { context, trace } from '@opentelemetry/api'
import { describe, expect, it } from 'vitest'
import { Mutex, Queue, Session, telemetryReady } from '../../lib/index.js'
import { startHold, startStm, startWait } from '../../lib/telemetry/coordination.js'
import { activeInstruments, activeTracer } from '../../lib/telemetry/otel.js'
import { uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd()

describe('telemetry with no SDK registered', () => {
  it('makes no probe, no span and no instrument, and a lock and a queue round trip work', async () => {
    expect(await telemetryReady()).toBe(true)
    expect(activeTracer()).toBeUndefined()
    expect(activeInstruments()).toBeUndefined()
    expect(startWait('lock', 'x')).toBeUndefined()
    expect(startHold('lock', 'x', 1n, new AbortController().signal)).toBeUndefined()
    expect(startStm()).toBeUndefined()

    const session = await Session.create(etcd.client)
    const m = new Mutex(session, uniqueName('off'))
    await m.lock()
    expect(m.fence).toBeGreaterThan(0n)
    await m.unlock()
    const q = new Queue(etcd.client, uniqueName('off-q'))
    // Inside a (non-recording) span the message carries no trace context: there is none to carry.
    const parent = trace.getTracer('t').startSpan('parent')
    await context.with(trace.setSpan(context.active(), parent), () => q.enqueue('hello'))
    const [message] = await q.receive()
    expect(message.value).toBe('hello')
    expect(message.traceparent).toBeUndefined()
    await q.ack(message)
    await session.close()
  })
})
