// End to end through the real CLI: `osls offline start` (serverless-offline + the middy-etcd
// plugin) on free ports, the example service in serverless.yml, a local etcd started by the
// plugin. Checks the plugin's etcd lifecycle (including replacing an etcd a killed session left
// behind) and the example functions over HTTP and the Lambda Invoke API.
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigurationError, createClient, InvalidArgumentError, PriorityQueue, Queue, type EtcdClient } from '../lib/index.js'
import { lambdaInvoker, runDispatcher, subscriptionsFromEnv, type DispatcherOptions, type DispatchEvent, type QueueSubscription } from '../offline/index.js'
import { freePort, startEtcd, type EtcdCluster } from '../testing/index.js'
import { sleep, uniqueName, useEtcd } from './helpers.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const stateDir = join(root, '.etcd-offline')

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  // A killed child not yet reaped is a zombie: not running.
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined | false | Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(100)
  }
}

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
    child.once('exit', () => resolve(child.pid!))
  })
}

describe('osls offline start with the middy-etcd plugin', () => {
  let cli: ChildProcess
  let output = ''
  let base: string
  let etcdEndpoint: string
  let etcdPid: number
  let client: EtcdClient
  let stale: EtcdCluster
  let staleRecord: string

  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : undefined }
  }

  beforeAll(async () => {
    // An etcd "left behind" by a session that was killed: its CLI pid is dead.
    stale = await startEtcd()
    mkdirSync(stateDir, { recursive: true })
    const cliPid = await deadPid()
    staleRecord = join(stateDir, `${cliPid}.json`)
    writeFileSync(staleRecord, JSON.stringify({ cliPid, etcdPids: stale.pids(), dataDir: stale.dataDir, endpoints: stale.endpoints }))

    const [httpPort, lambdaPort] = [await freePort(), await freePort()]
    base = `http://localhost:${httpPort}`
    cli = spawn(process.execPath, [join(root, 'node_modules/.bin/osls'), 'offline', 'start', '--httpPort', String(httpPort), '--lambdaPort', String(lambdaPort)], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    for (const stream of [cli.stdout!, cli.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()))
    await until('"Server ready" from the CLI', 90_000, () => {
      if (cli.exitCode !== null) throw new Error(`osls exited with ${cli.exitCode}:\n${output}`)
      return output.includes('Server ready')
    })
    const m = /etcd: listening on (http:\/\/127\.0\.0\.1:\d+) \(1 member, pid (\d+)\)/.exec(output)
    if (!m) throw new Error(`no etcd line in the CLI output:\n${output}`)
    etcdEndpoint = m[1]
    etcdPid = Number(m[2])
    client = createClient({ endpoints: [etcdEndpoint] })
  }, 120_000)

  afterAll(async () => {
    client?.close()
    if (cli && cli.exitCode === null && cli.signalCode === null) cli.kill('SIGKILL')
    if (etcdPid && alive(etcdPid)) process.kill(etcdPid, 'SIGKILL')
    await stale?.stop()
  })

  it('replaced the etcd a killed session left behind', async () => {
    expect(output).toContain(`left by a killed offline session (pid ${staleRecord.match(/(\d+)\.json$/)![1]})`)
    for (const pid of stale.pids()) if (pid !== undefined) await until(`stale etcd ${pid} to exit`, 5_000, () => !alive(pid))
    expect(existsSync(staleRecord)).toBe(false)
  })

  it('starts etcd, records it in a pid file and injects ETCD_ENDPOINTS', async () => {
    expect(alive(etcdPid)).toBe(true)
    const record = JSON.parse(readFileSync(join(stateDir, `${cli.pid}.json`), 'utf8'))
    expect(record).toMatchObject({ cliPid: cli.pid, etcdPids: [etcdPid], endpoints: [etcdEndpoint] })
    const health = (await (await fetch(`${etcdEndpoint}/health`)).json()) as { health: string }
    expect(health.health).toBe('true')
    const ping = await call('GET', '/ping')
    expect(ping).toMatchObject({ status: 200, body: { ok: true, endpoints: etcdEndpoint } })
    // The handler wrote to the very etcd the plugin started.
    expect(await client.get('example/ping').string()).toMatch(/^\d{4}-/)
  })

  it('keeps the locked counter exact under 20 concurrent HTTP calls', async () => {
    const name = uniqueName('counter')
    const results = await Promise.all(Array.from({ length: 20 }, () => call('POST', `/counters/${name}/increment`)))
    for (const r of results) expect(r.status).toBe(200)
    const values = results.map((r) => r.body.value as number).sort((a, b) => a - b)
    expect(values).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    // Fencing tokens grow with the count: each holder came strictly after the previous one.
    const byValue = [...results].sort((a, b) => a.body.value - b.body.value).map((r) => BigInt(r.body.fence))
    for (let i = 1; i < byValue.length; i++) expect(byValue[i]).toBeGreaterThan(byValue[i - 1])
    expect(await call('GET', `/counters/${name}`)).toMatchObject({ status: 200, body: { value: 20 } })
  }, 90_000)

  it('keeps the bank total under concurrent STM transfers', async () => {
    const bank = uniqueName('bank')
    expect((await call('POST', `/banks/${bank}`, { accounts: { alice: 100, bob: 100, carol: 100 } })).status).toBe(201)
    const people = ['alice', 'bob', 'carol']
    const transfers = Array.from({ length: 6 }, (_, i) => ({ from: people[i % 3], to: people[(i + 1) % 3], amount: 10 + i }))
    const results = await Promise.all(transfers.map((t) => call('POST', `/banks/${bank}/transfer`, t)))
    for (const r of results) expect(r.status).toBe(200)
    const { body } = await call('GET', `/banks/${bank}`)
    expect(body.total).toBe(300)
    // Each transfer applied exactly once.
    const expected: Record<string, number> = { alice: 100, bob: 100, carol: 100 }
    for (const t of transfers) {
      expected[t.from] -= t.amount
      expected[t.to] += t.amount
    }
    expect(body.accounts).toEqual(expected)
    const overdraft = await call('POST', `/banks/${bank}/transfer`, { from: 'alice', to: 'bob', amount: 1000 })
    expect(overdraft.status).toBe(400)
    expect((await call('GET', `/banks/${bank}`)).body.accounts).toEqual(expected)
  }, 60_000)

  it('pushes and pops on a Queue (FIFO) and a PriorityQueue (most urgent first)', async () => {
    const q = uniqueName('q')
    await call('POST', `/queues/${q}`, { value: 'first' })
    await call('POST', `/queues/${q}`, { value: 'second' })
    expect((await call('DELETE', `/queues/${q}`)).body).toEqual({ value: 'first' })
    expect((await call('DELETE', `/queues/${q}`)).body).toEqual({ value: 'second' })
    expect(await call('DELETE', `/queues/${q}?waitMs=100`)).toMatchObject({ status: 404, body: { empty: true } })

    const p = uniqueName('pq')
    await call('POST', `/pqueues/${p}`, { value: 'later', priority: 7 })
    await call('POST', `/pqueues/${p}`, { value: 'now', priority: 1 })
    expect((await call('DELETE', `/pqueues/${p}`)).body).toEqual({ value: 'now' })
    expect((await call('DELETE', `/pqueues/${p}`)).body).toEqual({ value: 'later' })
  }, 60_000)

  it('the example service answers bad input with a 4xx and a message, and changes nothing', async () => {
    const bank = uniqueName('bad-bank')
    const key = uniqueName('bad-cfg')
    const q = uniqueName('bad-q')
    expect((await call('POST', `/banks/${bank}`, { accounts: { alice: 100, bob: 100 } })).status).toBe(201)
    expect((await call('PUT', `/config/${key}`, { value: 'kept' })).status).toBe(200)
    const raw = async (method: string, path: string, text?: string) => {
      const res = await fetch(`${base}${path}`, { method, headers: text === undefined ? {} : { 'content-type': 'application/json' }, body: text })
      const answer = await res.text()
      return { status: res.status, text: answer }
    }
    const state = async () => JSON.stringify(await Promise.all(['example/banks/', 'example/config/', 'example/jobs/', 'example/queues/', 'example/pqueues/', '__delayed/example/'].map((p) => client.getAll().prefix(p).strings())))
    const before = await state()
    const unsafe = '9007199254740993'
    const rows: [string, string, string | undefined, number][] = [
      ['POST', '/jobs', 'null', 400],
      ['POST', '/jobs', '"just text"', 400],
      ['POST', '/jobs', '[{"task":"x"}]', 400],
      ['POST', '/jobs', '{"task":42}', 400],
      ['POST', '/jobs', '{"task":"x","delayMs":-5}', 400],
      ['POST', '/jobs', `{"task":"x","delayMs":${unsafe}}`, 400],
      ['POST', '/jobs', '{"task":"x","group":""}', 400],
      ['POST', '/jobs', '{"task":', 400],
      ['POST', `/banks/${bank}`, 'null', 400],
      ['POST', `/banks/${bank}`, '{"accounts":[100,200]}', 400],
      ['POST', `/banks/${bank}`, '{"accounts":{"carol":5,"dave":-1}}', 400],
      ['POST', `/banks/${bank}`, `{"accounts":{"carol":${unsafe}}}`, 400],
      ['POST', `/banks/${bank}/transfer`, `{"from":"alice","to":"bob","amount":${unsafe}}`, 400],
      ['POST', `/banks/${bank}/transfer`, '{"from":"alice","to":"bob","amount":1.5}', 400],
      ['POST', `/banks/${bank}/transfer`, '[]', 400],
      ['POST', `/banks/${bank}/transfer`, '{"from":"alice","to":"nobody","amount":1}', 400],
      ['PUT', `/config/${key}`, JSON.stringify({ value: 'x'.repeat(2_000_000) }), 400],
      ['PUT', `/config/${key}`, '{"value":7}', 400],
      ['GET', '/config/%25', undefined, 404],
      ['POST', `/queues/${q}`, '{"value":null}', 400],
      ['POST', `/queues/a%2Fb`, '{"value":"x"}', 400],
      ['POST', `/pqueues/${q}`, '{"value":"x","priority":70000}', 400],
      ['POST', `/pqueues/${q}`, `{"value":"x","priority":${unsafe}}`, 400],
      ['DELETE', `/queues/${q}?waitMs=-1`, undefined, 400],
      ['DELETE', `/queues/${q}?waitMs=600000`, undefined, 404], // capped below the function's 10 s timeout
    ]
    const wrong: string[] = []
    for (const [method, path, text, status] of rows) {
      const res = await raw(method, path, text)
      let message: unknown
      try {
        const parsed = JSON.parse(res.text)
        message = parsed.error ?? (parsed.empty === true || parsed.value === null ? 'empty' : undefined)
      } catch {
        message = undefined
      }
      const what = `${method} ${path} ${text === undefined ? '' : text.slice(0, 60)}`
      if (res.status !== status) wrong.push(`${what}: ${res.status} (expected ${status}) ${res.text.slice(0, 200)}`)
      else if (typeof message !== 'string' || /\n\s+at /.test(res.text)) wrong.push(`${what}: no message, or a stack trace: ${res.text.slice(0, 200)}`)
      if ((await state()) !== before) wrong.push(`${what}: changed what is stored`)
    }
    expect(wrong).toEqual([])
  }, 120_000)

  it('writes and reads config under the read/write lock', async () => {
    const key = uniqueName('cfg')
    const written = await call('PUT', `/config/${key}`, { value: 'blue' })
    expect(written).toMatchObject({ status: 200, body: { key, value: 'blue' } })
    expect(await call('GET', `/config/${key}`)).toMatchObject({ status: 200, body: { value: 'blue' } })
  }, 60_000)

  it('holds a waiter at the barrier until it is released', async () => {
    const name = uniqueName('barrier')
    expect((await call('POST', `/barriers/${name}/hold`)).status).toBe(201)
    expect((await call('POST', `/barriers/${name}/hold`)).status).toBe(409)
    let passed = false
    const waiting = call('GET', `/barriers/${name}/wait`).then((r) => {
      passed = true
      return r
    })
    // The barrier key exists while the waiter is held back.
    await sleep(1500)
    expect(passed).toBe(false)
    expect(await client.get(`example/barriers/${name}`).exists()).toBe(true)
    expect((await call('POST', `/barriers/${name}/release`)).body).toEqual({ released: true })
    expect(await waiting).toMatchObject({ status: 200, body: { passed: true } })
  }, 60_000)

  it('processes a pushed job exactly once through the etcdQueue worker', async () => {
    const submitted = await call('POST', '/jobs', { task: 'hello' })
    expect(submitted.status).toBe(202)
    const { id, messageId } = submitted.body
    const done = await until('the job to be processed', 30_000, async () => {
      const s = await call('GET', `/jobs/${id}`)
      return s.body.deliveries > 0 && s.body
    })
    expect(done).toMatchObject({ deliveries: 1, result: 'olleh', messageId, receiveCount: 1 })
    // The plugin's dispatcher printed what it dispatched.
    expect(output).toMatch(new RegExp(`etcdQueue: example/jobs → jobWorker: \\d+ messages? \\([^)]*\\b${messageId}\\b`))
    // Acked: gone from the queue, and not delivered again.
    await until('the queue to drain', 10_000, async () => (await call('GET', '/jobs')).body.pending === 0)
    await sleep(2000)
    expect((await call('GET', `/jobs/${id}`)).body.deliveries).toBe(1)
  }, 60_000)

  it('runs the scheduled task only in the elected invocation', async () => {
    // Two at once: one leads and records a tick, the other is a follower and does nothing.
    const before = (await call('GET', '/ticks')).body.count as number
    const [a, b] = await Promise.all([call('POST', '/ticks'), call('POST', '/ticks')])
    const leaders = [a.body, b.body].filter((r) => r.leader === true)
    expect(leaders.length).toBeGreaterThanOrEqual(1)
    for (const r of leaders) expect(r).toMatchObject({ written: true, leaderKey: expect.stringMatching(/^example\/ticker\/[0-9a-f]+$/) })
    for (const r of [a.body, b.body]) expect(typeof r.leader).toBe('boolean')
    // Leaders ran one after the other: each saw the previous tick (no lost update). The
    // every-minute schedule may add ticks meanwhile, so only order is checked.
    const counts = leaders.map((r) => r.count as number)
    expect(new Set(counts).size).toBe(counts.length)
    for (const c of counts) expect(c).toBeGreaterThan(before)
    expect((await call('GET', '/ticks')).body.count).toBeGreaterThanOrEqual(Math.max(...counts))
  }, 60_000)

  it('fans out to workers that meet on a double barrier', async () => {
    const res = await call('POST', '/fanout')
    expect(res.status).toBe(200)
    expect(res.body.results).toHaveLength(3)
    const results = res.body.results as { index: number; arrivedAt: number; startedAt: number; finishedAt: number; leftAt: number }[]
    for (const r of results) expect(typeof r.leftAt).toBe('number')
    // Entry: no body started before the last worker arrived (they were invoked 200 ms apart).
    const lastArrival = Math.max(...results.map((r) => r.arrivedAt))
    for (const r of results) expect(r.startedAt).toBeGreaterThanOrEqual(lastArrival)
    // Exit: nobody left before the last body finished (the first worker works longest).
    const lastFinish = Math.max(...results.map((r) => r.finishedAt))
    for (const r of results) expect(r.leftAt).toBeGreaterThanOrEqual(lastFinish)
    expect(new Set(res.body.results.map((r: { index: number }) => r.index))).toEqual(new Set([0, 1, 2]))
    // Everyone left: the barrier's keys are gone.
    expect(await client.getAll().prefix(`example/fanout/${res.body.batch}/`).count()).toBe(0)
  }, 60_000)

  it('stops etcd and removes its pid file on SIGINT', async () => {
    const exited = new Promise<number | null>((resolve) => cli.once('exit', (code) => resolve(code)))
    cli.kill('SIGINT')
    await Promise.race([exited, sleep(20_000).then(() => Promise.reject(new Error(`the CLI did not exit after SIGINT:\n${output}`)))])
    await until(`etcd ${etcdPid} to exit`, 5_000, () => !alive(etcdPid))
    expect(existsSync(join(stateDir, `${cli.pid}.json`))).toBe(false)
    expect(output).toContain('etcd: stopped')
  }, 30_000)
})

describe('runDispatcher (the dispatcher core, against etcd, invoking a stand-in function)', () => {
  const etcd = useEtcd(1)

  /** Runs a dispatcher until `done` resolves (or 15 s), then stops it. */
  async function dispatchUntil(options: Omit<DispatcherOptions, 'client' | 'signal'>, done: Promise<unknown>) {
    const abort = new AbortController()
    const running = runDispatcher({ ...options, client: etcd.client, signal: abort.signal })
    try {
      await Promise.race([done, sleep(15_000).then(() => Promise.reject(new Error('dispatcher test timed out')))])
    } finally {
      abort.abort()
      await running
    }
  }

  it('invokes the subscribed function with JSON-safe messages that it can ack in another "process"', async () => {
    const name = uniqueName('dq')
    const q = new Queue(etcd.client, name)
    for (const v of ['a', 'b', 'c']) await q.enqueue(v)
    const events: DispatchEvent[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        subscriptions: [{ function: 'svc-dev-worker', queue: name, batchSize: 10 }],
        invoke: async (fn, event) => {
          expect(fn).toBe('svc-dev-worker')
          // The event survives JSON, as it does through the Invoke API.
          const parsed = JSON.parse(JSON.stringify(event)) as DispatchEvent
          events.push(parsed)
          const consumer = new Queue(etcd.newClient(), name)
          for (const m of parsed.etcdQueue.messages as { receipt: string }[]) await consumer.ack(m.receipt)
          if (events.flatMap((e) => e.etcdQueue.messages).length === 3) resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    const messages = events.flatMap((e) => e.etcdQueue.messages) as { value: string; receiveCount: number; id: string }[]
    expect(messages.map((m) => m.value)).toEqual(['a', 'b', 'c'])
    expect(messages.every((m) => m.receiveCount === 1)).toBe(true)
    expect(events[0].etcdQueue).toMatchObject({ queue: name, priority: false })
    expect(await q.size()).toBe(0)
  })

  it('releases the batch of a failed invocation at once, so it is redelivered', async () => {
    const name = uniqueName('dq')
    await new Queue(etcd.client, name).enqueue('job')
    const deliveries: number[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        // A long visibility timeout: only the nack can bring the message back within the test.
        subscriptions: [{ function: 'f', queue: name, visibilityTimeout: 60 }],
        invoke: async (_fn, event) => {
          const [m] = event.etcdQueue.messages as { receiveCount: number; receipt: string }[]
          deliveries.push(m.receiveCount)
          if (m.receiveCount < 3) return { ok: false, error: 'boom' }
          await new Queue(etcd.client, name).ack(m.receipt)
          resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    expect(deliveries).toEqual([1, 2, 3])
  })

  it('redelivers a message the function did not settle once its visibility timeout ends', async () => {
    const name = uniqueName('dq')
    await new Queue(etcd.client, name).enqueue('slow')
    const seen: { count: number; at: number }[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        subscriptions: [{ function: 'f', queue: name, visibilityTimeout: 1 }],
        invoke: async (_fn, event) => {
          const [m] = event.etcdQueue.messages as { receiveCount: number; receipt: string }[]
          seen.push({ count: m.receiveCount, at: performance.now() })
          if (m.receiveCount === 1) return { ok: true } // "succeeded" but never acked (crashed before ack)
          await new Queue(etcd.client, name).ack(m.receipt)
          resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    expect(seen.map((s) => s.count)).toEqual([1, 2])
  })

  it('moves a message to the dead-letter queue after maxReceives deliveries', async () => {
    const name = uniqueName('dq')
    const dlq = uniqueName('dlq')
    await new Queue(etcd.client, name).enqueue('poison')
    let invocations = 0
    const dead = new Queue(etcd.client, dlq)
    await dispatchUntil(
      {
        subscriptions: [{ function: 'f', queue: name, maxReceives: 2, deadLetterQueue: dlq }],
        invoke: async () => {
          invocations++
          return { ok: false, error: 'always fails' }
        },
      },
      until('the dead-letter queue to get the message', 10_000, async () => (await dead.size()) === 1),
    )
    expect(invocations).toBe(2)
    expect(await dead.dequeue()).toBe('poison')
    expect(await new Queue(etcd.client, name).size()).toBe(0)
  })

  it('serves a PriorityQueue subscription most urgent first, with priorities in the messages', async () => {
    const name = uniqueName('dpq')
    const pq = new PriorityQueue(etcd.client, name)
    await pq.enqueue('low', 9)
    await pq.enqueue('high', 0)
    await pq.enqueue('mid', 4)
    const got: { value: string; priority?: number }[] = []
    let resolveDone!: () => void
    const done = new Promise<void>((r) => (resolveDone = r))
    await dispatchUntil(
      {
        subscriptions: [{ function: 'f', queue: name, priority: true, batchSize: 1 }],
        invoke: async (_fn, event) => {
          expect(event.etcdQueue.priority).toBe(true)
          for (const m of event.etcdQueue.messages as { value: string; priority: number; receipt: string }[]) {
            got.push({ value: m.value, priority: m.priority })
            await pq.ack(m.receipt)
          }
          if (got.length === 3) resolveDone()
          return { ok: true }
        },
      },
      done,
    )
    expect(got).toEqual([
      { value: 'high', priority: 0 },
      { value: 'mid', priority: 4 },
      { value: 'low', priority: 9 },
    ])
  })

  it('stops promptly when its signal aborts while waiting for messages', async () => {
    const abort = new AbortController()
    const running = runDispatcher({ client: etcd.client, subscriptions: [{ function: 'f', queue: uniqueName('idle') }], invoke: async () => ({ ok: true }), signal: abort.signal })
    await sleep(300)
    abort.abort()
    await expect(Promise.race([running.then(() => 'stopped'), sleep(5_000).then(() => 'hung')])).resolves.toBe('stopped')
  })

  it('lambdaInvoker speaks the Invoke API: RequestResponse outcomes, function errors, Event', async () => {
    const seen: { path: string; type?: string; body: unknown }[] = []
    const server = createServer((req, res) => {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        seen.push({ path: req.url!, type: req.headers['x-amz-invocation-type'] as string | undefined, body: JSON.parse(body) })
        const fn = decodeURIComponent(req.url!.split('/')[3])
        if (req.headers['x-amz-invocation-type'] === 'Event') return res.writeHead(202).end()
        if (fn === 'broken') return res.writeHead(200, { 'X-Amz-Function-Error': 'Unhandled' }).end(JSON.stringify({ errorMessage: 'kaput', errorType: 'Error' }))
        res.writeHead(200).end(JSON.stringify({ batchItemFailures: [{ itemIdentifier: '42' }] }))
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const event: DispatchEvent = { etcdQueue: { queue: 'q', priority: false, messages: [{ id: '42' }] } }
      const sync = lambdaInvoker({ endpoint, region: 'eu-west-1', env: {} })
      expect(await sync('svc-dev-worker', event)).toEqual({ ok: true, failedIds: ['42'] })
      expect(await sync('broken', event)).toEqual({ ok: false, error: 'kaput' })
      expect(await lambdaInvoker({ endpoint, invocationType: 'Event', env: {} })('svc-dev-worker', event)).toEqual({ ok: true })
      expect(seen.map((s) => s.type)).toEqual(['RequestResponse', 'RequestResponse', 'Event'])
      expect(seen[0].path).toBe('/2015-03-31/functions/svc-dev-worker/invocations')
      expect(seen[0].body).toEqual(event)
    } finally {
      server.close()
    }
    expect(() => lambdaInvoker({ invocationType: 'Later' as never })).toThrow(InvalidArgumentError)
  })

  it('rejects bad subscriptions before claiming anything', async () => {
    const run = (sub: unknown) => runDispatcher({ client: etcd.client, subscriptions: [sub as QueueSubscription], invoke: async () => ({ ok: true }), signal: AbortSignal.abort() })
    await expect(run({ queue: 'q' })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(run({ function: 'f', queue: 'q', batchSize: 0 })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(run({ function: 'f', queue: 'q', maxReceives: 3 })).rejects.toThrow(/deadLetterQueue/)
    expect(() => subscriptionsFromEnv({})).toThrow(ConfigurationError)
    expect(() => subscriptionsFromEnv({ ETCD_QUEUE_SUBSCRIPTIONS: '{nope' })).toThrow(/not valid JSON/)
    expect(subscriptionsFromEnv({ ETCD_QUEUE_SUBSCRIPTIONS: '[{"function":"f","queue":"q"}]' })).toEqual([{ function: 'f', queue: 'q' }])
  })
})
