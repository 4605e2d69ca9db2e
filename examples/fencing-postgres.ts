// Fencing a PostgreSQL write: the row keeps the fence of the last write that landed, and a write
// lands only with a higher fence. A holder that lost its lock without noticing (frozen, cut off
// from etcd but not from the database) is refused by Postgres itself.
import middy from '@middy/core'
import pg from 'pg'
import { fencedUpsert, requireFenced } from '../lib/index.js'
import { etcdLock } from '../middleware/index.js'

/** The table: the data, plus the fence of the write that last changed the row. */
export const createAccounts = 'CREATE TABLE IF NOT EXISTS accounts (id text PRIMARY KEY, balance bigint NOT NULL, fence bigint NOT NULL)'

/** The row exists: a plain UPDATE that matches no row when a write with a higher fence got there first. */
export async function updateBalance(db: pg.Pool, id: string, balance: number, fence: bigint): Promise<void> {
  const res = await db.query('UPDATE accounts SET balance = $2, fence = $3 WHERE id = $1 AND fence < $3', [id, balance, fence.toString()])
  requireFenced(res.rowCount, fence, `accounts/${id}`) // FenceRejectedError: we lost the lock
}

/** Creates the row too: `fencedUpsert` builds INSERT … ON CONFLICT … WHERE fence < new fence. */
export async function setBalance(db: pg.Pool, id: string, balance: number, fence: bigint): Promise<void> {
  const res = await db.query(fencedUpsert({ table: 'accounts', key: { id }, set: { balance }, fence }))
  requireFenced(res.rowCount, fence, `accounts/${id}`)
}

let pool: pg.Pool | undefined // module scope: reused by warm invocations (PGHOST, PGUSER, … from the environment)

/** A function that sets a balance under a per-account lock, carrying the lock's fence into Postgres. */
export const handler = middy(async (event: { account: string; balance: number }, context: any) => {
  if (!pool) {
    pool = new pg.Pool({ max: 1 })
    pool.on('error', () => {}) // an idle connection dropped (database restart): the pool opens a new one
  }
  await setBalance(pool, event.account, event.balance, context.etcd.lock.fence)
  return { ok: true, fence: String(context.etcd.lock.fence) }
}).use(etcdLock({ name: (event: { account: string }) => `accounts/${event.account}` }))
