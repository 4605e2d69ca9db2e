// End to end through the real CLI: `osls offline start` (serverless-offline + the middy-etcd
// plugin) on free ports, the example service in serverless.yml, a local etcd started by the
// plugin. Checks the plugin's etcd lifecycle (including replacing an etcd a killed session left
// behind) and the example functions over HTTP and the Lambda Invoke API.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient, Queue, type EtcdClient } from '../lib/index.js'
import { freePort, startEtcd, type EtcdCluster } from '../testing/index.js'
import { sleep, uniqueName, until, alive } from './helpers.js'
import { BUNDLED, INJECTED, LISTENING, SEEDED, SUBSCRIBED, UI_PAGE } from './support/offline-log.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const stateDir = join(root, '.etcd-offline')

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
  let lambdaBase: string
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
    lambdaBase = `http://localhost:${lambdaPort}`
    cli = spawn(
      process.execPath,
      [join(root, 'node_modules/.bin/osls'), 'offline', 'start', '--httpPort', String(httpPort), '--lambdaPort', String(lambdaPort)],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    for (const stream of [cli.stdout!, cli.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()))
    await until('"Server ready" from the CLI', 90_000, () => {
      if (cli.exitCode !== null) throw new Error(`osls exited with ${cli.exitCode}:\n${output}`)
      return output.includes('Server ready')
    })
    const m = LISTENING.exec(output)
    if (m?.[2] !== '1') throw new Error(`no etcd line in the CLI output:\n${output}`)
    etcdEndpoint = m[1]
    etcdPid = Number(m[3])
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

  it('prints the start-up lines the README shows', () => {
    // The etcd of this run's release (ETCD_BIN, which vitest.config.ts sets for every file) is the one osls started.
    expect(LISTENING.exec(output)?.[4]).toBe(process.env.MIDDY_ETCD_TEST_VERSION)
    expect(INJECTED.exec(output)?.slice(1)).toEqual([etcdEndpoint, '30'])
    expect(SEEDED.exec(output)?.slice(1, 4)).toEqual(['2', undefined, '1'])
    expect(SUBSCRIBED.exec(output)?.slice(1)).toEqual(['example/jobs', undefined, 'jobWorker', '5'])
  })

  it('serves the operations page on 127.0.0.1, read-only, and prints its address', async () => {
    const m = UI_PAGE.exec(output)
    expect(m?.[2], `no operations page line in the CLI output:\n${output}`).toBe('read-only')
    const page = await fetch(m![1])
    expect(page.status).toBe(200)
    expect(await page.text()).toContain('<script type="module" src="app.js"></script>')
    const snapshot = await until(
      'the first snapshot',
      10_000,
      async () => (await (await fetch(`${m![1]}api/snapshot`)).json()) as { revision: number } | null,
    )
    expect(snapshot!.revision).toBeGreaterThan(0)
    const refused = await fetch(`${m![1]}api/actions/purge`, {
      method: 'POST',
      headers: { 'x-middy-etcd-ui': 'action' },
      body: '{"queue":"example/jobs"}',
    })
    expect(refused.status).toBe(403)
  })

  it('runs the handlers from bundles, as `package` ships them, not through a TypeScript loader', () => {
    const m = BUNDLED.exec(output)
    expect(m).not.toBeNull()
    expect(Number(m![3])).toBe(cli.pid)
    expect(m![1].split(', ')).toEqual(expect.arrayContaining(['ping', 'counterIncrement', 'jobWorker', 'dispatcher']))
    const build = join(root, m![2])
    for (const file of ['handlers/counter.js', 'handlers/jobs.js', 'package.json']) expect(existsSync(join(build, file))).toBe(true)
    expect(JSON.parse(readFileSync(join(build, 'package.json'), 'utf8'))).toEqual({ type: 'commonjs' })
  })

  it('stack traces of the bundled handlers point at the .ts lines (source maps on offline)', async () => {
    // The CLI was started without --enable-source-maps: the plugin turns them on for the handlers' workers.
    const res = await fetch(`${lambdaBase}/2015-03-31/functions/middy-etcd-dev-crash/invocations`, { method: 'POST', body: '{}' })
    expect(res.headers.get('x-amz-function-error')).toBeTruthy()
    const { errorMessage, trace } = (await res.json()) as { errorMessage: string; trace: string[] }
    expect(errorMessage).toMatch(/crash on purpose/)
    const frames = trace.filter((l) => l.includes(`${root}/`) && !l.includes('node_modules'))
    expect(frames.length).toBeGreaterThanOrEqual(2)
    for (const frame of frames) expect(frame).toMatch(/handlers\/ping\.ts:\d+:\d+\)$/)
    expect(trace.join('\n')).not.toMatch(/\.etcd-offline\/build\/\d+\/handlers\/ping\.js/)
  })

  it('GET /settings serves the custom.etcd.seed values through etcdConfig, and a change made in etcd on the next call', async () => {
    const seeded = await call('GET', '/settings')
    expect(seeded).toMatchObject({ status: 200, body: { greeting: 'hello from etcd', reports: { concurrency: 2 } } })
    // Both keys in one Txn: the function serves them from one revision, never one without the other.
    await client
      .if('example/settings/greeting', 'Version', '>', 0)
      .then(client.put('example/settings/greeting').value('"changed"'), client.put('example/settings/maintenance').value('true'))
      .commit()
    const changed = await until('the change on /settings', 5_000, async () => {
      const r = await call('GET', '/settings')
      const body = r.body as { greeting: string; maintenance?: boolean }
      if (body.greeting === 'hello from etcd') return undefined
      return body
    })
    expect(changed).toMatchObject({ greeting: 'changed', maintenance: true })
  })

  it('the semaphore function lets at most 2 reports build at once', async () => {
    const results = await Promise.all(Array.from({ length: 6 }, () => call('POST', '/reports')))
    for (const r of results) expect(r.status).toBe(200)
    const spans = results.map((r) => r.body as { startedAt: number; finishedAt: number; fence: string })
    const most = Math.max(...spans.map((a) => spans.filter((b) => b.startedAt <= a.startedAt && a.startedAt < b.finishedAt).length))
    expect(most).toBeLessThanOrEqual(2)
    expect(new Set(spans.map((s) => s.fence)).size).toBe(6)
  }, 60_000)

  it('the rate-limited function answers 429 with Retry-After once its 2 calls a second (burst 3) are used', async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => fetch(`${base}/partner`, { method: 'POST' })))
    const admitted = answers.filter((r) => r.status === 200)
    const limited = answers.filter((r) => r.status === 429)
    expect(admitted.length + limited.length).toBe(8)
    expect(admitted.length).toBeGreaterThanOrEqual(1)
    expect(admitted.length).toBeLessThanOrEqual(4) // burst + 1, and at most one refill during the calls
    expect(limited.length).toBeGreaterThanOrEqual(4)
    for (const r of limited) expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0)
  }, 60_000)

  it('the idempotent charge runs once per Idempotency-Key; the same key with another body is a 422', async () => {
    const key = uniqueName('charge')
    const before = (await call('GET', '/charges')).body.charges as number
    const charge = (amount: number, idempotencyKey = key) =>
      fetch(`${base}/charges`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'Idempotency-Key': idempotencyKey },
        body: JSON.stringify({ amount }),
      })
    const answers = await Promise.all([charge(100), charge(100), charge(100)])
    const bodies = await Promise.all(answers.map((r) => r.json() as Promise<{ chargeId: string }>))
    for (const r of answers) expect(r.status).toBe(201)
    expect(new Set(bodies.map((b) => b.chargeId)).size).toBe(1)
    expect((await call('GET', '/charges')).body.charges).toBe(before + 1)
    expect((await charge(200)).status).toBe(422)
    expect((await charge(100, uniqueName('charge'))).status).toBe(201)
    expect((await call('GET', '/charges')).body.charges).toBe(before + 2)
  }, 60_000)

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
      const res = await fetch(`${base}${path}`, {
        method,
        headers: text === undefined ? {} : { 'content-type': 'application/json' },
        body: text,
      })
      const answer = await res.text()
      return { status: res.status, text: answer }
    }
    const state = async () =>
      JSON.stringify(
        await Promise.all(
          ['example/banks/', 'example/config/', 'example/jobs/', 'example/queues/', 'example/pqueues/', '__delayed/example/'].map((p) =>
            client.getAll().prefix(p).strings(),
          ),
        ),
      )
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
      else if (typeof message !== 'string' || /\n\s+at /.test(res.text))
        wrong.push(`${what}: no message, or a stack trace: ${res.text.slice(0, 200)}`)
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

  it('says when a message is dead-lettered, with its id and its id in the dead-letter queue', async () => {
    // Not JSON: the worker fails it on every delivery; after 5 it moves to dlq/example/jobs.
    const { id } = await new Queue(client, 'example/jobs').enqueue('not a job')
    const line = await until(
      'the dead-letter line',
      45_000,
      () =>
        new RegExp(
          `etcdQueue: message ${id} of example/jobs was dead-lettered: now id (\\d+) in dlq/example/jobs \\(middy-etcd queue redrive dlq/example/jobs moves it back\\)`,
        ).exec(output) ?? false,
    )
    const dead = await client.getAll().prefix('dlq/example/jobs/').exec()
    expect(dead.kvs.map((kv) => kv.create_revision)).toContain(line[1])
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
    expect(existsSync(join(stateDir, 'build', String(cli.pid)))).toBe(false)
  }, 30_000)
})
