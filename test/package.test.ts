// `serverless package` produces an artifact that runs: the test builds it with the real CLI,
// unpacks the zip into an empty directory (no node_modules anywhere above it) and runs packaged
// handlers in a separate Node process against a real etcd.
import { execFile } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Queue } from '../lib/index.js'
import type { QueueDispatchEvent as DispatchEvent } from '../lib/index.js'
import { uniqueName, useEtcd } from './helpers.js'
import { invokePackaged, unzip } from './support/artifact.js'

const run = promisify(execFile)
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const etcd = useEtcd(1)

describe('serverless package', () => {
  let out: string
  let unpacked: string
  let files: string[]

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), 'middy-etcd-pkg-'))
    unpacked = mkdtempSync(join(tmpdir(), 'middy-etcd-unzipped-'))
    await run(process.execPath, [join(root, 'node_modules/.bin/osls'), 'package', '--package', out], { cwd: root, timeout: 120_000 })
    files = unzip(readFileSync(join(out, 'middy-etcd.zip')), unpacked)
  }, 150_000)

  afterAll(() => {
    rmSync(out, { recursive: true, force: true })
    rmSync(unpacked, { recursive: true, force: true })
  })

  it('bundles every handler module (etcd3 protos built in: no .proto file ships), and no node_modules', () => {
    expect(files).toEqual(expect.arrayContaining(['handlers/counter.js', 'handlers/jobs.js', 'handlers/dispatcher.js']))
    expect(files.filter((f) => f.endsWith('.proto'))).toEqual([])
    expect(files.some((f) => f.startsWith('node_modules/'))).toBe(false)
    expect(files.some((f) => f.endsWith('.ts'))).toBe(false)
  })

  it('keeps the handler names and gives the dispatcher its subscriptions', () => {
    const template = JSON.parse(readFileSync(join(out, 'cloudformation-template-update-stack.json'), 'utf8'))
    const fn = (name: string) => template.Resources[name].Properties
    expect(fn('CounterIncrementLambdaFunction').Handler).toBe('handlers/counter.increment')
    const subscriptions = JSON.parse(fn('DispatcherLambdaFunction').Environment.Variables.ETCD_QUEUE_SUBSCRIPTIONS)
    expect(subscriptions).toEqual([expect.objectContaining({ function: 'middy-etcd-dev-jobWorker', queue: 'example/jobs', batchSize: 5 })])
  })

  it('runs a packaged handler against etcd: the locked counter counts', async () => {
    const env = { ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') }
    const name = uniqueName('pkg')
    const event = { pathParameters: { name }, body: '' }
    const first = await invokePackaged(unpacked, 'handlers/counter.js', 'increment', event, env)
    const second = await invokePackaged(unpacked, 'handlers/counter.js', 'increment', event, env)
    expect(first.statusCode).toBe(200)
    expect(JSON.parse(first.body)).toMatchObject({ name, value: 1 })
    expect(JSON.parse(second.body)).toMatchObject({ name, value: 2 })
    // Fencing tokens increase across holders.
    expect(BigInt(JSON.parse(second.body).fence)).toBeGreaterThan(BigInt(JSON.parse(first.body).fence))
    expect(await etcd.client.get(`example/counters/${name}`).string()).toBe('2')
  })

  it('runs the packaged queue consumer on a dispatched batch and acks it', async () => {
    const env = { ETCD_ENDPOINTS: etcd.cluster.endpoints.join(','), JOBS_QUEUE: uniqueName('jobs') }
    const submitted = await invokePackaged(unpacked, 'handlers/jobs.js', 'submit', { body: JSON.stringify({ task: 'abc' }) }, env)
    expect(submitted.statusCode).toBe(202)
    const { id } = JSON.parse(submitted.body)
    // No event messages: queueConsumer receives from the queue itself.
    const result = await invokePackaged(unpacked, 'handlers/jobs.js', 'worker', {}, env)
    expect(result).toEqual({ batchItemFailures: [] })
    const status = await invokePackaged(unpacked, 'handlers/jobs.js', 'status', { pathParameters: { id } }, env)
    expect(JSON.parse(status.body)).toMatchObject({ id, deliveries: 1, result: 'cba' })
    const pending = await invokePackaged(unpacked, 'handlers/jobs.js', 'pending', {}, env)
    expect(JSON.parse(pending.body)).toEqual({ pending: 0 })
  })
  it('runs the packaged dispatcher: overlapping runs claim the queue one at a time and invoke the consumer through the Invoke API', async () => {
    const queue = uniqueName('jobs')
    const q = new Queue(etcd.client, queue)
    for (const task of ['a', 'b', 'c']) await q.enqueue(task)
    // A stand-in for the Lambda Invoke API: records each invocation and, as the consumer's
    // queueConsumer would, acks the messages it was given.
    const invocations: { fn: string; type: string | undefined; event: DispatchEvent }[] = []
    const server = createServer((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', async () => {
        const event = JSON.parse(body) as DispatchEvent
        invocations.push({
          fn: decodeURIComponent(req.url!.split('/')[3]),
          type: req.headers['x-amz-invocation-type'] as string | undefined,
          event,
        })
        for (const m of event.etcdQueue.messages as { receipt: string }[]) await q.ack(m.receipt)
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ batchItemFailures: [] }))
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const port = (server.address() as AddressInfo).port
    try {
      const env = {
        ETCD_ENDPOINTS: etcd.cluster.endpoints.join(','),
        MIDDY_ETCD_LAMBDA_ENDPOINT: `http://127.0.0.1:${port}`,
        ETCD_QUEUE_SUBSCRIPTIONS: JSON.stringify([{ function: 'svc-prod-jobWorker', queue, batchSize: 2 }]),
        // 15 s of "remaining time" minus this tail: each dispatcher may claim for about 5 s, so
        // the two runs overlap even if one process starts late.
        ETCD_DISPATCH_TAIL_MS: '10000',
      }
      const [a, b] = await Promise.all([
        invokePackaged(unpacked, 'handlers/dispatcher.js', 'handler', {}, env),
        invokePackaged(unpacked, 'handlers/dispatcher.js', 'handler', {}, env),
      ])
      // Overlapping runs lead one at a time: the earlier hands over to the later as soon as it
      // waits; between them every message is dispatched once.
      expect([a.leader, b.leader]).toEqual([true, true])
      expect(a.dispatched + b.dispatched).toBe(3)
      expect(a.failed + b.failed).toBe(0)
      expect(invocations.every((i) => i.fn === 'svc-prod-jobWorker' && i.type === 'RequestResponse')).toBe(true)
      expect(invocations.flatMap((i) => (i.event.etcdQueue.messages as { value: string }[]).map((m) => m.value)).sort()).toEqual([
        'a',
        'b',
        'c',
      ])
      expect(await q.size()).toBe(0)
    } finally {
      server.close()
    }
  }, 60_000)
})
