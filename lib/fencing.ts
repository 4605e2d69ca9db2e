import type { ComparatorBuilder } from 'etcd3'
import { FenceRejectedError, InvalidArgumentError } from './errors.js'
import type { Compare } from './core/kv.js'

/**
 * Carrying a lock's fencing token into a downstream store. etcd can only refuse a stale
 * holder's writes to etcd (`Mutex.fenced()`); a database must refuse them itself, by storing
 * the fence of the last write beside the data and accepting a write only with a higher fence.
 * Nothing here talks to a database: {@link fencedUpsert} builds the statement, any driver runs it.
 */

/**
 * The grant contract: what every exclusive grant of the library offers its holder, under the
 * same names — a Mutex, an RWMutex, a Semaphore, an IdempotencyClaim and an Election (and the
 * middlewares' `context.etcd` grants). Code that fences its writes takes a `Grant` and works
 * with any of them. (A RateAdmission is no exclusive grant: it has `keys`, `fence`, `fenced()`.)
 */
export interface Grant {
  /**
   * What is held: the etcd key whose create revision is the fence ('' when the object holds
   * nothing) — except on an IdempotencyClaim, whose `key` is the idempotency key the caller gave
   * (its record's etcd key is `recordKey`).
   */
  readonly key: string
  /**
   * The fencing token: the key's create revision, strictly increasing across successive holders.
   * Pass it to downstream stores ({@link fencedUpsert}). Throws when nothing is held.
   */
  readonly fence: bigint
  /** A compare that holds while this grant is current: put it in your own Txns (a compare for etcd, not a boolean). */
  ownerCompare(): Compare
  /** An etcd3 transaction builder guarded by this grant: `await grant.fenced().then(client.put('k').value('v')).commit()`. */
  fenced(): ComparatorBuilder
  /**
   * Aborted once the grant cannot be trusted: its lease is lost (or past its certain bound), or
   * nothing is held. Read it where it matters, before each write: reading checks the bound.
   */
  readonly signal: AbortSignal
}

/**
 * @internal A grant's {@link Grant.signal}: its lease's signal while `holder` gives the held
 * key, else a signal already aborted with the error `holder` threw (nothing is held: stop).
 */
export function heldSignal(holder: () => { session: { signal: AbortSignal } }): AbortSignal {
  try {
    return holder().session.signal
  } catch (err) {
    return AbortSignal.abort(err)
  }
}

/** What {@link fencedUpsert} needs: the row's key column, the columns to set, the fence. */
export interface FencedUpsertSpec {
  /** The table, `name` or `schema.name` (plain identifiers). */
  table: string
  /** The primary-key (or unique) column and the row's value, e.g. `{ id: 'alice' }`. */
  key: Record<string, unknown>
  /** Columns to write and their values, e.g. `{ balance: 120 }`. */
  set: Record<string, unknown>
  /** The grant's fencing token (`mutex.fence`, `context.etcd.lock.fence`, a leader's `rev`). */
  fence: bigint
  /** The column holding the fence of the last accepted write (default `fence`; SQL type `bigint`). */
  fenceColumn?: string
}

/** A parameterised statement in the `{ text, values }` shape `pg` (and most drivers) take. */
export interface SqlStatement {
  text: string
  values: unknown[]
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/

function quote(name: string, what: string): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
    throw new InvalidArgumentError(`fencedUpsert: ${what} must be a plain SQL identifier (letters, digits, _), got ${JSON.stringify(name)}`)
  }
  return `"${name}"`
}

/**
 * A PostgreSQL upsert (also fine for databases with its `ON CONFLICT … DO UPDATE … WHERE`, such
 * as CockroachDB) that lands only if the row is new or its stored fence is lower than `fence`:
 *
 *   INSERT INTO "t" AS cur ("id", "balance", "fence") VALUES ($1, $2, $3)
 *   ON CONFLICT ("id") DO UPDATE SET "balance" = EXCLUDED."balance", "fence" = EXCLUDED."fence"
 *   WHERE cur."fence" < EXCLUDED."fence"
 *
 * The statement affects 1 row when it applied and 0 when a write with an equal or higher fence
 * is already there: then this holder has lost the lock (a later holder wrote) and must stop.
 * The fence is passed as a decimal string, which a `bigint` column takes exactly.
 */
export function fencedUpsert(spec: FencedUpsertSpec): SqlStatement {
  const { table, key, keyColumn, setColumns, fence, fenceColumn } = checkSpec(spec)
  const fenceSql = quote(fenceColumn, 'fenceColumn')
  const keySql = quote(keyColumn, 'key column')
  const setSql = setColumns.map((c) => quote(c, 'set column'))
  const columns = [keySql, ...setSql, fenceSql]
  const placeholders = columns.map((_, i) => `$${i + 1}`)
  const updates = [...setSql, fenceSql].map((c) => `${c} = EXCLUDED.${c}`)
  return {
    text:
      `INSERT INTO ${table
        .split('.')
        .map((part) => quote(part, 'table'))
        .join('.')} AS cur (${columns.join(', ')}) VALUES (${placeholders.join(', ')}) ` +
      `ON CONFLICT (${keySql}) DO UPDATE SET ${updates.join(', ')} WHERE cur.${fenceSql} < EXCLUDED.${fenceSql}`,
    values: [key[keyColumn], ...setColumns.map((c) => spec.set[c]), fence.toString()],
  }
}

/** The spec's parts, or an {@link InvalidArgumentError} naming what is wrong. */
function checkSpec(spec: FencedUpsertSpec) {
  if (spec === null || typeof spec !== 'object') throw new InvalidArgumentError('fencedUpsert: pass { table, key, set, fence }')
  const { table, key, set, fence, fenceColumn = 'fence' } = spec
  if (typeof table !== 'string')
    throw new InvalidArgumentError(`fencedUpsert: table must be a table name such as "accounts" or "app.accounts", got ${typeof table}`)
  if (typeof fence !== 'bigint' || fence <= 0n) {
    throw new InvalidArgumentError(
      `fencedUpsert: fence must be a grant's fencing token (a positive bigint such as mutex.fence), got ${String(fence)}`,
    )
  }
  const keyColumns = key && typeof key === 'object' ? Object.keys(key) : []
  if (keyColumns.length !== 1)
    throw new InvalidArgumentError(
      `fencedUpsert: key must name exactly one column, e.g. { id: 'alice' }; got ${JSON.stringify(keyColumns)}`,
    )
  const setColumns = set && typeof set === 'object' ? Object.keys(set) : []
  if (setColumns.length === 0)
    throw new InvalidArgumentError('fencedUpsert: set must name at least one column to write, e.g. { balance: 120 }')
  if (setColumns.includes(fenceColumn) || setColumns.includes(keyColumns[0])) {
    throw new InvalidArgumentError(
      `fencedUpsert: set must not contain the key column or the fence column (${keyColumns[0]}, ${fenceColumn}); they are written for you`,
    )
  }
  return { table, key, keyColumn: keyColumns[0], setColumns, fence, fenceColumn }
}

/**
 * Throws {@link FenceRejectedError} unless a fenced write applied. `applied` is what the driver
 * reports: a row count (`pg`'s `rowCount`), or a boolean (e.g. false for DynamoDB's
 * `ConditionalCheckFailedException`). `what` names the row in the message.
 */
export function requireFenced(applied: number | boolean | null | undefined, fence: bigint, what: string): void {
  if (applied === true || (typeof applied === 'number' && applied > 0)) return
  throw new FenceRejectedError(
    fence,
    `${what}: the write fenced with ${fence} was refused because a write with an equal or higher fence is already there; ` +
      'this holder lost its lock (a later holder wrote). Stop the work; do not retry with this fence.',
  )
}
