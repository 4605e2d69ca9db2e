/**
 * Issue 29: side by side with what users pick instead — Redis-based libraries on one local
 * Redis 7 (its own redis-server, started and stopped here, no persistence), ours on the bench's
 * etcd; same loopback, same client counts. Rows: warm locked invocation (etcdLock vs redlock and
 * redis-semaphore's Mutex, each behind Middy), hot lock 10 x 100 (handoffs/s; redlock polls, so
 * its retry settings and Redis commands per handoff are reported beside our etcd messages),
 * semaphore 10 x 100 with 3 permits, idempotency (duplicate of a completed call, first run) vs
 * Powertools on Redis, and a 4 x 4 queue of 2,000 items vs BullMQ. What each guarantees is in
 * test/survives/ (the "what survives" table).
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import middy from '@middy/core'
import { IdempotencyConfig } from '@aws-lambda-powertools/idempotency'
import { CachePersistenceLayer } from '@aws-lambda-powertools/idempotency/cache'
import { makeHandlerIdempotent } from '@aws-lambda-powertools/idempotency/middleware'
import { createClient as createRedisClient } from '@redis/client'
import { Queue as BullQueue, Worker as BullWorker } from 'bullmq'
import { Redis } from 'ioredis'
import Redlock, { type Settings } from 'redlock'
import { Mutex as RedisMutex, Semaphore as RedisSemaphore } from 'redis-semaphore'
import { Mutex, Queue, Semaphore, Session, type EtcdClient } from '../../lib/index.js'
import { etcdIdempotency, etcdLock } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { startRedis, type RedisServer } from '../../test/support/redis.js'
import { countRpcs, formatRpcs, type RpcCounts } from '../util/rpcs.js'
import { pct, summarize, timeSequential, type Latency } from '../util/stats.js'
import { entry, type BenchContext, type Entry, type Scenario } from '../util/types.js'

/**
 * The "what survives" table for the report: each row is a test in test/survives/ that asserts
 * both outcomes written here, so a change in either side's behaviour fails the test first.
 */
const SURVIVES = [
  '| scenario (test) | ours (etcd) | theirs (Redis) |',
  '|---|---|---|',
  "| a holder frozen (SIGSTOP) past its TTL, another takes the lock, the first resumes and writes to PostgreSQL ([lock.test.ts](../test/survives/lock.test.ts)) | the late write carries the old fence and the store refuses it (0 rows); the new holder's value stays | redlock: a lock has no fencing token, so the store cannot tell the writes apart — the late write lands over the new holder's while the new holder still holds the lock |",
  "| a holder's release after its lock expired and was taken by another ([lock.test.ts](../test/survives/lock.test.ts)) | the unlock deletes only its own key (a key per session); the new holder still owns the lock | redlock: the value check deletes nothing and release() rejects with ExecutionError (no quorum); redis-semaphore: the value check deletes nothing; naive SET NX PX + DEL (the seeds'): deletes the new holder's key, and a third holder gets in |",
  "| a duplicate arriving while the first invocation is still running ([idempotency.test.ts](../test/survives/idempotency.test.ts)) | etcdIdempotency waits for the first invocation's response and returns it; the handler ran once | Powertools idempotency on Redis: IdempotencyAlreadyInProgressError for the duplicate (the client retries); the handler ran once, and a retry after completion gets the stored response |",
  "| a consumer SIGKILLed mid-job ([queue.test.ts](../test/survives/queue.test.ts)) | redelivered to the next receiver once the claim's lease lapses (visibility timeout 2 s), receive count 2, acked once, queue empty | BullMQ: redelivered by a live worker's stalled-job checker once the job lock lapses (lockDuration 2 s, stalledInterval 1 s): one stalled event, attemptsStarted 2, completed once |",
  "| the store restarted ([restart.test.ts](../test/survives/restart.test.ts)) | the raft leader of 3 members SIGKILLed and restarted: the lock still held (another session refused), the queue's 3 messages and the key kept | Redis without AOF (--save '' --appendonly no) SIGKILLed and restarted: the redlock key, the 3 BullMQ jobs and the key gone, a second holder gets the lock; with AOF (everysec) a process kill keeps them all (a machine crash can lose up to 1 s: not tested) |",
]

const WORKERS = 10
const PERMITS = 3
const QUEUE_SIDES = 4
const BATCH = 16
/** redlock's hot-lock settings: retryCount -1 (unlimited; its default 10 makes most of 10 contenders fail). */
const REDLOCK_TUNED: Partial<Settings> = { retryCount: -1, retryDelay: 10, retryJitter: 10 }
const REDLOCK_DEFAULT_DELAYS: Partial<Settings> = { retryCount: -1, retryDelay: 200, retryJitter: 200 }

/** Calls per command from `INFO commandstats` (commands run inside Lua scripts are counted too). */
async function commandStats(admin: Redis): Promise<Record<string, number>> {
  const text = await admin.info('commandstats')
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2])
  return out
}

function commandsPerOp(
  before: Record<string, number>,
  after: Record<string, number>,
  ops: number,
): { total: number; perCommand: RpcCounts } {
  const perCommand: RpcCounts = {}
  let total = 0
  for (const [k, v] of Object.entries(after)) {
    if (k === 'info') continue // our own INFO calls
    const d = v - (before[k] ?? 0)
    if (d <= 0) continue
    total += d
    perCommand[k] = Number((d / ops).toFixed(2))
  }
  return { total: Number((total / ops).toFixed(2)), perCommand }
}

function version(pkg: string): string {
  const require = createRequire(import.meta.url)
  try {
    return JSON.parse(readFileSync(require.resolve(`${pkg}/package.json`), 'utf8')).version
  } catch {
    // packages whose "exports" hide package.json: walk from the entry point
    let dir = require.resolve(pkg)
    for (let i = 0; i < 6; i++) {
      dir = dir.slice(0, dir.lastIndexOf('/'))
      try {
        const p = JSON.parse(readFileSync(`${dir}/package.json`, 'utf8'))
        if (p.name === pkg) return p.version
      } catch {}
    }
    return 'unknown'
  }
}

/** etcd's own WAL fsync counters (`etcd_disk_wal_fsync_duration_seconds` sum and count) from /metrics. */
async function walFsyncs(endpoint: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`${endpoint}/metrics`)).text()
  const num = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN)
  return { sum: num('etcd_disk_wal_fsync_duration_seconds_sum'), count: num('etcd_disk_wal_fsync_duration_seconds_count') }
}

interface Timed {
  latency: Latency
  cpuMs: number
}

async function timedRun(n: number, op: () => Promise<unknown>): Promise<Timed> {
  for (let i = 0; i < 50; i++) await op()
  const cpu0 = process.cpuUsage()
  const samples = await timeSequential(n, op, 0)
  const cpu = process.cpuUsage(cpu0)
  return { latency: summarize(samples), cpuMs: (cpu.user + cpu.system) / 1000 / n }
}

/** `workers` loops of take → give, `n` each, each worker on its own connection; at most `most` may hold at once. */
async function loops(
  workers: number,
  n: number,
  most: number,
  open: (w: number) => Promise<{ take(): Promise<void>; give(): Promise<void> }>,
) {
  const lockers = await Promise.all(Array.from({ length: workers }, (_, w) => open(w)))
  let holding = 0
  let seen = 0
  const t0 = performance.now()
  await Promise.all(
    lockers.map(async (l) => {
      for (let i = 0; i < n; i++) {
        await l.take()
        seen = Math.max(seen, ++holding)
        holding--
        await l.give()
      }
    }),
  )
  const seconds = (performance.now() - t0) / 1000
  if (seen > most) throw new Error(`${most} may hold at once but ${seen} did`)
  return { perSecond: (workers * n) / seconds, seconds }
}

export const redis: Scenario = {
  name: 'redis',
  async run(ctx) {
    const server = await startRedis()
    const conns: Redis[] = []
    const conn = () => {
      const c = new Redis(server.url, { maxRetriesPerRequest: null })
      conns.push(c)
      return c
    }
    try {
      return await measure(ctx, server, conn)
    } finally {
      for (const c of conns) c.disconnect()
      await server.stop()
    }
  },
}

async function measure(ctx: BenchContext, server: RedisServer, conn: () => Redis) {
  const ep = ctx.endpoints[0]
  const admin = conn()
  const versions = {
    redis: server.version,
    redlock: version('redlock'),
    'redis-semaphore': version('redis-semaphore'),
    ioredis: version('ioredis'),
    bullmq: version('bullmq'),
    '@aws-lambda-powertools/idempotency': version('@aws-lambda-powertools/idempotency'),
    '@redis/client': version('@redis/client'),
  }
  const entries: Entry[] = []
  const notes: string[] = []
  const f = (l: Latency) => `p50 ${l.p50.toFixed(3)} / p99 ${l.p99.toFixed(3)} ms`

  // --- the price of consensus, per request: one etcd put (raft append + WAL fsync) vs one Redis SET (memory).
  const n0 = Math.max(200, Math.round(2000 * ctx.scale))
  const putKey = ctx.prefix('redis-put')
  const fs0 = await walFsyncs(ep)
  const put = await timedRun(n0, async () => {
    await ctx.client.put(putKey).value('v')
  })
  const fs1 = await walFsyncs(ep)
  const set = await timedRun(n0, () => admin.set(`${putKey}-set`, 'v'))
  const fsyncs = fs1.count - fs0.count
  const fsyncMs = fsyncs > 0 ? ((fs1.sum - fs0.sum) * 1000) / fsyncs : null
  const price = 'redis: one write, sequential (the price of consensus)'
  entries.push(
    entry(price, 'p50 ms', put.latency.p50, 'one Redis SET', set.latency.p50, { kind: 'none' }),
    entry(
      price,
      'etcd WAL fsync mean ms',
      fsyncMs,
      'Redis (no fsync)',
      null,
      { kind: 'none' },
      'Redis answers from memory: there is no fsync to compare',
    ),
  )
  notes.push(
    `One write, ${n0} sequential after 50 untimed: an etcd put ${f(put.latency)} (etcd's own metrics over the run: ${fsyncs} WAL fsyncs for ${n0 + 50} puts, mean ${fsyncMs === null ? 'n/a' : fsyncMs.toFixed(3)} ms each); a Redis SET ${f(set.latency)}. ` +
      'Every write row below pays that difference at least once per write it makes.',
  )

  // --- warm locked invocation: acquire + no-op handler + release, behind Middy, sequentially.
  const n = Math.max(200, Math.round(2000 * ctx.scale))
  const lockName = ctx.prefix('redis-inv')
  const oursFn = middy(async () => 'ok').use(etcdLock({ name: lockName, client: ctx.client }))
  const oursInv = await countRpcs(ep, n + 50, () => timedRun(n, () => oursFn({}, lambdaContext())))
  const redlock = new Redlock([conn()], { retryCount: 0 })
  const redlockFn = middy(async () => 'ok').use({
    before: async (request) => {
      ;(request.internal as Record<string, unknown>).lock = await redlock.acquire([`${lockName}-redlock`], 10_000)
    },
    after: async (request) => {
      await ((request.internal as Record<string, unknown>).lock as { release(): Promise<unknown> }).release()
    },
  })
  const rlInv = await timedRun(n, () => redlockFn({}, lambdaContext()))
  const rsConn = conn()
  const rsFn = middy(async () => 'ok').use({
    before: async (request) => {
      const m = new RedisMutex(rsConn, `${lockName}-rsem`, { lockTimeout: 10_000, refreshInterval: 0 })
      await m.acquire()
      ;(request.internal as Record<string, unknown>).mutex = m
    },
    after: async (request) => {
      await ((request.internal as Record<string, unknown>).mutex as RedisMutex).release()
    },
  })
  const rsInv = await timedRun(n, () => rsFn({}, lambdaContext()))
  const inv = 'redis: warm locked invocation (acquire + no-op + release, Middy)'
  entries.push(
    entry(inv, 'p50 ms', oursInv.result.latency.p50, 'redlock', rlInv.latency.p50, { kind: 'max-ratio', ratio: 1.5 }),
    entry(inv, 'p99 ms', oursInv.result.latency.p99, 'redlock', rlInv.latency.p99, { kind: 'none' }),
    entry(inv, 'CPU ms per invocation', oursInv.result.cpuMs, 'redlock', rlInv.cpuMs, { kind: 'none' }),
    entry(inv, 'p50 ms', oursInv.result.latency.p50, 'redis-semaphore Mutex', rsInv.latency.p50, { kind: 'none' }),
    entry(inv, 'p99 ms', oursInv.result.latency.p99, 'redis-semaphore Mutex', rsInv.latency.p99, { kind: 'none' }),
    entry(inv, 'CPU ms per invocation', oursInv.result.cpuMs, 'redis-semaphore Mutex', rsInv.cpuMs, { kind: 'none' }),
  )
  notes.push(
    `Warm locked invocation, ${n} sequential invocations each after 50 untimed: etcdLock ${f(oursInv.result.latency)}, Node CPU ${oursInv.result.cpuMs.toFixed(3)} ms (etcd requests per invocation: ${formatRpcs(oursInv.perOp)}); ` +
      `redlock acquire/release in a Middy middleware ${f(rlInv.latency)}, CPU ${rlInv.cpuMs.toFixed(3)} ms; redis-semaphore Mutex (refresh off) ${f(rsInv.latency)}, CPU ${rsInv.cpuMs.toFixed(3)} ms.`,
  )

  // --- hot lock: 10 workers x 100 re-locks at once, each worker on its own connection.
  const hn = Math.max(20, Math.round(100 * Math.min(1, ctx.scale * 2)))
  const hotName = ctx.prefix('redis-hot')
  const clients: EtcdClient[] = Array.from({ length: WORKERS }, () => ctx.newClient())
  const sessions: Session[] = []
  const oursHot = await countRpcs(ep, WORKERS * hn, () =>
    loops(WORKERS, hn, 1, async (w) => {
      const s = await Session.create(clients[w], { ttl: 10 })
      sessions.push(s)
      let m: Mutex | undefined
      return {
        take: async () => {
          m = new Mutex(s, hotName)
          await m.lock()
        },
        give: async () => m!.unlock(),
      }
    }),
  )
  for (const s of sessions.splice(0)) await s.close()
  const redlockHot = async (settings: Partial<Settings>, per: number, label: string) => {
    const before = await commandStats(admin)
    const r = await loops(WORKERS, per, 1, async () => {
      const rl = new Redlock([conn()], settings)
      let held: Awaited<ReturnType<Redlock['acquire']>> | undefined
      return {
        take: async () => void (held = await rl.acquire([`${hotName}-${label}`], 10_000)),
        give: async () => void (await held!.release()),
      }
    })
    return { ...r, commands: commandsPerOp(before, await commandStats(admin), WORKERS * per) }
  }
  const rlTuned = await redlockHot(REDLOCK_TUNED, hn, 'tuned')
  const dn = Math.max(5, Math.round(hn / 10))
  const rlDefault = await redlockHot(REDLOCK_DEFAULT_DELAYS, dn, 'default')
  // Contended 100 x 1: 100 one-shot contenders (a burst of functions), each takes the lock once;
  // ours creates its Session inside the timed region (as a one-shot function does). The 100 share
  // the same WORKERS connections on each side.
  const cName = ctx.prefix('redis-contended')
  const CONTENDERS = 100
  const redlockPool = Array.from({ length: WORKERS }, () => new Redlock([conn()], REDLOCK_TUNED))
  const oursContended = await loops(CONTENDERS, 1, 1, async (w) => {
    let s: Session | undefined
    let m: Mutex | undefined
    return {
      take: async () => {
        s = await Session.create(clients[w % WORKERS], { ttl: 10 })
        m = new Mutex(s, cName)
        await m.lock()
      },
      give: async () => {
        await m!.unlock()
        await s!.close()
      },
    }
  })
  const rlContended = await loops(CONTENDERS, 1, 1, async (w) => {
    let held: Awaited<ReturnType<Redlock['acquire']>> | undefined
    return {
      take: async () => void (held = await redlockPool[w % WORKERS].acquire([`${cName}-redlock`], 10_000)),
      give: async () => void (await held!.release()),
    }
  })
  entries.push(
    entry(
      `redis: contended ${CONTENDERS} x 1`,
      'handoffs/s',
      oursContended.perSecond,
      'redlock (retryDelay 10, jitter 10)',
      rlContended.perSecond,
      {
        kind: 'none',
      },
    ),
  )
  notes.push(
    `Contended ${CONTENDERS} x 1 (a burst of one-shot functions on ${WORKERS} connections per side; ours creates and closes a Session per contender inside the timed region): ours ${oursContended.perSecond.toFixed(0)} locks/s, redlock (retryCount -1, retryDelay 10, jitter 10) ${rlContended.perSecond.toFixed(0)} locks/s.`,
  )
  const rsBefore = await commandStats(admin)
  const rsHot = await loops(WORKERS, hn, 1, async () => {
    const c = conn()
    let m: RedisMutex | undefined
    return {
      take: async () => {
        m = new RedisMutex(c, `${hotName}-rsem`, { lockTimeout: 10_000, acquireTimeout: 120_000, refreshInterval: 0 })
        await m.acquire()
      },
      give: async () => m!.release(),
    }
  })
  const rsCommands = commandsPerOp(rsBefore, await commandStats(admin), WORKERS * hn)
  const hot = `redis: hot lock ${WORKERS} x ${hn}`
  entries.push(
    entry(hot, 'handoffs/s', oursHot.result.perSecond, 'redlock (retryDelay 10, jitter 10)', rlTuned.perSecond, {
      kind: 'min-ratio',
      ratio: 1,
    }),
    entry(
      `redis: hot lock ${WORKERS} x ${dn}`,
      'handoffs/s',
      oursHot.result.perSecond,
      'redlock (retryDelay 200, jitter 200: its defaults)',
      rlDefault.perSecond,
      {
        kind: 'none',
      },
    ),
    entry(hot, 'handoffs/s', oursHot.result.perSecond, 'redis-semaphore Mutex (retryInterval 10)', rsHot.perSecond, { kind: 'none' }),
  )
  const ourMsgs = Object.values(oursHot.perOp).reduce((a, b) => a + b, 0)
  entries.push(
    entry(
      `${hot}: requests per handoff`,
      'requests',
      Number(ourMsgs.toFixed(2)),
      'redlock Redis commands (retryDelay 10)',
      rlTuned.commands.total,
      {
        kind: 'none',
      },
    ),
  )
  notes.push(
    `Hot lock, ${WORKERS} workers each on its own connection re-locking at once: ours (Mutex on a Session per worker) ${oursHot.result.perSecond.toFixed(0)} handoffs/s, etcd messages per handoff ${formatRpcs(oursHot.perOp)} (waiters watch their predecessor's key: no polling). ` +
      `redlock ${versions.redlock} polls: with retryCount -1 (its default 10 fails most of ${WORKERS} contenders), retryDelay 10 ms, retryJitter 10 ms: ${rlTuned.perSecond.toFixed(0)} handoffs/s, Redis commands per handoff ${rlTuned.commands.total} (${formatRpcs(rlTuned.commands.perCommand)}; INFO commandstats before/after, which also counts the SET/DEL run inside its Lua scripts); ` +
      `with its default retryDelay 200 ms / retryJitter 200 ms (${WORKERS} x ${dn}): ${rlDefault.perSecond.toFixed(1)} handoffs/s, ${rlDefault.commands.total} commands per handoff. ` +
      `redis-semaphore Mutex (polls every 10 ms): ${rsHot.perSecond.toFixed(0)} handoffs/s, ${rsCommands.total} commands per handoff (${formatRpcs(rsCommands.perCommand)}).`,
  )

  // --- semaphore: 10 workers x 100 acquire/release, 3 permits.
  const semName = ctx.prefix('redis-sem')
  const oursSem = await countRpcs(ep, WORKERS * hn, () =>
    loops(WORKERS, hn, PERMITS, async (w) => {
      const s = await Session.create(clients[w], { ttl: 10 })
      sessions.push(s)
      let sem: Semaphore | undefined
      return {
        take: async () => {
          sem = new Semaphore(s, semName, PERMITS)
          await sem.acquire()
        },
        give: async () => sem!.release(),
      }
    }),
  )
  for (const s of sessions.splice(0)) await s.close()
  const semBefore = await commandStats(admin)
  const rsSem = await loops(WORKERS, hn, PERMITS, async () => {
    const c = conn()
    let sem: RedisSemaphore | undefined
    return {
      take: async () => {
        sem = new RedisSemaphore(c, `${semName}-rsem`, PERMITS, { lockTimeout: 10_000, acquireTimeout: 120_000, refreshInterval: 0 })
        await sem.acquire()
      },
      give: async () => sem!.release(),
    }
  })
  const semCommands = commandsPerOp(semBefore, await commandStats(admin), WORKERS * hn)
  entries.push(
    entry(
      `redis: semaphore ${WORKERS} x ${hn}, permits ${PERMITS}`,
      'acquire/release per s',
      oursSem.result.perSecond,
      'redis-semaphore Semaphore',
      rsSem.perSecond,
      {
        kind: 'none',
      },
    ),
  )
  notes.push(
    `Semaphore, ${WORKERS} workers x ${hn}, permits ${PERMITS}: ours ${oursSem.result.perSecond.toFixed(0)}/s (etcd messages per acquire/release ${formatRpcs(oursSem.perOp)}); redis-semaphore ${versions['redis-semaphore']} Semaphore (a sorted set, polled every 10 ms) ${rsSem.perSecond.toFixed(0)}/s (${semCommands.total} Redis commands per acquire/release).`,
  )

  // --- idempotency: duplicate of a completed invocation, first run of a key; Middy both sides.
  const idemPrefix = ctx.prefix('redis-idem')
  const oursIdem = middy(async (event: { id: string }) => ({ statusCode: 200, body: JSON.stringify({ order: event.id }) })).use(
    etcdIdempotency<{ id: string }>({ key: (e) => e.id, prefix: idemPrefix, client: ctx.client }),
  )
  let oursDupP50 = Number.NaN
  let ptDupP50 = Number.NaN
  const rc = createRedisClient({ url: server.url })
  await rc.connect()
  try {
    const ptIdem = middy(async (event: { id: string }) => ({ statusCode: 200, body: JSON.stringify({ order: event.id }) })).use(
      makeHandlerIdempotent({
        persistenceStore: new CachePersistenceLayer({ client: rc }),
        config: new IdempotencyConfig({ eventKeyJmesPath: 'id' }),
      }),
    )
    await oursIdem({ id: 'dup' }, lambdaContext())
    await ptIdem({ id: 'dup' }, lambdaContext())
    const oursDup = await countRpcs(ep, n + 50, () => timedRun(n, () => oursIdem({ id: 'dup' }, lambdaContext())))
    const ptDup = await timedRun(n, () => ptIdem({ id: 'dup' }, lambdaContext()))
    oursDupP50 = oursDup.result.latency.p50
    ptDupP50 = ptDup.latency.p50
    let k = 0
    const oursFirst = await countRpcs(ep, n + 50, () => timedRun(n, () => oursIdem({ id: `new-${k++}` }, lambdaContext())))
    const ptFirst = await timedRun(n, () => ptIdem({ id: `new-${k++}` }, lambdaContext()))
    const dup = 'redis: idempotency duplicate of a completed invocation'
    const first = 'redis: idempotency first run of a key'
    entries.push(
      entry(dup, 'p50 ms', oursDup.result.latency.p50, 'Powertools idempotency on Redis', ptDup.latency.p50, {
        kind: 'max-ratio',
        ratio: 1,
      }),
      entry(dup, 'p99 ms', oursDup.result.latency.p99, 'Powertools idempotency on Redis', ptDup.latency.p99, { kind: 'none' }),
      entry(first, 'p50 ms', oursFirst.result.latency.p50, 'Powertools idempotency on Redis', ptFirst.latency.p50, { kind: 'none' }),
      entry(first, 'p99 ms', oursFirst.result.latency.p99, 'Powertools idempotency on Redis', ptFirst.latency.p99, { kind: 'none' }),
    )
    notes.push(
      `Idempotency, ${n} sequential warm invocations each, both as Middy middlewares: duplicate of a completed call — etcdIdempotency ${f(oursDup.result.latency)} (${formatRpcs(oursDup.perOp)} per invocation), ` +
        `Powertools ${versions['@aws-lambda-powertools/idempotency']} makeHandlerIdempotent + CachePersistenceLayer on @redis/client ${versions['@redis/client']} ${f(ptDup.latency)}; ` +
        `first run of a key — ours ${f(oursFirst.result.latency)} (${formatRpcs(oursFirst.perOp)}), Powertools ${f(ptFirst.latency)}.`,
    )
  } finally {
    await rc.quit().catch(() => {})
  }

  // --- queue: 4 producers / 4 consumers, 2,000 items; enqueue → processed latency.
  const total = Math.max(400, Math.round(2000 * ctx.scale))
  const oursQ = await countRpcs(ep, total, () => oursQueue(ctx, total))
  const bullQ = await bullQueue(ctx, conn, total)
  const q = `redis: queue ${QUEUE_SIDES} producers / ${QUEUE_SIDES} consumers, ${total} items`
  entries.push(
    entry(q, 'items/s', oursQ.result.perSecond, 'BullMQ', bullQ.perSecond, { kind: 'none' }),
    entry(q, 'enqueue → processed p50 ms', oursQ.result.latency.p50, 'BullMQ', bullQ.latency.p50, { kind: 'none' }),
    entry(q, 'enqueue → processed p99 ms', oursQ.result.latency.p99, 'BullMQ', bullQ.latency.p99, { kind: 'none' }),
  )
  notes.push(
    `Queue, ${QUEUE_SIDES} producers and ${QUEUE_SIDES} consumers each on its own connection, ${total} items: ours receive({ max: ${BATCH} }) + ackMany, ${oursQ.result.perSecond.toFixed(0)} items/s, enqueue → processed ${f(oursQ.result.latency)}, etcd messages per item ${formatRpcs(oursQ.perOp)}; ` +
      `BullMQ ${versions.bullmq} (Queue.add, Worker concurrency ${BATCH}, removeOnComplete) ${bullQ.perSecond.toFixed(0)} items/s, ${f(bullQ.latency)}. ` +
      'Where the difference goes: every enqueue, claim and ack of ours is a raft commit (an fsync on the leader, and on a quorum in a cluster) before it is answered; a BullMQ job moves between Redis lists and hashes in memory, in Lua scripts, and a Worker blocks on a list for the next job.',
  )
  const missed = entries
    .filter((e) => e.met === false)
    .map((e) => `${e.name.replace(/^redis: /, '')} vs ${e.peer} ${e.ratio}x, target ${e.target}`)
  notes.push(
    `Method: one machine, one loopback; ours against the bench's single etcd member (${ctx.endpoints.length} endpoint), theirs against one redis-server ${versions.redis} started by this scenario with --save '' --appendonly no (no persistence), ioredis ${versions.ioredis}. ` +
      `Versions: redlock ${versions.redlock}, redis-semaphore ${versions['redis-semaphore']}, bullmq ${versions.bullmq}, @aws-lambda-powertools/idempotency ${versions['@aws-lambda-powertools/idempotency']}, @redis/client ${versions['@redis/client']}. ` +
      'What each keeps after a freeze, a late release, an in-progress duplicate, a killed consumer and a store restart is the "what survives" table, each row a test in test/survives/.',
    `The price of consensus: every write here (a lock key, a claim, an idempotency record, a queue item) is answered by etcd only after the raft leader has appended it to its WAL and fsynced it — in a cluster, after a majority of members have done the same — and applied it. ` +
      `Here that made one etcd put ${(put.latency.p50 / set.latency.p50).toFixed(0)}x a Redis SET at p50 (${put.latency.p50.toFixed(3)} vs ${set.latency.p50.toFixed(3)} ms; the fsync alone ${fsyncMs === null ? 'n/a' : fsyncMs.toFixed(3)} ms on this disk), and Redis answers from memory (no persistence as run here; with AOF everysec it still answers before any fsync). ` +
      `So Redis is faster on the rows that are a few writes with nothing to wait for — the warm locked invocation (${(oursInv.result.latency.p50 / rlInv.latency.p50).toFixed(1)}x redlock at p50), the idempotency duplicate (${(oursDupP50 / ptDupP50).toFixed(1)}x Powertools) and the queue (${(bullQ.perSecond / oursQ.result.perSecond).toFixed(1)}x our items/s for BullMQ) — ${missed.length ? `and targets missed in this run (${missed.join('; ')}) are that flush, which no client-side change removes. ` : 'and yet every target of this scenario was met in this run. '}` +
      `On the hot lock a waiter of ours learns of its turn from a watch instead of polling: ${ourMsgs.toFixed(2)} etcd requests per handoff against redlock's ${rlTuned.commands.total} Redis commands at a 10 ms retry delay, ${oursHot.result.perSecond < rlTuned.perSecond ? `yet a poll of a memory store is still cheaper than a raft commit per handoff (${oursHot.result.perSecond.toFixed(0)} vs ${rlTuned.perSecond.toFixed(0)} handoffs/s)` : `and ours hands off faster (${oursHot.result.perSecond.toFixed(0)} vs ${rlTuned.perSecond.toFixed(0)} handoffs/s)`}; against redlock's default 200 ms retry delay: ${rlDefault.perSecond.toFixed(0)} handoffs/s. ` +
      'What the price buys is the "what survives" table below: an acknowledged write survives the loss of a member, a fence refuses a frozen holder\'s late write, a duplicate waits for the result instead of failing.',
  )
  return {
    entries,
    notes,
    details: {
      survives: SURVIVES,
      versions,
      oursHot: oursHot.perOp,
      redlockTuned: rlTuned,
      redlockDefault: rlDefault,
      redisSemaphoreHot: rsHot,
      rsCommands,
    },
  }
}

async function oursQueue(ctx: BenchContext, total: number) {
  const name = ctx.prefix('redis-queue')
  const clients = Array.from({ length: 2 * QUEUE_SIDES }, () => ctx.newClient())
  const per = Math.ceil(total / QUEUE_SIDES)
  const sentAt = new Map<string, number>()
  const latency: number[] = []
  const seen = new Set<string>()
  const done = new AbortController()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await Promise.all([
    ...Array.from({ length: QUEUE_SIDES }, async (_, w) => {
      const q = new Queue(clients[w], name)
      for (let i = 0; i < per && w * per + i < total; i++) {
        const value = `${w}-${i}`
        sentAt.set(value, performance.now())
        await q.enqueue(value)
      }
    }),
    ...Array.from({ length: QUEUE_SIDES }, async (_, w) => {
      const q = new Queue(clients[QUEUE_SIDES + w], name)
      while (!done.signal.aborted) {
        let batch
        try {
          batch = await q.receive({ max: BATCH, signal: done.signal })
        } catch (err) {
          if (done.signal.aborted) return
          throw err
        }
        const lost = (await q.ackMany(batch)).filter((e) => e !== undefined)
        if (lost.length) throw new Error(`ackMany lost ${lost.length} claims`)
        const now = performance.now()
        for (const m of batch) {
          if (!seen.has(m.value)) latency.push(now - sentAt.get(m.value)!)
          seen.add(m.value)
        }
        if (seen.size >= total) done.abort(new Error('all items received'))
      }
    }),
  ])
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  if (seen.size !== total) throw new Error(`ours: ${seen.size} of ${total} items`)
  return { perSecond: total / seconds, latency: summarize(latency), cpuShare: (cpu.user + cpu.system) / 1e6 / seconds }
}

async function bullQueue(ctx: BenchContext, conn: () => Redis, total: number) {
  const name = ctx.prefix('redis-bull').replace(/[^\w-]/g, '_')
  const per = Math.ceil(total / QUEUE_SIDES)
  const latency: number[] = []
  const seen = new Set<string>()
  let resolveAll!: () => void
  const all = new Promise<void>((r) => (resolveAll = r))
  const workers = Array.from(
    { length: QUEUE_SIDES },
    () =>
      new BullWorker(
        name,
        async (job) => {
          const v = job.data as { v: string; at: number }
          if (!seen.has(v.v)) latency.push(performance.now() - v.at)
          seen.add(v.v)
          if (seen.size >= total) resolveAll()
        },
        { connection: conn(), concurrency: BATCH, autorun: false },
      ),
  )
  const producers = Array.from({ length: QUEUE_SIDES }, () => new BullQueue(name, { connection: conn() }))
  await Promise.all(workers.map((w) => w.waitUntilReady()))
  for (const w of workers) void w.run()
  const t0 = performance.now()
  await Promise.all(
    producers.map(async (p, w) => {
      for (let i = 0; i < per && w * per + i < total; i++)
        await p.add('item', { v: `${w}-${i}`, at: performance.now() }, { removeOnComplete: true, removeOnFail: true })
    }),
  )
  await all
  const seconds = (performance.now() - t0) / 1000
  await Promise.all([...workers.map((w) => w.close()), ...producers.map((p) => p.close())])
  ctx.log(`  BullMQ: ${seen.size} of ${total} items in ${seconds.toFixed(2)} s`)
  return { perSecond: total / seconds, latency: summarize(latency), p99: pct(latency, 0.99) }
}
