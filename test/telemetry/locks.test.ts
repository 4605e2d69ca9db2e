// Spans and metrics of the locks (Mutex) with the OTel SDK registered: the wait's span and its
// outcome, the hold's span ending at release, a lost lease as an event on the hold.
import { SpanStatusCode } from '@opentelemetry/api'
import { describe, expect, it } from 'vitest'
import { LEASE_LOST_EVENT, LockedError, Mutex, Session, SessionExpiredError, TELEMETRY_ATTRIBUTES as A } from '../../lib/index.js'
import { timeoutSignal } from '../../lib/timers.js'
import { uniqueName, until, useEtcd } from '../helpers.js'
import { useOtelSdk } from './otel-sdk.js'

const etcd = useEtcd()
const otel = await useOtelSdk()

describe('Mutex telemetry', () => {
  it('a lock is a wait span (acquired, with the fence) then a hold span ending at unlock, both under the caller’s span', async () => {
    const name = uniqueName('lock')
    const session = await Session.create(etcd.client)
    const m = new Mutex(session, name)
    await otel.tracer.startActiveSpan('handler', async (parent) => {
      await m.lock()
      expect(otel.spansOf('hold lock', { [A.name]: name })).toHaveLength(0) // still held
      await m.unlock()
      parent.end()
    })
    const [wait] = otel.spansOf('wait lock', { [A.name]: name })
    const [hold] = otel.spansOf('hold lock', { [A.name]: name })
    const [handler] = otel.spansOf('handler')
    expect(wait.attributes[A.outcome]).toBe('acquired')
    expect(wait.attributes[A.primitive]).toBe('lock')
    expect(typeof wait.attributes[A.fence]).toBe('number')
    expect(hold.attributes[A.outcome]).toBe('released')
    expect(hold.attributes[A.fence]).toBe(wait.attributes[A.fence])
    expect(wait.parentSpanContext?.spanId).toBe(handler.spanContext().spanId)
    expect(hold.parentSpanContext?.spanId).toBe(handler.spanContext().spanId)
    expect(await otel.recorded('middy_etcd.wait.duration', { [A.primitive]: 'lock', [A.outcome]: 'acquired' })).toBeGreaterThan(0)
    expect(await otel.recorded('middy_etcd.hold.duration', { [A.primitive]: 'lock', [A.outcome]: 'released' })).toBeGreaterThan(0)
    await session.close()
  })

  it('a tryLock miss records `locked`, a timed-out wait `timeout`, with unset status (expected answers)', async () => {
    const name = uniqueName('lock')
    const [a, b] = [await Session.create(etcd.client), await Session.create(etcd.client)]
    const holder = new Mutex(a, name)
    await holder.lock()
    await expect(new Mutex(b, name).tryLock()).rejects.toBeInstanceOf(LockedError)
    const timeout = timeoutSignal(200)
    await expect(new Mutex(b, name).lock({ signal: timeout.signal })).rejects.toMatchObject({ name: 'TimeoutError' })
    const outcomes = otel.spansOf('wait lock', { [A.name]: name }).map((s) => s.attributes[A.outcome])
    expect(outcomes.sort()).toEqual(['acquired', 'locked', 'timeout'])
    const timedOut = otel.spansOf('wait lock', { [A.name]: name, [A.outcome]: 'timeout' })[0]
    expect(timedOut.status.code).toBe(SpanStatusCode.UNSET)
    expect(await otel.recorded('middy_etcd.wait.duration', { [A.primitive]: 'lock', [A.outcome]: 'timeout' })).toBeGreaterThan(0)
    await holder.unlock()
    await Promise.all([a.close(), b.close()])
  })

  it('a lease revoked while held adds the lease-lost event (reason revoked) and ends the hold as `lost`', async () => {
    const name = uniqueName('lock')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const m = new Mutex(session, name)
    await m.lock()
    await etcd.newClient().leaseClient.leaseRevoke({ ID: session.leaseId })
    const hold = await until('the hold span to end', 10_000, () => otel.spansOf('hold lock', { [A.name]: name })[0])
    expect(hold.attributes[A.outcome]).toBe('lost')
    expect(hold.status.code).toBe(SpanStatusCode.ERROR)
    const event = hold.events.find((e) => e.name === LEASE_LOST_EVENT)
    expect(event?.attributes?.[A.reason]).toBe('revoked')
    expect(await otel.counted('middy_etcd.lease.losses', { [A.primitive]: 'lock', [A.reason]: 'revoked' })).toBe(1)
    await session.close()
  })

  it('a waiter whose lease is revoked while it waits records `lost` with an error status', async () => {
    const name = uniqueName('lock')
    const [a, b] = [await Session.create(etcd.client), await Session.create(etcd.client, { ttl: 5 })]
    const holder = new Mutex(a, name)
    await holder.lock()
    let queued!: () => void
    const waiting = new Promise<void>((resolve) => (queued = resolve))
    const waiter = new Mutex(b, name).lock({ onWaiting: () => queued() })
    await waiting
    await etcd.newClient().leaseClient.leaseRevoke({ ID: b.leaseId })
    await expect(waiter).rejects.toBeInstanceOf(SessionExpiredError)
    const [lost] = otel.spansOf('wait lock', { [A.name]: name, [A.outcome]: 'lost' })
    expect(lost.status.code).toBe(SpanStatusCode.ERROR)
    expect(lost.events.some((e) => e.name === 'exception')).toBe(true)
    await holder.unlock()
    await a.close()
  })
})
