// The middlewares' spans come from the primitives they call: an etcdLock invocation shows its
// wait and its hold under the invocation's span, a wait past the budget records `timeout`, a
// semaphore and an idempotent replay theirs — with the OTel SDK registered.
import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { LockTimeoutError, Mutex, Session, TELEMETRY_ATTRIBUTES as A } from '../../lib/index.js'
import { etcdIdempotency, etcdLock, etcdPlugin, etcdSemaphore } from '../../middleware/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'
import { useOtelSdk } from './otel-sdk.js'

const etcd = useEtcd()
const otel = await useOtelSdk()

describe('middleware telemetry', () => {
  it('etcdLock: the wait and the hold are children of the invocation’s span; the hold ends before the invocation returns', async () => {
    const name = uniqueName('mw-lock')
    let heldDuringHandler = -1
    const handler = middy(async (_e: unknown, context: any) => {
      heldDuringHandler = otel.spansOf('hold lock', { [A.name]: name }).length
      return String(context.etcd.lock.fence)
    }, etcdPlugin()).use(etcdLock({ name, client: etcd.client }))
    const fence = await otel.tracer.startActiveSpan('invocation', async (span) => {
      const result = await handler({}, lambdaContext())
      span.end()
      return result
    })
    expect(heldDuringHandler).toBe(0) // not ended while the handler ran
    const [invocation] = otel.spansOf('invocation')
    const [wait] = otel.spansOf('wait lock', { [A.name]: name })
    const [hold] = otel.spansOf('hold lock', { [A.name]: name })
    expect(wait.attributes).toMatchObject({ [A.outcome]: 'acquired', [A.fence]: Number(fence) })
    expect(hold.attributes).toMatchObject({ [A.outcome]: 'released', [A.fence]: Number(fence) })
    expect(wait.parentSpanContext?.spanId).toBe(invocation.spanContext().spanId)
    expect(hold.parentSpanContext?.spanId).toBe(invocation.spanContext().spanId)
  })

  it('etcdLock: a wait past waitMs records `timeout`', async () => {
    const name = uniqueName('mw-timeout')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const holder = new Mutex(session, name)
    await holder.lock()
    const handler = middy(async () => 'ran').use(etcdLock({ name, waitMs: 300, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(LockTimeoutError)
    const outcomes = otel.spansOf('wait lock', { [A.name]: name }).map((s) => s.attributes[A.outcome])
    expect(outcomes.sort()).toEqual(['acquired', 'timeout']) // the holder's, then ours
    await holder.unlock()
    await session.close()
  })

  it('etcdSemaphore and etcdIdempotency: a permit’s wait and hold; a replayed key is `duplicate`', async () => {
    const name = uniqueName('mw-sem')
    const limited = middy(async () => 'ran').use(etcdSemaphore({ name, permits: 2, client: etcd.client }))
    await limited({}, lambdaContext())
    expect(otel.spansOf('wait semaphore', { [A.name]: name })[0].attributes[A.outcome]).toBe('acquired')
    expect(otel.spansOf('hold semaphore', { [A.name]: name })[0].attributes[A.outcome]).toBe('released')

    const key = uniqueName('mw-idem')
    let runs = 0
    const idempotent = middy(async () => ++runs).use(etcdIdempotency({ key: () => key, client: etcd.client }))
    expect(await idempotent({}, lambdaContext())).toBe(1)
    expect(await idempotent({}, lambdaContext())).toBe(1)
    const outcomes = otel.spansOf('wait idempotency', { [A.name]: key }).map((s) => s.attributes[A.outcome])
    expect(outcomes).toEqual(['acquired', 'duplicate'])
  })
})
