import { checkSeconds } from '../lib/core/check.js'
import { InvalidArgumentError } from '../lib/errors.js'

/**
 * A tiny option schema, checked once when a middleware is built so a misconfigured handler
 * fails at cold start with a message naming the option, not on some later invocation.
 *
 * A setting that lib checks too is checked by lib's rule, not by a second one written here:
 * either a rule of lib's validation kit (`seconds`: lib/core/check.ts's `checkSeconds`, the range of
 * every lease TTL), or — for settings lib checks as a whole, with rules between them — `lib`:
 * the schema only knows the option, and the `lib` check given to {@link validateOptions} (the
 * check lib's constructor runs, e.g. `checkQueueSettings`, `checkRateOptions`) decides, at
 * creation, and its error is raised naming the option.
 */
export type Rule =
  | { type: 'string' | 'function' | 'object' | 'boolean' }
  | { type: 'integer' | 'number'; min?: number; max?: number }
  /** Whole seconds from `min` (default 1) to etcd's longest lease TTL, by lib's `checkSeconds`. */
  | { type: 'seconds'; min?: number }
  /** Checked by the `lib` check passed to {@link validateOptions} (the one lib's constructor runs). */
  | { type: 'lib' }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'nameOrFunction' }
  /** A list of non-empty strings (e.g. `etcdConfig`'s required keys). */
  | { type: 'strings' }
  /** An option that no longer exists under this name: its use is an error naming the new one. */
  | { type: 'renamed'; to: string }

export type Schema = Record<string, Rule & { required?: boolean }>

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return typeof value
}

function check(middleware: string, option: string, rule: Rule, value: unknown): void {
  const fail = (expected: string) => {
    throw new InvalidArgumentError(`${middleware}: option \`${option}\` must be ${expected}, got ${describe(value)}`)
  }
  switch (rule.type) {
    case 'lib':
      return // by the lib check, once every option is merged
    case 'seconds':
      checkSeconds(value, `${middleware}: option \`${option}\``, rule.min ?? 1)
      return
    case 'renamed':
      throw new InvalidArgumentError(
        `${middleware}: option \`${option}\` was renamed to \`${rule.to}\`; write { ${rule.to}: ${describe(value)} }`,
      )
    case 'string':
      if (typeof value !== 'string' || value === '') fail('a non-empty string')
      return
    case 'function':
    case 'boolean':
      if (typeof value !== rule.type) fail(`a ${rule.type}`)
      return
    case 'object':
      if (typeof value !== 'object' || value === null) fail('an object')
      return
    case 'nameOrFunction':
      if (!((typeof value === 'string' && value !== '') || typeof value === 'function')) {
        fail('a non-empty string or a function (event, context) => string')
      }
      return
    case 'strings':
      if (!Array.isArray(value) || value.some((item) => typeof item !== 'string' || item === '')) fail('an array of non-empty strings')
      return
    case 'enum':
      if (!rule.values.includes(value as string)) fail(`one of ${rule.values.map((v) => `'${v}'`).join(', ')}`)
      return
    case 'integer':
    case 'number': {
      const range = `${rule.min ?? '-∞'}..${rule.max ?? '∞'}`
      const ok =
        typeof value === 'number' &&
        !Number.isNaN(value) &&
        (rule.type === 'number' || Number.isInteger(value) || value === Infinity) &&
        (rule.min === undefined || value >= rule.min) &&
        (rule.max === undefined || value <= rule.max)
      if (!ok) fail(`${rule.type === 'integer' ? 'an integer' : 'a number'} in ${range}`)
      return
    }
  }
}

/**
 * Merges `options` over `defaults` and checks every option against `schema`; unknown options
 * are errors. `lib` is lib's check of the options whose rule is `lib`, run on the merged options.
 */
export function validateOptions<T extends object>(
  middleware: string,
  schema: Schema,
  defaults: Partial<T>,
  options: unknown,
  lib?: (options: T) => unknown,
): T {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`${middleware}: expected an options object, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (!(key in schema)) {
      throw new InvalidArgumentError(
        `${middleware}: unknown option \`${key}\`; known options: ${Object.keys(schema)
          .filter((k) => schema[k].type !== 'renamed')
          .join(', ')}`,
      )
    }
  }
  const merged = { ...defaults, ...options } as Record<string, unknown>
  for (const [option, rule] of Object.entries(schema)) {
    const value = merged[option]
    if (value === undefined) {
      if (rule.required) throw new InvalidArgumentError(`${middleware}: option \`${option}\` is required`)
      continue
    }
    check(middleware, option, rule, value)
  }
  if (lib) checkByLib(middleware, schema, lib, merged as T)
  return merged as T
}

/**
 * Runs lib's check of the `lib` options. Lib's messages name the setting they refuse (before
 * any other they mention: "burst must be …", "maxRetryDelay (3) must be at least retryDelay
 * (9)"), so its error is raised again from this middleware, naming that option.
 */
function checkByLib<T>(middleware: string, schema: Schema, lib: (options: T) => unknown, options: T): void {
  try {
    lib(options)
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw err
    const named = Object.keys(schema)
      .filter((option) => schema[option].type === 'lib')
      .map((option) => ({ option, at: err.message.search(new RegExp(`\\b${option}\\b`)) }))
      .filter(({ at }) => at >= 0)
      .sort((a, b) => a.at - b.at)[0]
    const message = named ? `option \`${named.option}\`: ${err.message.slice(named.at)}` : err.message
    throw new InvalidArgumentError(`${middleware}: ${message}`, { cause: err })
  }
}
