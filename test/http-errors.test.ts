// Lock and wait errors answer HTTP callers through @middy/http-error-handler without user code:
// a held lock is 409, a lock wait that ran out is 503, a barrier wait that ran out is 504.
import middy from '@middy/core'
import httpErrorHandler from '@middy/http-error-handler'
import { describe, expect, it } from 'vitest'
import { Barrier, LockedError, LockTimeoutError, Mutex, Session, WaitTimeoutError } from '../lib/index.js'
import { etcdBarrier, etcdLock, etcdPlugin } from '../middleware/index.js'
import { uniqueName, useEtcd } from './helpers.js'
import { lambdaContext } from './lambda.js'

const etcd = useEtcd()

/** Holds `name` from another session while `body` runs. */
async function whileHeld<T>(name: string, body: () => Promise<T>): Promise<T> {
  const session = await Session.create(etcd.client, { ttl: 10 })
  const mutex = new Mutex(session, name)
  await mutex.lock()
  try {
    return await body()
  } finally {
    await mutex.unlock()
    await session.close()
  }
}

const quiet = { logger: false as const }

describe('errors as HTTP responses', () => {
  it('carry statusCode and expose', () => {
    expect(new LockedError('x')).toMatchObject({ statusCode: 409, expose: true })
    expect(new LockTimeoutError('x')).toMatchObject({ statusCode: 503, expose: true })
    expect(new WaitTimeoutError('x')).toMatchObject({ statusCode: 504, expose: true })
  })

  it('a try-lock on a held lock answers 409 with the message', async () => {
    const name = uniqueName('http-409')
    let ran = false
    const handler = middy(async () => {
      ran = true
      return { statusCode: 200, body: 'done' }
    }, etcdPlugin())
      .use(httpErrorHandler(quiet))
      .use(etcdLock({ name, acquire: 'try', client: etcd.client }))
    const response = await whileHeld(name, () => handler({}, lambdaContext(5_000)))
    expect(ran).toBe(false)
    expect(response).toMatchObject({ statusCode: 409, body: expect.stringContaining(name) })
  })

  it('a lock wait that runs out answers 503', async () => {
    const name = uniqueName('http-503')
    const handler = middy(async () => ({ statusCode: 200, body: 'done' }), etcdPlugin())
      .use(httpErrorHandler(quiet))
      .use(etcdLock({ name, waitMs: 200, client: etcd.client }))
    const response = await whileHeld(name, () => handler({}, lambdaContext(5_000)))
    expect(response).toMatchObject({ statusCode: 503, body: expect.stringContaining('not acquired within') })
    // Nothing of the waiter is left behind.
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
  })

  it('a barrier wait that runs out answers 504', async () => {
    const name = uniqueName('http-504')
    const barrier = new Barrier(etcd.client, name)
    await barrier.hold()
    try {
      const handler = middy(async () => ({ statusCode: 200, body: 'passed' }), etcdPlugin())
        .use(httpErrorHandler(quiet))
        .use(etcdBarrier({ name, waitMs: 200, client: etcd.client }))
      expect(await handler({}, lambdaContext(5_000))).toMatchObject({ statusCode: 504 })
    } finally {
      await barrier.release()
    }
  })
})
