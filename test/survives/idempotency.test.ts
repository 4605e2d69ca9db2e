/**
 * "What survives", idempotency row (issue 29): a duplicate arriving while the first invocation is
 * still running. Ours (etcdIdempotency, onInProgress 'wait' by default) waits for the first
 * invocation's response and returns it; Powertools idempotency 2.35.0 with its Redis persistence
 * layer (CachePersistenceLayer on @redis/client 6.4.0, makeIdempotent as its docs show) rejects the
 * duplicate with IdempotencyAlreadyInProgressError. Either way the handler runs once.
 */
import middy from '@middy/core'
import { IdempotencyAlreadyInProgressError, IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency'
import { CachePersistenceLayer } from '@aws-lambda-powertools/idempotency/cache'
import { createClient as createRedisClient } from '@redis/client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { etcdIdempotency } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { startRedis, type RedisServer } from '../support/redis.js'

const etcd = useEtcd(1)
let redis: RedisServer
let rc: ReturnType<typeof createRedisClient>
const RUN_MS = 1500

beforeAll(async () => {
  redis = await startRedis()
  rc = createRedisClient({ url: redis.url })
  await rc.connect()
}, 30_000)
afterAll(async () => {
  await rc?.quit().catch(() => {})
  await redis?.stop()
})

describe('(c) a duplicate arriving while the first invocation is still running', () => {
  it('ours: the duplicate waits and returns the first invocation’s response; the handler ran once', async () => {
    let runs = 0
    const handler = middy(async (event: { id: string }) => {
      runs++
      await sleep(RUN_MS)
      return { statusCode: 200, body: `order ${event.id} run ${runs}` }
    }).use(etcdIdempotency<{ id: string }>({ key: (e) => e.id, prefix: uniqueName('survive-idem'), client: etcd.client }))
    const id = uniqueName('order')
    const first = handler({ id }, lambdaContext())
    await sleep(300) // the first invocation has begun and is running its handler
    const t0 = performance.now()
    const duplicate = await handler({ id }, lambdaContext())
    const waitedMs = performance.now() - t0
    console.log(`[survives] in-progress duplicate, ours: waited ${waitedMs.toFixed(0)} ms, got ${JSON.stringify(duplicate.body)}`)
    expect(duplicate).toEqual(await first)
    expect(duplicate.body).toBe(`order ${id} run 1`)
    expect(runs).toBe(1)
  })

  it('Powertools on Redis: the duplicate gets IdempotencyAlreadyInProgressError; the handler ran once', async () => {
    let runs = 0
    const persistenceStore = new CachePersistenceLayer({ client: rc })
    const handler = makeIdempotent(
      async (event: { id: string }, _context: unknown) => {
        runs++
        await sleep(RUN_MS)
        return { statusCode: 200, body: `order ${event.id} run ${runs}` }
      },
      { persistenceStore, config: new IdempotencyConfig({ eventKeyJmesPath: 'id' }) },
    )
    const id = uniqueName('order')
    const first = handler({ id }, lambdaContext())
    await sleep(300)
    const duplicate = await handler({ id }, lambdaContext()).then(
      (r) => ({ ok: r }),
      (err: Error) => ({ err }),
    )
    console.log(
      `[survives] in-progress duplicate, Powertools: ${'err' in duplicate ? `${duplicate.err.name}: ${duplicate.err.message}` : 'returned'}`,
    )
    expect('err' in duplicate && duplicate.err).toBeInstanceOf(IdempotencyAlreadyInProgressError)
    expect((await first).body).toBe(`order ${id} run 1`)
    expect(runs).toBe(1)
    // Once the first has completed, a retry of the duplicate gets the stored response.
    expect(await handler({ id }, lambdaContext())).toEqual(await first)
    expect(runs).toBe(1)
  })
})
