import { InvalidArgumentError } from '../lib/errors.js'
import { checkName } from '../lib/kv.js'

/** A name given as a constant, or computed per invocation from the event and context. */
export type NameOption<TEvent = any> = string | ((event: TEvent, context: any) => string)

/**
 * The name for this request, checked before anything is acquired: a function that returns no
 * usable name is a typed error, and costs no lease.
 */
export function resolveName<TEvent>(middleware: string, name: NameOption<TEvent>, request: { event: TEvent; context: unknown }): string {
  if (typeof name === 'string') return name
  const value = name(request.event, request.context)
  if (typeof value !== 'string' || value === '') {
    throw new InvalidArgumentError(`${middleware}: the \`name\` function returned ${value === '' ? '""' : typeof value}; it must return a non-empty string`)
  }
  return checkName(value, `${middleware}: the name returned by the \`name\` function`)
}
