/**
 * Fencing that a downstream store enforces, against a real PostgreSQL server started
 * on a temporary data dir and a free 127.0.0.1 port: a holder frozen (SIGSTOP) past its TTL
 * loses its lock to another, and every write it makes on waking, with its old fence, is refused
 * by Postgres; the new holder's writes all land. Also: `fencedUpsert`'s SQL and its bad-input
 * errors, and the `examples/fencing-*.ts` files (run here) that the README quotes.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createAccounts, handler, setBalance, updateBalance } from '../examples/fencing-postgres.js'
import { fencedUpdateItem } from '../examples/fencing-dynamodb.js'
import { recordRun } from '../examples/fencing-etcd.js'
import { handler as fencedHandler } from '../examples/fencing-handler.js'
import { FenceRejectedError, fencedUpsert, InvalidArgumentError, Mutex, requireFenced, Session } from '../lib/index.js'
import { lambdaContext } from '../testing/index.js'
import { uniqueName, useEtcd } from './helpers.js'
import { startPostgres, type PgServer } from './support/postgres.js'
import { Worker } from './support/workers.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const agentScript = fileURLToPath(new URL('./support/netns-agent.ts', import.meta.url))
const etcd = useEtcd(1)
let pg: PgServer

beforeAll(async () => {
  pg = await startPostgres()
  await pg.admin.query('CREATE TABLE fenced_rows (id text PRIMARY KEY, value text NOT NULL, fence bigint NOT NULL)')
  await pg.admin.query(createAccounts)
}, 60_000)
afterAll(async () => {
  await pg?.stop()
})

describe('fencedUpsert and requireFenced', () => {
  it('builds a parameterised upsert that lands only with a higher fence', () => {
    expect(fencedUpsert({ table: 'app.accounts', key: { id: 'alice' }, set: { balance: 120, note: 'x' }, fence: 41n })).toEqual({
      text:
        'INSERT INTO "app"."accounts" AS cur ("id", "balance", "note", "fence") VALUES ($1, $2, $3, $4) ' +
        'ON CONFLICT ("id") DO UPDATE SET "balance" = EXCLUDED."balance", "note" = EXCLUDED."note", "fence" = EXCLUDED."fence" WHERE cur."fence" < EXCLUDED."fence"',
      values: ['alice', 120, 'x', '41'],
    })
    expect(fencedUpsert({ table: 't', key: { k: 1 }, set: { v: 2 }, fence: 9n, fenceColumn: 'token' }).text).toContain(
      'WHERE cur."token" < EXCLUDED."token"',
    )
  })

  it('refuses what it cannot quote or would write twice, with a typed error naming the fix', () => {
    const ok = { table: 't', key: { id: 1 }, set: { v: 1 }, fence: 5n }
    const bad: [object, RegExp][] = [
      [{ ...ok, table: 't; DROP TABLE x' }, /table must be a plain SQL identifier/],
      [{ ...ok, table: undefined }, /table must be a table name/],
      [{ ...ok, set: { 'v"--': 1 } }, /set column must be a plain SQL identifier/],
      [{ ...ok, key: {} }, /key must name exactly one column/],
      [{ ...ok, set: {} }, /set must name at least one column/],
      [{ ...ok, set: { fence: 1 } }, /must not contain the key column or the fence column/],
      [{ ...ok, fence: 5 }, /fence must be a grant's fencing token/],
      [{ ...ok, fence: 0n }, /fence must be a grant's fencing token/],
    ]
    for (const [spec, message] of bad) expect(() => fencedUpsert(spec as never)).toThrow(message)
    expect(() => fencedUpsert(null as never)).toThrow(InvalidArgumentError)
  })

  it('requireFenced turns "0 rows" or false into a FenceRejectedError that says to stop', () => {
    expect(() => requireFenced(1, 3n, 'r')).not.toThrow()
    expect(() => requireFenced(true, 3n, 'r')).not.toThrow()
    for (const refused of [0, false, null, undefined]) {
      const err = (() => {
        try {
          requireFenced(refused, 3n, 'accounts/alice')
        } catch (e) {
          return e as FenceRejectedError
        }
      })()
      expect(err).toBeInstanceOf(FenceRejectedError)
      expect(err!.fence).toBe(3n)
      expect(err!.code).toBe('FENCE_REJECTED')
      expect(err!.message).toMatch(/accounts\/alice.*fenced with 3 was refused.*do not retry/)
    }
  })
})

describe('a frozen holder cannot write to Postgres after its lock passed on', () => {
  const PAIRS = 4
  const ROUNDS = 6
  const TTL = 1

  it(`${PAIRS} holders x ${ROUNDS} rounds: every late write refused, every new holder's write applied`, async () => {
    const target = { host: '127.0.0.1', port: pg.port, user: pg.user, database: pg.database }
    const results = await Promise.all(Array.from({ length: PAIRS }, (_, pair) => rounds(pair, target)))
    const late = results.flatMap((r) => r.late)
    const fresh = results.flatMap((r) => r.fresh)
    console.log(
      `[fencing] postgres: ${late.length} late writes by frozen holders, ${late.filter((w) => !w.applied).length} refused; ${fresh.length} writes by new holders, ${fresh.filter((w) => w.applied).length} applied`,
    )
    expect(late.length).toBe(PAIRS * ROUNDS * 2)
    expect(late.filter((w) => w.applied)).toEqual([])
    expect(late.every((w) => w.error === undefined)).toBe(true)
    expect(fresh.filter((w) => !w.applied)).toEqual([])
    // The rows hold the last new holder's value and fence.
    for (const r of results) {
      const row = await pg.admin.query('SELECT value, fence FROM fenced_rows WHERE id = $1', [r.row])
      expect(row.rows[0]).toEqual({ value: r.lastValue, fence: String(r.lastFence) })
    }
  }, 120_000)

  /** One lock and one row: A (a child process) locks and writes, is frozen; B locks and writes; A wakes and writes twice. */
  async function rounds(pair: number, target: { host: string; port: number; user: string; database: string }) {
    const row = uniqueName(`row${pair}`)
    const name = uniqueName(`fence${pair}`)
    const pgTarget = { ...target, row }
    const a = await Worker.start(etcd.cluster.endpoints, '', { script: agentScript })
    const late: { applied: boolean; error?: string }[] = []
    const fresh: { applied: boolean }[] = []
    let lastValue = ''
    let lastFence = 0n
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const id = `a.lock.${pair}-${round}`
        await a.request(
          {
            op: 'loop',
            id,
            kind: 'lock',
            endpoints: etcd.cluster.endpoints,
            name,
            fenceKey: `${name}-fence`,
            ttl: TTL,
            once: true,
            pg: pgTarget,
          },
          'started',
          30_000,
        )
        const first = await a.next('pgWrite', 30_000, (e) => e.id === id)
        expect(first.applied).toBe(true)

        a.signal('SIGSTOP') // a frozen function: timers, keepalives, everything stops
        const session = await Session.create(etcd.client, { ttl: 10 })
        const mutex = new Mutex(session, name)
        await mutex.lock({ signal: AbortSignal.timeout(30_000) }) // once A's lease has expired
        expect(mutex.fence).toBeGreaterThan(BigInt(first.fence))
        const mine = `b@${mutex.fence}`
        const res = await pg.admin.query(fencedUpsert({ table: 'fenced_rows', key: { id: row }, set: { value: mine }, fence: mutex.fence }))
        fresh.push({ applied: res.rowCount === 1 })
        lastValue = mine
        lastFence = mutex.fence

        // A's next actions on waking are already queued: two writes with its old fence.
        a.send({ op: 'pgWrite', id, pg: pgTarget, value: `late-${round}-1` })
        a.send({ op: 'pgWrite', id, pg: pgTarget, value: `late-${round}-2` })
        a.signal('SIGCONT')
        for (const n of [1, 2]) {
          const w = await a.next('pgWrite', 30_000, (e) => e.value === `late-${round}-${n}`)
          late.push({ applied: w.applied, error: w.error })
        }
        await a.next('release', 30_000, (e) => e.id === id) // A's session tells it the lock is gone
        await mutex.unlock()
        await session.close()
      }
    } finally {
      a.signal('SIGCONT')
      await a.kill()
    }
    return { row, late, fresh, lastValue, lastFence }
  }
})

describe('examples/fencing-*.ts (run against Postgres and etcd)', () => {
  it('Postgres: UPDATE and upsert forms land with a higher fence and refuse a lower one', async () => {
    const id = uniqueName('acct')
    await setBalance(pg.admin, id, 100, 7n) // creates the row
    await updateBalance(pg.admin, id, 120, 9n)
    await expect(updateBalance(pg.admin, id, 1, 8n)).rejects.toBeInstanceOf(FenceRejectedError)
    await expect(setBalance(pg.admin, id, 1, 9n)).rejects.toBeInstanceOf(FenceRejectedError) // equal: refused too
    const row = await pg.admin.query('SELECT balance, fence FROM accounts WHERE id = $1', [id])
    expect(row.rows[0]).toEqual({ balance: '120', fence: '9' })
  })

  it('Postgres: the etcdLock handler carries context.etcd.lock.fence into the write', async () => {
    const saved = { ...process.env }
    Object.assign(process.env, {
      ETCD_ENDPOINTS: etcd.cluster.endpoints.join(','),
      PGHOST: pg.socketDir,
      PGPORT: String(pg.port),
      PGUSER: pg.user,
      PGDATABASE: pg.database,
    })
    try {
      const account = uniqueName('acct')
      const first = (await handler({ account, balance: 5 }, lambdaContext())) as { ok: boolean; fence: string }
      const second = (await handler({ account, balance: 6 }, lambdaContext())) as { ok: boolean; fence: string }
      expect(BigInt(second.fence)).toBeGreaterThan(BigInt(first.fence))
      const row = await pg.admin.query('SELECT balance, fence FROM accounts WHERE id = $1', [account])
      expect(row.rows[0]).toEqual({ balance: '6', fence: second.fence })
    } finally {
      process.env = saved
    }
  })

  it("etcd: the etcdLock handler writes through its grant's fenced(), one fence higher each invocation", async () => {
    const saved = process.env.ETCD_ENDPOINTS
    process.env.ETCD_ENDPOINTS = etcd.cluster.endpoints.join(',')
    try {
      const first = (await fencedHandler({}, lambdaContext())) as { statusCode: number; body: string }
      const second = (await fencedHandler({}, lambdaContext())) as { statusCode: number; body: string }
      expect(first.statusCode).toBe(200)
      expect(BigInt(second.body)).toBeGreaterThan(BigInt(first.body))
      expect(Number.isNaN(Date.parse((await etcd.client.get('reports/nightly/last-run').string()) ?? ''))).toBe(false)
      // Released after each invocation: nothing of the lock is left.
      expect(await etcd.keysUnder('locks/reports/nightly/')).toEqual([])
    } finally {
      if (saved === undefined) delete process.env.ETCD_ENDPOINTS
      else process.env.ETCD_ENDPOINTS = saved
    }
  })

  it('etcd: recordRun writes through the lock-guarded Txn', async () => {
    const job = uniqueName('job')
    const fence = await recordRun(etcd.client, job, 'ok')
    expect(fence).toBeGreaterThan(0n)
    expect(await etcd.client.get(`jobs/${job}/last-run`).string()).toBe('ok')
  })

  it('DynamoDB (document only): the UpdateItem input conditions on the stored fence', () => {
    expect(fencedUpdateItem('accounts', { id: { S: 'alice' } }, { balance: { N: '120' } }, 41n)).toEqual({
      TableName: 'accounts',
      Key: { id: { S: 'alice' } },
      UpdateExpression: 'SET #a0 = :a0, #fence = :fence',
      ConditionExpression: 'attribute_not_exists(#fence) OR #fence < :fence',
      ExpressionAttributeNames: { '#a0': 'balance', '#fence': 'fence' },
      ExpressionAttributeValues: { ':a0': { N: '120' }, ':fence': { N: '41' } },
    })
  })

  it('every line of the README\'s "Fencing downstream" code blocks is in an example file run above', () => {
    const readme = readFileSync(`${root}README.md`, 'utf8')
    const start = readme.indexOf('## Fencing downstream')
    expect(start).toBeGreaterThan(0)
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1))
    const examples = readdirSync(`${root}examples`)
      .filter((f) => f.startsWith('fencing-'))
      .map((f) => readFileSync(`${root}examples/${f}`, 'utf8'))
      .join('\n')
    const blocks = [...section.matchAll(/```(?:ts|sql)\n([\s\S]*?)```/g)].map((m) => m[1])
    expect(blocks.length).toBeGreaterThanOrEqual(3)
    // Imports differ (the README imports the package); everything else is quoted as it runs.
    const lines = blocks
      .flatMap((b) => b.split('\n'))
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('import ') && !l.startsWith('//'))
    expect(lines.filter((l) => !examples.includes(l))).toEqual([])
  })
})
