import { createHash, randomUUID } from 'node:crypto'
import { checkSeconds } from '../core/check.js'
import {
  ForeignKeyError,
  IdempotencyInProgressError,
  IdempotencyResultNotStorableError,
  InvalidArgumentError,
  SingleFlightError,
} from '../errors.js'
import type { KeyValue } from '../core/kv.js'
import { DEFAULT_IN_PROGRESS_TTL_S, MAX_VALUE_BYTES } from '../limits.js'

/**
 * The value of an idempotency record: its state as one small JSON document. The state lives in
 * the value and the lifetime in the key's lease — never a timestamp, so no decision depends on
 * any machine's wall clock.
 */

/** A leader's error as it crosses etcd. */
export interface SharedError {
  name: string
  message: string
  code?: string
}

/** What a record says. `hash` is the payload hash of the call that wrote it, if it gave one. */
export type RecordState =
  | { state: 'in-progress'; hash?: string; owner: string }
  | { state: 'completed'; hash?: string; result: unknown }
  | { state: 'failed'; hash?: string; error: SharedError }

/** A fresh id that tells this begin call's record apart from any other (see `IdempotencyStore.begin`). */
export function ownerId(): string {
  return randomUUID()
}

/** The stored form of a state. Throws {@link IdempotencyResultNotStorableError} for a completed result etcd cannot keep. */
export function encodeRecord(record: RecordState): string {
  if (record.state === 'completed') {
    const problem = jsonProblem(record.result, 'the result', 0)
    if (problem) {
      throw new IdempotencyResultNotStorableError(
        'not-json',
        `${problem}; a duplicate would get it back changed. Return plain JSON (strings, numbers, booleans, null, arrays, plain objects), e.g. dates as ISO strings`,
      )
    }
  }
  // `result: undefined` drops out of the JSON, and reads back as undefined: a handler with no answer.
  const text = JSON.stringify(record)
  const bytes = Buffer.byteLength(text)
  if (bytes > MAX_VALUE_BYTES) {
    throw new IdempotencyResultNotStorableError(
      'too-large',
      `the record would be ${bytes} bytes; etcd keeps at most ${MAX_VALUE_BYTES} bytes per value (--max-request-bytes). Return less, or store the data elsewhere and return a reference to it`,
    )
  }
  return text
}

/** The state stored in `kv`; a value that is not a record is a {@link ForeignKeyError} naming the key. */
export function decodeRecord(kv: KeyValue): RecordState {
  let parsed: unknown
  try {
    parsed = JSON.parse(kv.value.toString())
  } catch {
    parsed = undefined
  }
  const r = parsed as Partial<Record<string, unknown>> | undefined
  const ok =
    typeof r === 'object' &&
    r !== null &&
    (r.hash === undefined || typeof r.hash === 'string') &&
    ((r.state === 'in-progress' && typeof r.owner === 'string') ||
      r.state === 'completed' ||
      (r.state === 'failed' && typeof (r.error as SharedError | undefined)?.message === 'string'))
  if (!ok) {
    throw new ForeignKeyError(
      `key ${JSON.stringify(kv.key)} is not an idempotency record (it was written by something else); keep other data outside the store's prefix and delete that key`,
    )
  }
  return r as RecordState
}

/** An error's name, message and code, as a record can carry them. */
export function toSharedError(err: unknown): SharedError {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}) }
  }
  return { name: 'Error', message: String(err) }
}

/**
 * A hash of the payload part a record is checked against: SHA-256 (base64url) of its JSON with
 * object keys sorted, so `{a, b}` and `{b, a}` hash alike. Throws {@link InvalidArgumentError}
 * for what JSON cannot express (a BigInt, a cycle).
 */
export function hashPayload(payload: unknown): string {
  let text: string | undefined
  try {
    text = JSON.stringify(payload, sortKeys)
  } catch (err) {
    throw new InvalidArgumentError(
      `the payload cannot be hashed: ${(err as Error).message}; pass a JSON value (e.g. the event's body), converting BigInts to strings`,
    )
  }
  // JSON.stringify(undefined) is undefined: hash it as an empty document, like null would differ from it.
  return createHash('sha256')
    .update(text ?? '')
    .digest('base64url')
}

/** JSON.stringify replacer: plain objects with their keys in sorted order. */
function sortKeys(_key: string, value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value
  const sorted: Record<string, unknown> = {}
  for (const k of Object.keys(value).sort()) sorted[k] = (value as Record<string, unknown>)[k]
  return sorted
}

/** Deeper than this is refused rather than risking the stack. */
const MAX_DEPTH = 256

/**
 * Why `value` would not come back from JSON as itself, naming where (undefined: it would). At
 * the top level `undefined` is fine (no result); inside objects an undefined property is dropped,
 * which reads back the same.
 */
function jsonProblem(value: unknown, path: string, depth: number): string | undefined {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return undefined
  if (value === undefined) return depth === 0 ? undefined : `${path} is undefined (JSON turns it into null)`
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${path} is ${value} (JSON turns it into null)`
  if (typeof value !== 'object') return `${path} is a ${typeof value}`
  if (depth >= MAX_DEPTH) return `${path} is nested more than ${MAX_DEPTH} levels deep (or refers to itself)`
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = jsonProblem(value[i], `${path}[${i}]`, depth + 1)
      if (problem) return problem
    }
    return undefined
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null)
    return `${path} is a ${proto?.constructor?.name ?? 'non-plain object'}, not a plain object`
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue
    const problem = jsonProblem(v, `${path}.${k}`, depth + 1)
    if (problem) return problem
  }
  return undefined
}

/** The outcome a completed or failed record stands for. */
export function finishedOutcome(
  record: RecordState,
  kv: KeyValue,
): { status: 'completed'; result: unknown; revision: bigint } | { status: 'failed'; error: SingleFlightError } {
  if (record.state === 'completed') return { status: 'completed', result: record.result, revision: kv.modRevision }
  if (record.state === 'failed') {
    const e = record.error
    return { status: 'failed', error: new SingleFlightError(`the call this one waited for failed: ${e.name}: ${e.message}`, e) }
  }
  throw new IdempotencyInProgressError(`key ${JSON.stringify(kv.key)} is still in progress: wait for its outcome before reading it`)
}

/** The `hash` field of a record: absent when the caller gave none. */
export function hashField(hash: string | undefined): { hash?: string } {
  return hash === undefined ? {} : { hash }
}

/** A payload hash as `begin` accepts it. */
export function checkHash(hash: unknown): string | undefined {
  if (hash === undefined) return undefined
  if (typeof hash !== 'string' || hash.length === 0 || hash.length > 256) {
    throw new InvalidArgumentError(
      `payloadHash must be a non-empty string of at most 256 characters (e.g. hashPayload(event.body)), got ${hash === '' ? '""' : typeof hash}`,
    )
  }
  return hash
}

/** The TTL of a lease the store grants for a claim. */
export function checkLeaseTtl(ttl: unknown): number {
  return checkSeconds(ttl, 'leaseTtl', 1, { fallback: DEFAULT_IN_PROGRESS_TTL_S })
}

/** The seconds a completed record is kept (0: only handed to waiting callers). */
export function checkRecordTtl(ttl: unknown): void {
  checkSeconds(ttl, 'ttl', 0, { hint: '0: hand the result to waiting callers only' })
}
