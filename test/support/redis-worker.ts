/**
 * A child-process holder / consumer for the "what survives" tests (test/survives/), so a test can
 * SIGSTOP or SIGKILL a real process on either side: ours (etcd: Mutex, Queue) and theirs (Redis:
 * redlock, BullMQ). Same protocol as worker.ts (see workers.ts): one JSON command per stdin line,
 * one JSON event per stdout line; the Redis URL comes in REDIS_URL.
 */
import { createInterface } from 'node:readline'
import { Worker as BullWorker } from 'bullmq'
import { Redis } from 'ioredis'
import pg from 'pg'
import Redlock, { type Lock } from 'redlock'
import { createClient, fencedUpsert, Mutex, Queue, Session } from '../../lib/index.js'

const config = JSON.parse(process.argv[2] ?? '{}') as { endpoints: string[] }
const client = createClient({ endpoints: config.endpoints, env: {} })
const say = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(event, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`)

let redis: Redis | undefined
const redisClient = () => (redis ??= new Redis(process.env.REDIS_URL!, { maxRetriesPerRequest: null }))
let mutex: Mutex | undefined
let redlockLock: Lock | undefined
let db: pg.Client | undefined

type PgTarget = { host: string; port: number; user: string; database: string; table: string; row: string }
async function database(target: PgTarget) {
  if (!db) {
    db = new pg.Client({ host: target.host, port: target.port, user: target.user, database: target.database })
    await db.connect()
  }
  return db
}

type Command = Record<string, any> & { op: string }

async function run(cmd: Command) {
  switch (cmd.op) {
    case 'etcdLock': {
      mutex = new Mutex(await Session.create(client, { ttl: cmd.ttl }), cmd.name)
      await mutex.lock()
      return say({ event: 'locked', key: mutex.key, fence: mutex.fence })
    }
    case 'etcdUnlock': {
      await mutex!.unlock()
      return say({ event: 'unlocked' })
    }
    case 'redlock': {
      // retryCount 0: the lock is free when the test asks; auto-extension is only in redlock.using().
      redlockLock = await new Redlock([redisClient()], { retryCount: 0 }).acquire([cmd.resource], cmd.ttlMs)
      return say({ event: 'locked', value: redlockLock.value, fence: (redlockLock as unknown as { fence?: unknown }).fence ?? null })
    }
    case 'pgWrite': {
      // Ours carries the grant's fence, so the store refuses an older one; redlock has no fence to send.
      const target = cmd.pg as PgTarget
      const c = await database(target)
      const res = cmd.fenced
        ? await c.query(fencedUpsert({ table: target.table, key: { id: target.row }, set: { value: cmd.value }, fence: mutex!.fence }))
        : await c.query(
            `INSERT INTO ${target.table} (id, value, fence) VALUES ($1, $2, 0) ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value`,
            [target.row, cmd.value],
          )
      return say({ event: 'pgWrite', applied: res.rowCount === 1, value: cmd.value })
    }
    case 'receive': {
      const queue = new Queue(client, cmd.queue)
      const messages = await queue.receive({ max: 1, visibilityTimeout: cmd.visibilityTimeout })
      // Never acked: the test kills this process mid-job.
      return say({ event: 'received', ids: messages.map((m) => m.id), receiveCount: messages[0]?.receiveCount })
    }
    case 'bullWork': {
      // A job that never finishes: the test SIGKILLs this process while it holds the job's lock.
      new BullWorker(
        cmd.queue,
        async (job) => {
          say({ event: 'job', id: job.id, attemptsStarted: job.attemptsStarted })
          await new Promise(() => {})
        },
        { connection: redisClient(), lockDuration: cmd.lockDuration, stalledInterval: cmd.stalledInterval },
      )
      return say({ event: 'working' })
    }
    default:
      throw new Error(`unknown op ${cmd.op}`)
  }
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as Command
  run(cmd).catch((err: Error) => say({ event: 'error', op: cmd.op, name: err.name, message: err.message }))
})
say({ event: 'ready' })
