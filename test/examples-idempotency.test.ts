/**
 * The idempotency examples the README quotes (`examples/idempotency-handler.ts`,
 * `examples/single-flight.ts`), run against real etcd — and a check that every line of the
 * README's "Idempotency and single flight" code blocks is in them.
 */
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { APIGatewayProxyEvent } from 'aws-lambda'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { charged, handler } from '../examples/idempotency-handler.js'
import { exchangeRates } from '../examples/single-flight.js'
import { IdempotencyKeyMismatchError, sharedClient } from '../lib/index.js'
import { lambdaContext } from '../testing/index.js'
import { sleep, useEtcd, useSharedClient } from './helpers.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const etcd = useEtcd(1)

useSharedClient(etcd)

const request = (body: unknown, key?: string) => ({ headers: key ? { 'Idempotency-Key': key } : {}, body: JSON.stringify(body) }) as unknown as APIGatewayProxyEvent

describe('examples/idempotency-handler.ts', () => {
  it('charges once per Idempotency-Key; a retry gets the first receipt; another body under the key is refused', async () => {
    const order = { orderId: 'o-1', amount: 25 }
    const first = await handler(request(order, 'key-1'), lambdaContext(10_000, 'payments'))
    const retry = await handler(request(order, 'key-1'), lambdaContext(10_000, 'payments'))
    expect(retry).toEqual(first)
    expect(charged.filter((c) => c.charge.orderId === 'o-1')).toHaveLength(1)
    await expect(handler(request({ orderId: 'o-1', amount: 99 }, 'key-1'), lambdaContext(10_000, 'payments'))).rejects.toThrow(IdempotencyKeyMismatchError)
    // Without the header it runs every time.
    await handler(request({ orderId: 'o-2', amount: 1 }), lambdaContext(10_000, 'payments'))
    await handler(request({ orderId: 'o-2', amount: 1 }), lambdaContext(10_000, 'payments'))
    expect(charged.filter((c) => c.charge.orderId === 'o-2')).toHaveLength(2)
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
  const lines = blocks.flatMap((b) => b.split('\n')).map((l) => l.trim()).filter((l) => l && !l.startsWith('import ') && !l.startsWith('//'))
  expect(lines.filter((l) => !examples.includes(l))).toEqual([])
})
