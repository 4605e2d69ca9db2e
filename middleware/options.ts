import { InvalidArgumentError } from '../lib/errors.js'

/**
 * A tiny option schema, checked once when a middleware is built so a misconfigured handler
 * fails at cold start with a message naming the option, not on some later invocation.
 */
export type Rule =
  | { type: 'string' | 'function' | 'object' | 'boolean' }
  | { type: 'integer' | 'number'; min?: number; max?: number }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'nameOrFunction' }
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
    case 'renamed':
      throw new InvalidArgumentError(`${middleware}: option \`${option}\` was renamed to \`${rule.to}\`; write { ${rule.to}: ${describe(value)} }`)
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

/** Merges `options` over `defaults` and checks every option against `schema`; unknown options are errors. */
export function validateOptions<T extends object>(middleware: string, schema: Schema, defaults: Partial<T>, options: unknown): T {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`${middleware}: expected an options object, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (!(key in schema)) {
      throw new InvalidArgumentError(`${middleware}: unknown option \`${key}\`; known options: ${Object.keys(schema).filter((k) => schema[k].type !== 'renamed').join(', ')}`)
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
  return merged as T
}
