import { InvalidArgumentError, InvalidRequestError } from '../lib/errors.js'

/**
 * HTTP events as Lambda's integrations deliver them: API Gateway REST APIs (payload 1.0), HTTP
 * APIs (2.0, or 1.0 if so configured), function URLs (2.0) and ALB (1.0-like). Our
 * short-circuits answer these with a proxy response — an HTTP caller gets an empty 200 from a
 * plain object — and the key helpers read their headers whatever the case of the names.
 */

/** A Lambda proxy response. */
export interface HttpResponse {
  statusCode: number
  headers?: Record<string, string>
  /** Instead of `headers` for an ALB with multi-value headers on, which ignores `headers`. */
  multiValueHeaders?: Record<string, string[]>
  body: string
  /** ALB requires it; API Gateway accepts it. */
  isBase64Encoded: false
}

/** Whether `event` is an HTTP request (API Gateway REST or HTTP API, function URL, ALB), whose caller needs a proxy response. */
export function isHttpEvent(event: unknown): boolean {
  if (typeof event !== 'object' || event === null) return false
  const e = event as { httpMethod?: unknown; version?: unknown; requestContext?: { http?: { method?: unknown } } | null }
  if (typeof e.requestContext !== 'object' || e.requestContext === null) return false
  // Payload 1.0 (REST, HTTP API on 1.0, ALB) names the method at the top; 2.0 under requestContext.http.
  return typeof e.httpMethod === 'string' || (e.version === '2.0' && typeof e.requestContext.http?.method === 'string')
}

/** A JSON proxy response to `event`. */
export function jsonResponse(event: unknown, statusCode: number, body: unknown, headers: Record<string, string> = {}): HttpResponse {
  const all = { 'Content-Type': 'application/json', ...headers }
  const e = event as { requestContext?: { elb?: unknown }; multiValueHeaders?: unknown } | null
  // An ALB target group with multi-value headers on sends only multiValueHeaders, and reads only them back.
  if (e?.requestContext?.elb && e.multiValueHeaders) {
    return {
      statusCode,
      multiValueHeaders: Object.fromEntries(Object.entries(all).map(([k, v]) => [k, [v]])),
      body: JSON.stringify(body),
      isBase64Encoded: false,
    }
  }
  return { statusCode, headers: all, body: JSON.stringify(body), isBase64Encoded: false }
}

/** The entry of `map` named `name`, compared without case (an exact match first). */
function entry(map: unknown, name: string): unknown {
  if (typeof map !== 'object' || map === null) return undefined
  const record = map as Record<string, unknown>
  if (Object.hasOwn(record, name)) return record[name]
  const wanted = name.toLowerCase()
  for (const [k, v] of Object.entries(record)) if (k.toLowerCase() === wanted) return v
  return undefined
}

/**
 * The value of header `name` in an HTTP event, whatever the case of its name: payload 2.0
 * (HTTP APIs, function URLs) lower-cases every name, 1.0 (REST APIs) keeps the caller's, and an
 * ALB with multi-value headers has only `multiValueHeaders` (the last value wins, as in 1.0's
 * `headers`). `headers` may be null in 1.0 (a request without any).
 */
export function headerOf(event: unknown, name: string): string | undefined {
  if (typeof event !== 'object' || event === null) return undefined
  const e = event as { headers?: unknown; multiValueHeaders?: unknown }
  const single = entry(e.headers, name)
  if (typeof single === 'string') return single
  const multi = entry(e.multiValueHeaders, name)
  const last = Array.isArray(multi) ? multi.at(-1) : undefined
  return typeof last === 'string' ? last : undefined
}

/** A function of the event that reads one value of it, saying where it reads (for error messages). */
export type EventValue = ((event: unknown) => string | undefined) & {
  /** Where the value is read, e.g. `the Idempotency-Key header`. */
  readonly source: string
}

/** An HTTP header name (RFC 9110 token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * Reads header `name` of an HTTP event, whatever the case of its name in the event — for
 * `etcdIdempotency`'s `key` (or a `name` option) on REST (payload 1.0) and HTTP API / function
 * URL (2.0) routes alike. A missing or blank header is `undefined`.
 *
 * @example etcdIdempotency({ key: fromHeader('Idempotency-Key'), requireKey: true })
 */
export function fromHeader(name: string): EventValue {
  if (typeof name !== 'string' || !TOKEN.test(name)) {
    throw new InvalidArgumentError(
      `fromHeader: the header name must be an HTTP token such as 'Idempotency-Key', got ${typeof name === 'string' ? JSON.stringify(name) : typeof name}`,
    )
  }
  const read = (event: unknown) => headerOf(event, name)?.trim() || undefined
  return Object.assign(read, { source: `the ${name} header` })
}

/**
 * Reads the value at a dotted `path` of the event (`'pathParameters.orderId'`,
 * `'detail.orderId'` of an EventBridge event): a string as it is, a finite number as its
 * decimal form; a missing value (or an empty string) is `undefined`. Any other value there (an
 * object, a boolean) is the request's fault: an `InvalidRequestError` (400).
 *
 * @example etcdIdempotency({ key: fromEvent('pathParameters.orderId') })
 */
export function fromEvent(path: string): EventValue {
  const steps = typeof path === 'string' ? path.split('.') : []
  if (steps.length === 0 || steps.some((s) => s === '')) {
    throw new InvalidArgumentError(
      `fromEvent: the path must be property names joined by dots, such as 'pathParameters.orderId', got ${typeof path === 'string' ? JSON.stringify(path) : typeof path}`,
    )
  }
  const read = (event: unknown) => {
    let value = event
    for (const step of steps) {
      if (typeof value !== 'object' || value === null || !Object.hasOwn(value, step)) return undefined
      value = (value as Record<string, unknown>)[step]
    }
    if (value === undefined || value === null || value === '') return undefined
    if (typeof value === 'string') return value
    if (typeof value === 'number' && Number.isFinite(value)) return String(value)
    throw new InvalidRequestError(`the event's ${path} is ${Array.isArray(value) ? 'an array' : typeof value}, not a string or number`)
  }
  return Object.assign(read, { source: `the event's ${path}` })
}

/** Where an option function reads its value, if it says (see {@link EventValue}). */
export function sourceOf(fn: unknown): string | undefined {
  const source = (fn as { source?: unknown } | null)?.source
  return typeof source === 'string' ? source : undefined
}
