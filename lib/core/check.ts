import { isLazyClient } from './client.js'
import { InvalidArgumentError } from '../errors.js'
import { MAX_TTL_S } from '../limits.js'

/**
 * Argument checks at the public entry points, so a wrong type is an InvalidArgumentError that
 * names the argument — not a TypeError from deep inside — and nothing is written.
 */

function describe(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

/** A Session (checked by shape: its client, lease and signal). */
export function checkSession(session: unknown, what: string): void {
  const s = session as { client?: unknown; leaseId?: unknown; signal?: unknown } | null
  if (
    typeof s !== 'object' ||
    s === null ||
    typeof s.leaseId !== 'string' ||
    !(s.signal instanceof AbortSignal) ||
    typeof s.client !== 'object'
  ) {
    throw new InvalidArgumentError(`${what} needs a Session (from Session.create(client)), got ${describe(session)}`)
  }
}

/** An etcd client (from createClient, or an etcd3 client or namespace, or sharedClient()). */
export function checkClient(client: unknown, what: string): void {
  // The shared client is checked by what it is: reading its fields would read its settings.
  if (isLazyClient(client)) return
  const c = client as { kv?: unknown; watch?: unknown } | null
  if (typeof c !== 'object' || c === null || typeof c.kv !== 'object' || typeof c.watch !== 'function') {
    throw new InvalidArgumentError(`${what} needs an etcd client (from createClient()), got ${describe(client)}`)
  }
}

/** An options object (undefined means none); its `signal`, if any, must be an AbortSignal. */
export function checkOptions<T extends object>(options: T | undefined, what: string): T {
  if (options === undefined) return {} as T
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidArgumentError(`${what}: options must be an object, got ${describe(options)}`)
  }
  const signal = (options as { signal?: unknown }).signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError(`${what}: options.signal must be an AbortSignal (e.g. AbortSignal.timeout(ms)), got ${describe(signal)}`)
  }
  return options
}

/** How a value shows in a message: strings quoted, functions and objects named by kind. */
export function show(value: unknown): string {
  if (value === undefined) return 'undefined'
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'bigint') return `${value}n`
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return describe(value)
  }
}

/**
 * A whole number from `min` to `max`, in `unit` if it has one (`seconds`, `milliseconds`): every
 * numeric setting of the library is checked here, so each limit is written once and every
 * message reads the same. `undefined` gives `fallback` when there is one; a `max` of `Infinity`
 * or `Number.MAX_SAFE_INTEGER` means no upper bound (the message says `>= min`); `minNote` says
 * what the lowest value means (`0 (served first)`); `orInfinity` also accepts `Infinity` (a
 * count that may be unlimited).
 */
export function checkInteger(
  value: unknown,
  what: string,
  min: number,
  max: number,
  options: { unit?: string; fallback?: number; hint?: string; minNote?: string; orInfinity?: boolean } = {},
): number {
  if (value === undefined && options.fallback !== undefined) return options.fallback
  if (options.orInfinity && value === Infinity) return value
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const unit = options.unit ? ` of ${options.unit}` : ''
    const low = `${min}${options.minNote ? ` (${options.minNote})` : ''}`
    const range = max >= Number.MAX_SAFE_INTEGER ? `>= ${low}` : `from ${low} to ${max}`
    const also = [options.orInfinity ? 'or Infinity' : '', options.hint ?? ''].filter(Boolean).join('; ')
    throw new InvalidArgumentError(`${what} must be a whole number${unit} ${range}${also ? ` (${also})` : ''}, got ${show(value)}`)
  }
  return value
}

/** A whole number of seconds from `min` to etcd's longest lease TTL (a lease, a record's life, a delay). */
export function checkSeconds(value: unknown, what: string, min = 1, options: { fallback?: number; hint?: string } = {}): number {
  return checkInteger(value, what, min, MAX_TTL_S, { unit: 'seconds', ...options })
}
