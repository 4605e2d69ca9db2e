import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { Barrier } from '../lib/barriers/barrier.js'
import { DoubleBarrier } from '../lib/barriers/double-barrier.js'
import { Election } from '../lib/locks/election.js'
import { keyspace } from '../lib/core/kv.js'
import { Mutex } from '../lib/locks/mutex.js'
import { PriorityQueue } from '../lib/queue/priority-queue.js'
import { Queue } from '../lib/queue/queue.js'
import { RWMutex } from '../lib/locks/rwmutex.js'
import { Session } from '../lib/session/session.js'
import { sleep, uniqueName, useEtcd } from './helpers.js'

const etcd = useEtcd()
const root = fileURLToPath(new URL('..', import.meta.url))
const emptyDir = mkdtempSync(join(tmpdir(), 'middy-etcd-cli-'))
afterAll(() => rmSync(emptyDir, { recursive: true, force: true }))

interface Run {
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/**
 * Runs the CLI from source as an operator would, with ETCD_ENDPOINTS pointing at the test etcd,
 * in a directory of its own (default: an empty one, so no `.etcd-offline/` of a running
 * `serverless offline` is found).
 */
function cli(args: string[], env: Record<string, string | undefined> = {}, cwd = emptyDir): Promise<Run> {
  const started = Date.now()
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(root, 'cli', 'main.ts'), ...args], {
    cwd,
    env: { ...process.env, ETCD_NAMESPACE: '', ETCD_CALL_TIMEOUT_MS: '', ETCD_ENDPOINTS: etcd.cluster.endpoints.join(','), ...env },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  // Generous "does not hang" bound; a hung CLI fails the test instead of stalling the run.
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(killer)
      resolve({ code, stdout, stderr, ms: Date.now() - started })
    })
  })
}

async function json(args: string[]): Promise<any> {
  const run = await cli([...args, '--json'])
  expect(run.stderr).toBe('')
  expect(run.code).toBe(0)
  return JSON.parse(run.stdout)
}

/** Polls until `prefix` holds `n` keys (a contender has queued), bounded. */
async function untilKeys(prefix: string, n: number) {
  const ks = keyspace(etcd.client)
  for (let i = 0; i < 100; i++) {
    if ((await ks.range(prefix, { prefix: true, countOnly: true })).count >= BigInt(n)) return
    await sleep(50)
  }
  throw new Error(`${prefix} never reached ${n} keys`)
}

describe('middy-etcd locks', () => {
  it('shows the holder and the waiter of a Mutex with fence and lease TTL', async () => {
    const name = uniqueName('cli-lock')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 7 })
    const holder = new Mutex(s1, name)
    await holder.lock()
    const waiter = new Mutex(s2, name)
    const waiting = waiter.lock()
    await untilKeys(`${name}/`, 2)

    const doc = await json(['locks', name])
    expect(doc.locks).toHaveLength(1)
    const lock = doc.locks[0]
    expect(lock).toMatchObject({ name, kind: 'mutex' })
    expect(lock.holders).toHaveLength(1)
    expect(lock.holders[0]).toMatchObject({
      key: holder.key,
      fence: Number(holder.fence),
      lease: s1.leaseHex,
      leaseId: s1.leaseId,
      grantedTtl: 5,
    })
    expect(lock.holders[0].ttl).toBeGreaterThan(0)
    expect(lock.holders[0].ttl).toBeLessThanOrEqual(5)
    expect(lock.waiters).toHaveLength(1)
    expect(lock.waiters[0]).toMatchObject({ key: `${name}/${s2.leaseHex}`, lease: s2.leaseHex, grantedTtl: 7 })
    expect(lock.waiters[0].fence).toBeGreaterThan(Number(holder.fence))

    const text = await cli(['locks', name])
    expect(text.code).toBe(0)
    const lines = text.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^LOCK\s+KIND\s+ROLE\s+FENCE\s+KEY\s+LEASE\s+TTL$/)
    expect(lines[1]).toMatch(new RegExp(`^${name}\\s+mutex\\s+holder\\s+${holder.fence}\\s+${holder.key}\\s+${s1.leaseHex}\\s+\\d/5s$`))
    expect(lines[2]).toMatch(new RegExp(`^${name}\\s+mutex\\s+waiter\\s+\\d+\\s+${name}/${s2.leaseHex}\\s+${s2.leaseHex}\\s+\\d/7s$`))

    await holder.unlock()
    await waiting
    const after = await json(['locks', name])
    expect(after.locks[0].holders[0].key).toBe(waiter.key)
    expect(after.locks[0].waiters).toEqual([])
    await waiter.unlock()
    expect((await json(['locks', name])).locks).toEqual([])
    await s1.close()
    await s2.close()
  })

  it('finds locks by layout under a prefix: mutexes, elections and RWMutex readers/writers', async () => {
    const base = uniqueName('cli-scan')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    const m = new Mutex(s1, `${base}/jobs/a`)
    await m.lock()
    const e = new Election(s1, `${base}/primary`)
    await e.campaign('node-1')
    const r1 = new RWMutex(s1, `${base}/table`)
    const r2 = new RWMutex(s2, `${base}/table`)
    const w = new RWMutex(s2, `${base}/table`)
    await r1.rLock()
    await r2.rLock()
    const writing = w.lock()
    await untilKeys(`${base}/table/`, 3)
    // Not locks: a plain key, and a lease-attached key whose suffix is not its lease.
    await etcd.client.put(`${base}/jobs/plain`).value('x')
    await etcd.client.put(`${base}/jobs/b/abc`).value('').lease(s1.leaseId)

    const doc = await json(['locks', `${base}/`])
    const byName = Object.fromEntries(doc.locks.map((l: any) => [l.name, l]))
    expect(Object.keys(byName).sort()).toEqual([`${base}/jobs/a`, `${base}/primary`, `${base}/table`])
    expect(byName[`${base}/jobs/a`].holders[0].key).toBe(m.key)
    expect(byName[`${base}/primary`]).toMatchObject({ kind: 'election', holders: [{ key: e.key, fence: Number(e.rev) }], waiters: [] })
    const table = byName[`${base}/table`]
    expect(table.kind).toBe('rwmutex')
    expect(table.holders.map((c: any) => [c.key, c.mode])).toEqual([
      [r1.key, 'read'],
      [r2.key, 'read'],
    ])
    expect(table.waiters).toHaveLength(1)
    expect(table.waiters[0].mode).toBe('write')

    const text = await cli(['locks', `${base}/`])
    expect(text.stdout).toMatch(/rwmutex\s+waiter \(write\)/)
    expect(text.stdout).toMatch(/election\s+leader/)

    await r1.rUnlock()
    await r2.rUnlock()
    await writing
    await w.unlock()
    await s1.close()
    await s2.close()
  })

  it('shows waiters blocked by an older key that is no contender', async () => {
    const name = uniqueName('cli-blocked')
    // On a lease, so our Mutex queues behind it (a key without one it refuses as foreign data).
    const other = await Session.create(etcd.client, { ttl: 5 })
    await etcd.client.put(`${name}/stray`).value('x').lease(other.leaseId).exec()
    const s = await Session.create(etcd.client, { ttl: 5 })
    const stop = new AbortController()
    const waiting = new Mutex(s, name).lock({ signal: stop.signal }).catch((err: Error) => err.name)
    await untilKeys(`${name}/`, 2)
    const doc = await json(['locks', name])
    expect(doc.locks).toEqual([
      expect.objectContaining({
        name,
        kind: 'mutex',
        holders: [],
        blockedBy: `${name}/stray`,
        waiters: [expect.objectContaining({ key: `${name}/${s.leaseHex}` })],
      }),
    ])
    stop.abort(new Error('test done'))
    expect(await waiting).toBe('Error')
    await Promise.all([s.close(), other.close()])
  })

  it('says so when there are no locks', async () => {
    const run = await cli(['locks', uniqueName('cli-none')])
    expect(run.code).toBe(0)
    expect(run.stdout).toMatch(/^no locks under "cli-none-/)
  })
})

describe('middy-etcd leader', () => {
  it('shows the leader, its proposal and lease, and the waiting candidates', async () => {
    const name = uniqueName('cli-elect')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    const e1 = new Election(s1, name)
    await e1.campaign('node-1')
    const e2 = new Election(s2, name)
    const campaigning = e2.campaign('node-2')
    await untilKeys(`${name}/`, 2)

    const doc = await json(['leader', name])
    expect(doc.election).toBe(name)
    expect(doc.leader).toMatchObject({ key: e1.key, value: 'node-1', rev: Number(e1.rev), lease: s1.leaseHex, grantedTtl: 5 })
    expect(doc.candidates).toHaveLength(1)
    expect(doc.candidates[0]).toMatchObject({ key: `${name}/${s2.leaseHex}`, value: 'node-2' })

    const text = await cli(['leader', name])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(new RegExp(`^leader\\s+${e1.key}$`, 'm'))
    expect(text.stdout).toMatch(/^proposal\s+"node-1"$/m)
    expect(text.stdout).toContain('candidates waiting (1)')
    expect(text.stdout).toContain('"node-2"')

    await e1.resign()
    await campaigning
    expect((await json(['leader', name])).leader.value).toBe('node-2')
    await e2.resign()
    await s1.close()
    await s2.close()
  })

  it('shows the Go/etcdctl layout written by hand, and reports no leader', async () => {
    const name = uniqueName('cli-go')
    const lease = await etcd.client.leaseClient.leaseGrant({ TTL: 5 })
    const hex = BigInt(lease.ID).toString(16)
    await etcd.client.put(`${name}/${hex}`).value('p1').lease(lease.ID)
    expect((await json(['leader', name])).leader).toMatchObject({ key: `${name}/${hex}`, value: 'p1', lease: hex })
    await etcd.client.leaseClient.leaseRevoke({ ID: lease.ID })

    const doc = await json(['leader', name])
    expect(doc.leader).toBeNull()
    expect(doc.candidates).toEqual([])
    const text = await cli(['leader', name])
    expect(text.code).toBe(0)
    expect(text.stdout).toContain('no leader')
  })
})

describe('middy-etcd queue', () => {
  it('pushes, counts visible and claimed items, peeks without claiming, purges with --yes', async () => {
    const name = uniqueName('cli-q')
    const text = await cli(['queue', 'push', name, 'a'])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(new RegExp(`^enqueued ${name}/\\d{19} \\(id \\d+\\)$`, 'm'))
    const q = new Queue(etcd.client, name)
    await q.enqueue('b')
    await q.enqueue('c')
    const pushed = await json(['queue', 'push', name, 'd'])
    expect(pushed.key).toMatch(new RegExp(`^${name}/\\d{19}$`))
    expect(await q.size()).toBe(4)
    const [claimed] = await q.receive({ max: 1, visibilityTimeout: 10, wait: false })
    expect(claimed.value).toBe('a')

    expect(await json(['queue', 'stats', name])).toMatchObject({ queue: name, items: 4, visible: 3, claimed: 1, deadLetter: null })
    const stats = await cli(['queue', 'stats', name])
    expect(stats.stdout).toMatch(/^items\s+4$/m)
    expect(stats.stdout).toMatch(/^claimed\s+1 /m)

    const peek = await json(['queue', 'peek', name, '--limit', '3'])
    expect(peek.items.map((i: any) => [i.value, i.claimed, i.receives])).toEqual([
      ['a', true, 1],
      ['b', false, 0],
      ['c', false, 0],
    ])
    expect(peek.more).toBe(true)
    expect(await q.size()).toBe(4) // peek claims nothing

    const refused = await cli(['queue', 'purge', name])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain('--yes')
    expect(await q.size()).toBe(4)

    const purged = await cli(['queue', 'purge', name, '--yes'])
    expect(purged.code).toBe(0)
    expect(purged.stdout).toContain('deleted 4 items')
    expect(await json(['queue', 'stats', name])).toMatchObject({ items: 0, visible: 0, claimed: 0 })
    expect((await keyspace(etcd.client).range(`__claims/${name}/`, { prefix: true, countOnly: true })).count).toBe(0n)
  })

  it('refuses a push that does not match the queue: no FIFO key in a PriorityQueue, no priority key in a Queue', async () => {
    const pq = uniqueName('pq')
    await new PriorityQueue(etcd.client, pq).enqueue('x', 3)
    const fifoIntoPriority = await cli(['queue', 'push', pq, 'oops'])
    expect(fifoIntoPriority.code).toBe(2)
    expect(fifoIntoPriority.stderr).toContain(`"${pq}" is a PriorityQueue`)
    expect(fifoIntoPriority.stderr).toContain('--priority N')
    const q = uniqueName('q')
    await new Queue(etcd.client, q).enqueue('x')
    const priorityIntoFifo = await cli(['queue', 'push', q, 'oops', '--priority', '1'])
    expect(priorityIntoFifo.code).toBe(2)
    expect(priorityIntoFifo.stderr).toContain('is a FIFO Queue')
    // Nothing was written into either.
    const ks = keyspace(etcd.client)
    expect((await ks.range(`${pq}/`, { prefix: true })).kvs.map((kv) => kv.key)).toEqual([
      expect.stringMatching(new RegExp(`^${pq}/00003/\\d{16}$`)),
    ])
    expect((await ks.range(`${q}/`, { prefix: true, countOnly: true })).count).toBe(1n)
  })

  it('pushes with --priority into a PriorityQueue and peeks in priority order; counts a dead-letter queue', async () => {
    const name = uniqueName('cli-pq')
    await cli(['queue', 'push', name, 'low', '--priority', '5'])
    await cli(['queue', 'push', name, 'high', '--priority', '0'])
    const peek = await json(['queue', 'peek', name])
    expect(peek.kind).toBe('priority')
    expect(peek.items.map((i: any) => [i.value, i.priority])).toEqual([
      ['high', 0],
      ['low', 5],
    ])
    const [first] = await new PriorityQueue(etcd.client, name).receive({ wait: false, visibilityTimeout: 10 })
    expect(first.value).toBe('high')

    const dlq = uniqueName('cli-dlq')
    await new Queue(etcd.client, dlq).enqueue('poison')
    expect(await json(['queue', 'stats', name, '--dead-letter', dlq])).toMatchObject({
      items: 2,
      claimed: 1,
      deadLetter: { queue: dlq, items: 1 },
    })
  })

  it('redrive moves dead letters back (to <queue> of dlq/<queue> by default, --max at a time); stats counts delayed and grouped messages', async () => {
    const name = uniqueName('cli-rd')
    const dlq = `dlq/${name}`
    const q = new Queue(etcd.client, name, { maxReceives: 1, deadLetterQueue: dlq })
    for (const v of ['a', 'b', 'c']) await q.enqueue(v)
    for (const m of await q.receive({ max: 10 })) await q.nack(m)
    expect(await q.size()).toBe(0)
    const one = await cli(['queue', 'redrive', dlq, '--max', '1'])
    expect(one.stdout.trim()).toBe(`moved 1 message from ${dlq} back to ${name}, receive counts reset`)
    expect(await json(['queue', 'redrive', dlq])).toMatchObject({ from: dlq, to: name, kind: 'fifo', moved: 2, skipped: 0 })
    expect((await q.receive({ max: 10, wait: false })).map((m) => m.receiveCount)).toEqual([1, 1, 1])

    const other = uniqueName('cli-rd-to')
    await new Queue(etcd.client, other).enqueue('x')
    const refused = await cli(['queue', 'redrive', other])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain('--to <queue>')
    expect(await json(['queue', 'redrive', other, '--to', `${name}-2`])).toMatchObject({ moved: 1 })

    await q.enqueue('later', { delayMs: 60_000 })
    await q.enqueue('g1', { group: 'g' })
    await q.enqueue('g2', { group: 'g' })
    expect(await json(['queue', 'stats', name])).toMatchObject({ items: 4, claimed: 3, delayed: 1, waitingInGroups: 1 })
    expect(await json(['queue', 'purge', name, '--yes'])).toMatchObject({
      deleted: 4,
      claimsDeleted: 3,
      delayedDeleted: 1,
      waitingDeleted: 1,
    })
    expect((await etcd.client.getAll().keys()).filter((k) => k.includes(name) && !k.includes(`${name}-2/`))).toEqual([])
  })
})

describe('middy-etcd barrier', () => {
  it('shows a barrier held and released, and double-barrier participants', async () => {
    const name = uniqueName('cli-bar')
    const b = new Barrier(etcd.client, name)
    const rev = await b.hold()
    expect(await json(['barrier', name])).toMatchObject({ barrier: name, held: true, heldSince: Number(rev) })
    expect((await cli(['barrier', name])).stdout).toMatch(/^held\s+yes/m)
    await b.release()
    expect(await json(['barrier', name])).toMatchObject({ held: false, heldSince: null, doubleBarrier: { participants: 0, ready: false } })

    const s = await Session.create(etcd.client, { ttl: 5 })
    const entering = [new DoubleBarrier(s, name, 3), new DoubleBarrier(s, name, 3)].map((d) =>
      d.enter().then(
        () => 'entered',
        (err: Error) => err.name,
      ),
    )
    await untilKeys(`${name}/waiters/`, 2)
    expect((await json(['barrier', name])).doubleBarrier).toEqual({ participants: 2, ready: false })
    await s.close() // revokes the lease: both waiters drop out
    expect(await Promise.all(entering)).toEqual(['SessionExpiredError', 'SessionExpiredError'])
  })
})

describe('middy-etcd config', () => {
  it('set writes keys (one, or a JSON file in one Txn), get reads them at one revision, diff compares with a file', async () => {
    const prefix = `${uniqueName('cli-cfg')}/`
    const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-cfg-'))
    try {
      const file = join(dir, 'config.json')
      writeFileSync(file, JSON.stringify({ greeting: 'hello', limits: { rps: 5 }, enabled: true }))
      const written = await json(['config', 'set', prefix, '--file', file])
      expect(written).toMatchObject({ prefix, written: 3, transactions: 1 })
      expect(await json(['config', 'set', prefix, 'extra', 'x'])).toMatchObject({ written: 1 })

      const got = await json(['config', 'get', prefix])
      expect(got.keys).toEqual([
        { key: 'enabled', value: 'true' },
        { key: 'extra', value: 'x' },
        { key: 'greeting', value: 'hello' },
        { key: 'limits', value: '{"rps":5}' },
      ])
      expect(got.revision).toBeGreaterThanOrEqual(written.revision)
      expect((await cli(['config', 'get', prefix])).stdout).toMatch(/^greeting\s+"hello"$/m)

      writeFileSync(file, JSON.stringify({ greeting: 'bonjour', limits: { rps: 5 }, enabled: true, added: 1 }))
      const d = await json(['config', 'diff', prefix, file])
      expect(d).toMatchObject({
        equal: false,
        onlyInFile: [{ key: 'added', value: '1' }],
        onlyInEtcd: [{ key: 'extra', value: 'x' }],
        changed: [{ key: 'greeting', etcd: { value: 'hello' }, file: { value: 'bonjour' } }],
      })
      const text = (await cli(['config', 'diff', prefix, file])).stdout
      expect(text).toMatch(/^\+ added = "1"$/m)
      expect(text).toMatch(/^- extra = "x"$/m)
      expect(text).toMatch(/^~ greeting: "hello" in etcd, "bonjour" in /m)
      await cli(['config', 'set', prefix, '--file', file])
      await keyspace(etcd.client).del(`${prefix}extra`)
      expect(await json(['config', 'diff', prefix, file])).toMatchObject({ equal: true })
      const help = await cli(['config', '--help'])
      expect(help.stdout).toContain('compare etcd with a local JSON file')
      const bad = await cli(['config', 'diff', prefix, join(dir, 'missing.json')])
      expect(bad.code).toBe(2)
      expect(bad.stderr).toContain('cannot read')
      writeFileSync(file, '[1,2]')
      const notMap = await cli(['config', 'set', prefix, '--file', file])
      expect(notMap.code).toBe(2)
      expect(notMap.stderr).toContain('must be an object of key → value')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('middy-etcd usage and errors', () => {
  it('prints help with exit 0', async () => {
    const general = await cli(['--help'])
    expect(general.code).toBe(0)
    for (const c of ['locks [prefix]', 'leader <election>', 'queue stats <name>', 'barrier <name>']) expect(general.stdout).toContain(c)
    const one = await cli(['queue', '--help'])
    expect(one.code).toBe(0)
    expect(one.stdout).toContain('middy-etcd queue push <name> <value> [--priority N]')
    expect((await cli(['help', 'leader'])).stdout).toContain('Usage: middy-etcd leader <election>')
  })

  it.each([
    [[], 'missing command', 'Usage: middy-etcd <command>'],
    [['frobnicate'], 'unknown command "frobnicate"', 'Usage: middy-etcd <command>'],
    [['leader'], 'missing election name', 'Usage: middy-etcd leader <election>'],
    [['barrier', 'a', 'b'], 'unexpected argument "b"', 'Usage: middy-etcd barrier <name>'],
    [['locks', '--bogus'], "Unknown option '--bogus'", 'Usage: middy-etcd locks [prefix]'],
    [['queue', 'peek', 'q', '--limit', 'many'], '--limit must be a whole number', 'middy-etcd queue peek'],
    [['locks', '--timeout', '-5'], '--timeout', 'Usage: middy-etcd locks'],
  ])('exits 2 with usage for %j', async (args, problem, usage) => {
    const run = await cli(args as string[])
    expect(run.code).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toContain(problem)
    expect(run.stderr).toContain(usage)
    expect(run.stderr).not.toMatch(/\n\s+at /) // no stack trace
  })

  it('exits 2 naming ETCD_ENDPOINTS, with the usage, when no endpoint is configured', async () => {
    const run = await cli(['locks'], { ETCD_ENDPOINTS: '', ETCDCTL_ENDPOINTS: '' })
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('ETCD_ENDPOINTS')
    expect(run.stderr).toContain('Usage: middy-etcd locks [prefix]')
  })

  it('prints its version', async () => {
    const run = await cli(['--version'])
    expect(run).toMatchObject({ code: 0, stderr: '' })
    expect(run.stdout.trim()).toBe(`middy-etcd ${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version}`)
  })

  it('finds the local etcd a running `serverless offline` recorded in .etcd-offline/, and ignores a dead one', async () => {
    const service = mkdtempSync(join(tmpdir(), 'middy-etcd-cli-service-'))
    try {
      mkdirSync(join(service, '.etcd-offline'))
      // A session whose CLI is gone, on an unreachable port: must not be used.
      const dead = { cliPid: 2 ** 22 + 12345, etcdPids: [], dataDir: '', endpoints: [`http://127.0.0.1:${await closedPort()}`] }
      writeFileSync(join(service, '.etcd-offline', `${dead.cliPid}.json`), JSON.stringify(dead))
      const none = await cli(['locks'], { ETCD_ENDPOINTS: '', ETCDCTL_ENDPOINTS: '' }, service)
      expect(none.code).toBe(2)
      // A live session (this test process stands in for the offline CLI) on the test etcd.
      const live = { cliPid: process.pid, etcdPids: [], dataDir: '', endpoints: etcd.cluster.endpoints }
      writeFileSync(join(service, '.etcd-offline', `${process.pid}.json`), JSON.stringify(live))
      const name = uniqueName('local')
      const run = await cli(['queue', 'push', name, 'v', '--json'], { ETCD_ENDPOINTS: '', ETCDCTL_ENDPOINTS: '' }, service)
      expect(run.code).toBe(0)
      expect(run.stderr).toContain(`using the local etcd of serverless offline (pid ${process.pid}) at ${etcd.cluster.endpoints.join(',')}`)
      expect(await new Queue(etcd.client, name).size()).toBe(1)
      // ETCD_ENDPOINTS still wins.
      const port = await closedPort()
      expect((await cli(['locks'], { ETCD_ENDPOINTS: `http://127.0.0.1:${port}` }, service)).stderr).toContain(`(from ETCD_ENDPOINTS)`)
    } finally {
      rmSync(service, { recursive: true, force: true })
    }
  })

  it('exits 1 with one line naming ETCD_ENDPOINTS when etcd is unreachable, without leaking the password', async () => {
    const port = await closedPort()
    const run = await cli(['locks'], { ETCD_ENDPOINTS: `http://127.0.0.1:${port}`, ETCD_USERNAME: 'root', ETCD_PASSWORD: 'hunter2-secret' })
    expect(run.code).toBe(1)
    expect(run.stdout).toBe('')
    expect(run.stderr.trim().split('\n')).toHaveLength(1)
    expect(run.stderr).toContain(`cannot reach etcd at http://127.0.0.1:${port} (from ETCD_ENDPOINTS)`)
    expect(run.stderr).not.toContain('hunter2-secret')
    expect(run.ms).toBeLessThan(15_000)
  })

  it('--endpoints overrides the environment', async () => {
    const port = await closedPort()
    const name = uniqueName('cli-ep')
    const ok = await cli(['barrier', name, '--endpoints', etcd.cluster.endpoints[0]], { ETCD_ENDPOINTS: `http://127.0.0.1:${port}` })
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/^held\s+no$/m)
    const bad = await cli(['barrier', name, '--endpoints', `http://127.0.0.1:${port}`])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('(from --endpoints)')
  })

  it('gives up on a server that never answers within the call deadline', async () => {
    const silent = await listen(createServer(() => {}))
    try {
      const port = (silent.address() as { port: number }).port
      const run = await cli(['leader', 'x', '--timeout', '500'], { ETCD_ENDPOINTS: `http://127.0.0.1:${port}` })
      expect(run.code).toBe(1)
      expect(run.stderr).toContain('cannot reach etcd')
      expect(run.ms).toBeLessThan(15_000)
    } finally {
      silent.close()
    }
  })
})

function listen(server: Server): Promise<Server> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = await listen(createServer())
  const port = (server.address() as { port: number }).port
  await new Promise((r) => server.close(r))
  return port
}
