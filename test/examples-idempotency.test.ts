/**
 * The idempotency examples the README quotes (`examples/idempotency-handler.ts`,
 * `examples/single-flight.ts`), run against real etcd — and a check that every line of the
 * README's "Idempotency and single flight" code blocks is in them.
 */
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2 } from 'aws-lambda'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { charged, handler } from '../examples/idempotency-handler.js'
import { exchangeRates } from '../examples/single-flight.js'
import { sharedClient } from '../lib/index.js'
import { lambdaContext } from '../testing/index.js'
import { sleep, useEtcd, useSharedClient } from './helpers.js'
import { httpApiEvent, restEvent } from './support/http-events.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const etcd = useEtcd(1)

useSharedClient(etcd)

interface Answer {
  statusCode: number
  body: string
}

const rest = (body: unknown, key?: string) =>
  restEvent({ headers: key ? { 'Idempotency-Key': key } : { Accept: '*/*' }, body: typeof body === 'string' ? body : JSON.stringify(body) })
const httpApi = (body: unknown, key?: string, domain: 'api' | 'url' = 'api') =>
  httpApiEvent({ headers: key ? { 'Idempotency-Key': key } : {}, body: JSON.stringify(body) }, domain)
const call = (event: APIGatewayProxyEvent | APIGatewayProxyEventV2) => handler(event, lambdaContext(10_000, 'payments')) as Promise<Answer>
const chargesOf = (orderId: string) => charged.filter((c) => c.charge.orderId === orderId)

describe('examples/idempotency-handler.ts', () => {
  it('REST API (payload 1.0): charges once per Idempotency-Key; a retry gets the first receipt; another body under the key is a 422', async () => {
    const order = { orderId: 'o-1', amount: 25 }
    const first = await call(rest(order, 'key-1'))
    expect(first.statusCode).toBe(201)
    const retry = await call(rest(order, 'key-1'))
    expect(retry).toEqual(first)
    expect(chargesOf('o-1')).toHaveLength(1)
    const other = await call(rest({ orderId: 'o-1', amount: 99 }, 'key-1'))
    expect(other.statusCode).toBe(422)
    expect(chargesOf('o-1')).toHaveLength(1)
  })

  it('HTTP API and function URL (payload 2.0, header names lower-cased): three duplicates charge once', async () => {
    // Before issue 23 the README read event.headers['Idempotency-Key']: undefined on these
    // events, so each duplicate ran without idempotency and charged again.
    for (const [domain, orderId] of [
      ['api', 'o-v2'],
      ['url', 'o-url'],
    ] as const) {
      const order = { orderId, amount: 5 }
      const answers = [
        await call(httpApi(order, `key-${orderId}`, domain)),
        await call(httpApi(order, `key-${orderId}`, domain)),
        await call(httpApi(order, `key-${orderId}`, domain)),
      ]
      expect(answers.map((a) => a.statusCode)).toEqual([201, 201, 201])
      expect(new Set(answers.map((a) => a.body)).size).toBe(1)
      expect(chargesOf(orderId)).toHaveLength(1)
    }
  })

  it('no Idempotency-Key header, or a body that is not JSON: 400 saying what is wrong, nothing charged', async () => {
    for (const event of [rest({ orderId: 'o-2', amount: 1 }), httpApi({ orderId: 'o-2', amount: 1 })]) {
      const answer = await call(event)
      expect(answer.statusCode).toBe(400)
      expect(answer.body).toMatch(/this request has no idempotency key \(the Idempotency-Key header is missing\); send one/)
    }
    const malformed = await call(rest('{"orderId": "o-2", "amount": ', 'key-2'))
    expect(malformed.statusCode).toBe(400)
    expect(malformed.body).toMatch(/`payload` function failed on this request \(SyntaxError/)
    expect(chargesOf('o-2')).toHaveLength(0)
  })
})

describe('examples/single-flight.ts', () => {
  let server: Server
  let requests = 0
  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++
      setTimeout(() => res.end(JSON.stringify({ USD: 1.08, GBP: 0.85 })), 200)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  })
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

  it('20 concurrent callers on 4 connections: one upstream request, one answer for all', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/rates`
    const clients = [sharedClient(), etcd.newClient(), etcd.newClient(), etcd.newClient()]
    const rates = await Promise.all(Array.from({ length: 20 }, (_, i) => exchangeRates(url, clients[i % 4])))
    expect(requests).toBe(1)
    for (const r of rates) expect(r).toEqual({ USD: 1.08, GBP: 0.85 })
    // Kept for 60 s: a later caller gets it without a request.
    await sleep(50)
    expect(await exchangeRates(url)).toEqual({ USD: 1.08, GBP: 0.85 })
    expect(requests).toBe(1)
  })
})

it("every line of the README's idempotency code blocks is in an example file run above", () => {
  const readme = readFileSync(`${root}README.md`, 'utf8')
  const start = readme.indexOf('## Idempotency and single flight')
  expect(start).toBeGreaterThan(0)
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1))
  const examples = ['idempotency-handler.ts', 'single-flight.ts'].map((f) => readFileSync(`${root}examples/${f}`, 'utf8')).join('\n')
  const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
  expect(blocks).toHaveLength(2)
  // Imports differ (the README imports the package); everything else is quoted as it runs.
  const lines = blocks
    .flatMap((b) => b.split('\n'))
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('import ') && !l.startsWith('//'))
  expect(lines.filter((l) => !examples.includes(l))).toEqual([])
})
