import { isLazyClient } from './client.js'
import { InvalidArgumentError } from './errors.js'

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
  if (typeof s !== 'object' || s === null || typeof s.leaseId !== 'string' || !(s.signal instanceof AbortSignal) || typeof s.client !== 'object') {
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
