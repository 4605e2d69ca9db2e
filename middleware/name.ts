import { InvalidRequestError } from '../lib/errors.js'
import { checkName } from '../lib/core/kv.js'

/** A name given as a constant, or computed per invocation from the event and context. */
export type NameOption<TEvent = any> = string | ((event: TEvent, context: any) => string)

/** Longest part of a thrown error's message quoted in ours (it goes to HTTP callers). */
const QUOTED_MESSAGE = 200

/**
 * Runs `fn`, a function of the event the user gave as option `option` (`name`, `key`,
 * `payload`). What it throws comes from the event as far as we can tell — malformed JSON in a
 * body, a field the event lacks — so it becomes an {@link InvalidRequestError} (HTTP 400) naming
 * the option, with the error as its cause: behind `@middy/http-error-handler` the caller learns
 * what was wrong instead of getting an empty 500. An error that already carries an HTTP
 * `statusCode` (one of ours, an http-errors error of the user's) is passed on unchanged.
 */
export function callWithEvent<T>(middleware: string, option: string, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (typeof (err as { statusCode?: unknown } | null)?.statusCode === 'number') throw err
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
    const quoted = what.length > QUOTED_MESSAGE ? `${what.slice(0, QUOTED_MESSAGE)}…` : what
    throw new InvalidRequestError(
      `${middleware}: the \`${option}\` function failed on this request (${quoted}); the request lacks what \`${option}\` reads, or is malformed`,
      { cause: err },
    )
  }
}

/**
 * The name for this request, checked before anything is acquired: a function that throws or
 * returns no usable name (its event lacks the field, the field is too long) is the request's
 * fault, a typed 400, and costs no lease.
 */
export function resolveName<TEvent>(middleware: string, name: NameOption<TEvent>, request: { event: TEvent; context: unknown }): string {
  if (typeof name === 'string') return name
  const value = callWithEvent(middleware, 'name', () => name(request.event, request.context))
  if (typeof value !== 'string' || value === '') {
    throw new InvalidRequestError(
      `${middleware}: the \`name\` function returned ${value === '' ? '""' : typeof value}; it must return a non-empty string`,
    )
  }
  try {
    return checkName(value, `${middleware}: the name returned by the \`name\` function`)
  } catch (err) {
    throw new InvalidRequestError((err as Error).message)
  }
}
