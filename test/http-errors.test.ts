// Lock and wait errors answer HTTP callers through @middy/http-error-handler without user code:
// a held lock is 409, a lock wait that ran out is 503, a barrier wait that ran out is 504.
// What the request itself got wrong is a 4xx the caller can read, never an empty 500, and every
// short-circuit of ours answers an HTTP event with a proxy response (issue 23, items 8 and 9).
import middy from '@middy/core'
import httpErrorHandler from '@middy/http-error-handler'
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2 } from 'aws-lambda'
import { describe, expect, it } from 'vitest'
import { Barrier, Election, LockedError, LockTimeoutError, Mutex, Queue, Semaphore, Session, WaitTimeoutError } from '../lib/index.js'
import { etcdBarrier, etcdIdempotency, etcdLock, etcdPlugin, etcdRateLimit, etcdSemaphore, leaderGuard } from '../middleware/index.js'
import { uniqueName, useEtcd } from './helpers.js'
import { lambdaContext } from './lambda.js'
import { albEvent, httpApiEvent, restEvent, scheduledEvent } from './support/http-events.js'

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

type HttpEvent = APIGatewayProxyEvent | APIGatewayProxyEventV2
interface Answer {
  statusCode: number
  headers: Record<string, string>
  body: string
}

/** A handler behind @middy/http-error-handler and etcdPlugin, as an HTTP service builds one; counts its runs. */
function httpHandler(...middlewares: middy.MiddlewareObj<any, any, Error, any>[]) {
  const runs = { count: 0 }
  let chain = middy(async () => {
    runs.count++
    return { statusCode: 200, body: 'done' }
  }, etcdPlugin()).use(httpErrorHandler(quiet))
  for (const m of middlewares) chain = chain.use(m)
  return { handler: (event: unknown) => chain(event as HttpEvent, lambdaContext(5_000)) as Promise<Answer>, runs }
}

describe('what the request got wrong is a 4xx with a message, not an empty 500 (issue 23, item 8)', () => {
  it("malformed JSON in the README's `payload: (e) => JSON.parse(e.body)`: 400 naming the payload function; nothing run, nothing written", async () => {
    const prefix = uniqueName('http-payload')
    const { handler, runs } = httpHandler(
      etcdIdempotency<APIGatewayProxyEvent>({
        key: (e) => e.headers?.['Idempotency-Key'],
        payload: (e) => JSON.parse(e.body ?? '{}'),
        prefix,
        client: etcd.client,
      }),
    )
    const answer = await handler(restEvent({ headers: { 'Idempotency-Key': 'k-1' }, body: '{"orderId": "o-1",' }))
    expect(answer.statusCode).toBe(400)
    expect(answer.body).toMatch(/`payload` function failed on this request \(SyntaxError: /)
    expect(runs.count).toBe(0)
    expect(await etcd.keysUnder(`${prefix}/`)).toEqual([])
  })

  it('a key function that throws (the header it reads is missing): 400 naming the key function', async () => {
    const { handler, runs } = httpHandler(
      etcdIdempotency<APIGatewayProxyEvent>({
        key: (e) => e.headers['Idempotency-Key']!.trim(),
        prefix: uniqueName('http-keyfn'),
        client: etcd.client,
      }),
    )
    const answer = await handler(restEvent({ headers: { Accept: 'application/json' } }))
    expect(answer.statusCode).toBe(400)
    expect(answer.body).toMatch(/`key` function failed on this request \(TypeError: /)
    expect(runs.count).toBe(0)
  })

  it('a 5,000-byte Idempotency-Key: 400 saying how long a key may be; nothing written', async () => {
    const prefix = uniqueName('http-longkey')
    const { handler, runs } = httpHandler(
      etcdIdempotency<APIGatewayProxyEvent>({ key: (e) => e.headers?.['Idempotency-Key'], prefix, client: etcd.client }),
    )
    const answer = await handler(restEvent({ headers: { 'Idempotency-Key': 'k'.repeat(5_000) } }))
    expect(answer.statusCode).toBe(400)
    expect(answer.body).toMatch(/idempotency key is 5000 bytes; at most \d+ are accepted/)
    expect(runs.count).toBe(0)
    expect(await etcd.keysUnder(`${prefix}/`)).toEqual([])
    // The longest key that fits the record still runs.
    const most = Number(/at most (\d+)/.exec(answer.body)![1])
    expect((await handler(restEvent({ headers: { 'Idempotency-Key': 'k'.repeat(most) } }))).statusCode).toBe(200)
  })

  it('a lock name function that throws on the event: 400, the handler not run', async () => {
    const { handler, runs } = httpHandler(
      etcdLock<APIGatewayProxyEvent>({ name: (e) => `accounts/${JSON.parse(e.body ?? '').account}`, client: etcd.client }),
    )
    const answer = await handler(restEvent({ body: 'account=7' }))
    expect(answer.statusCode).toBe(400)
    expect(answer.body).toMatch(/etcdLock: the `name` function failed on this request \(SyntaxError: /)
    expect(runs.count).toBe(0)
  })

  it('a 2 MB request body the handler enqueues: 413 naming the limit; nothing enqueued', async () => {
    const name = uniqueName('http-413')
    const queue = new Queue(etcd.client, name)
    const handler = middy(async (event: APIGatewayProxyEvent) => {
      await queue.enqueue(event.body ?? '')
      return { statusCode: 202, body: 'queued' }
    }).use(httpErrorHandler(quiet))
    const answer = (await handler(restEvent({ body: 'x'.repeat(2_000_000) }), lambdaContext(5_000))) as Answer
    expect(answer.statusCode).toBe(413)
    expect(answer.body).toMatch(/2000000 bytes; etcd accepts at most/)
    expect(await queue.size()).toBe(0)
  })
})

describe('every short-circuit of ours answers an HTTP caller with a proxy response (issue 23, item 9)', () => {
  /** Runs `body` while another session leads `election`. */
  async function whileLed<T>(election: string, body: () => Promise<T>): Promise<T> {
    const session = await Session.create(etcd.client, { ttl: 10 })
    const leader = new Election(session, election)
    await leader.campaign('billing:other-instance')
    try {
      return await body()
    } finally {
      await leader.resign()
      await session.close()
    }
  }

  it('a leaderGuard follower: 409 with a JSON body for REST, HTTP API, function URL and ALB events; other events keep { leader: false, leaderValue }', async () => {
    const election = uniqueName('http-follower')
    const { handler, runs } = httpHandler(leaderGuard({ election, client: etcd.client }))
    const answers = await whileLed(election, () =>
      Promise.all([restEvent(), httpApiEvent(), httpApiEvent({}, 'url'), albEvent(), scheduledEvent].map((event) => handler(event))),
    )
    expect(runs.count).toBe(0)
    for (const answer of answers.slice(0, 4)) {
      expect(answer.statusCode).toBe(409)
      expect(answer.headers['Content-Type']).toBe('application/json')
      expect(JSON.parse(answer.body)).toMatchObject({ leader: false, message: expect.stringContaining('another invocation is the leader') })
      // The leader's proposal names a function instance: not for outside callers.
      expect(answer.body).not.toContain('other-instance')
    }
    expect(answers[4]).toEqual({ leader: false, leaderValue: 'billing:other-instance' })
  })

  it("a full semaphore with acquire 'try': 429 with Retry-After (capacity, not a conflict); the permit's holder undisturbed", async () => {
    const name = uniqueName('http-sem-full')
    const holder = new Semaphore(await Session.create(etcd.client, { ttl: 10 }), name, 1)
    await holder.acquire()
    try {
      const { handler, runs } = httpHandler(etcdSemaphore({ name, permits: 1, acquire: 'try', client: etcd.client }))
      for (const event of [restEvent(), httpApiEvent()]) {
        const answer = await handler(event)
        expect(answer.statusCode).toBe(429)
        expect(Number(answer.headers['Retry-After'])).toBeGreaterThanOrEqual(1)
        expect(answer.body).toMatch(/semaphore ".*": all 1 permits are held; retry later/)
      }
      expect(runs.count).toBe(0)
      expect((await etcd.keysUnder(`${name}/holders/`)).length).toBe(1)
    } finally {
      await holder.release()
      await holder.session.close()
    }
  })

  it("the rate limit's 'try' answer is a JSON 429 with Retry-After; a held lock's try stays 409", async () => {
    const { handler } = httpHandler(
      etcdRateLimit({ name: uniqueName('http-rl'), rate: 1, per: 60_000, acquire: 'try', client: etcd.client }),
    )
    expect((await handler(httpApiEvent())).statusCode).toBe(200)
    const limited = await handler(httpApiEvent())
    expect(limited).toMatchObject({
      statusCode: 429,
      headers: { 'Content-Type': 'application/json', 'Retry-After': expect.stringMatching(/^\d+$/) },
    })
    expect(JSON.parse(limited.body)).toMatchObject({ message: 'Too Many Requests' })
    const lock = uniqueName('http-lock-try')
    const { handler: locked } = httpHandler(etcdLock({ name: lock, acquire: 'try', client: etcd.client }))
    expect((await whileHeld(lock, () => locked(httpApiEvent()))).statusCode).toBe(409)
  })
})
