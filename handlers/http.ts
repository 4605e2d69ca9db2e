// Small HTTP helpers shared by the example handlers (API Gateway HTTP API, payload 2.0).
import type { MiddlewareObj, Request } from '@middy/core'
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda'
import { InvalidArgumentError, KeyExistsError, LockedError, MiddyEtcdError, NotLeaderError, WaitTimeoutError } from '../lib/index.js'

export type HttpEvent = APIGatewayProxyEventV2
export type HttpResult = APIGatewayProxyStructuredResultV2

/** A JSON response. bigints become strings. */
export function json(statusCode: number, body: unknown): HttpResult {
  return {
    statusCode,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)),
  }
}

/** A JSON object from a request body. */
export type JsonObject = Record<string, unknown>

/**
 * The JSON body, which must be an object ({} when empty). A 400 for anything else: malformed
 * JSON, `null`, an array, a string or number, and any integer beyond ±(2^53 − 1) — JSON.parse
 * would silently round it (9007199254740993 becomes …992), so it is refused, not changed.
 */
export function body(event: HttpEvent): JsonObject {
  if (!event.body) return {}
  const text = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body
  let parsed: unknown
  try {
    parsed = JSON.parse(text, (key, value) => {
      if (typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value)) {
        throw new InvalidArgumentError(
          `${key === '' ? 'the body' : JSON.stringify(key)} is a number beyond ±9007199254740991, which JSON numbers here cannot hold exactly; send a smaller one`,
        )
      }
      return value
    })
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err
    throw new InvalidArgumentError('the request body must be JSON')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidArgumentError(
      `the request body must be a JSON object { … }, got ${parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : typeof parsed}`,
    )
  }
  return parsed as JsonObject
}

/** A string field of a body: a 400 unless it is a (non-empty, unless `allowEmpty`) string. */
export function stringField(obj: JsonObject, name: string, shape: string, options: { allowEmpty?: boolean } = {}): string {
  const value = obj[name]
  if (typeof value !== 'string' || (value === '' && !options.allowEmpty))
    throw new InvalidArgumentError(`body must be ${shape}: ${name} must be a ${options.allowEmpty ? '' : 'non-empty '}string`)
  return value
}

/** A whole-number field of a body within [min, max]; `fallback` when absent (else absent is a 400). */
export function intField(obj: JsonObject, name: string, shape: string, range: { min: number; max: number }, fallback?: number): number {
  const value = obj[name] ?? fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < range.min || value > range.max) {
    throw new InvalidArgumentError(
      `body must be ${shape}: ${name} must be a whole number from ${range.min} to ${range.max}, got ${JSON.stringify(value) ?? 'nothing'}`,
    )
  }
  return value
}

/** Longest path parameter accepted, in UTF-8 bytes. */
const MAX_PARAM_BYTES = 512

/**
 * A path parameter as API Gateway (or serverless-offline) already decoded it — decoding it
 * again would turn `%25` into a URIError. A 400 when missing, too long, or containing "/"
 * (the names become key prefixes: `a` must not reach into `a/b`).
 */
export function param(event: HttpEvent, name: string): string {
  const value = event.pathParameters?.[name]
  if (!value) throw new InvalidArgumentError(`missing path parameter ${name}`)
  if (value.includes('/')) throw new InvalidArgumentError(`path parameter ${name} must not contain "/", got ${JSON.stringify(value)}`)
  if (Buffer.byteLength(value) > MAX_PARAM_BYTES) throw new InvalidArgumentError(`path parameter ${name} is over ${MAX_PARAM_BYTES} bytes`)
  return value
}

/** A query parameter as a number, or the default. */
export function queryNumber(event: HttpEvent, name: string, fallback: number): number {
  const raw = event.queryStringParameters?.[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`query parameter ${name} must be a non-negative number`)
  return n
}

/** Time kept back from a wait so the function can still answer before its own timeout (and API Gateway's). */
const ANSWER_MARGIN_MS = 1_000

/**
 * A wait in ms from query parameter `name`, capped so the function answers before it times out:
 * asking for more than the remaining time waits only as long as there is.
 */
export function waitQuery(event: HttpEvent, context: { getRemainingTimeInMillis?: () => number }, name: string, fallback: number): number {
  const asked = queryNumber(event, name, fallback)
  const remaining = context.getRemainingTimeInMillis?.() ?? Number.POSITIVE_INFINITY
  return Math.max(0, Math.min(asked, remaining - ANSWER_MARGIN_MS))
}

function statusOf(err: unknown): number {
  if (err instanceof InvalidArgumentError) return 400
  if (err instanceof KeyExistsError || err instanceof NotLeaderError) return 409
  if (err instanceof WaitTimeoutError || err instanceof LockedError) return err instanceof WaitTimeoutError ? 504 : 409
  // The rest of ours that name their HTTP answer (an idempotency key reused with another body: 422).
  const statusCode = err instanceof MiddyEtcdError ? (err as MiddyEtcdError & { statusCode?: unknown }).statusCode : undefined
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 600) return statusCode
  return 500
}

/**
 * Turns errors into JSON responses (`{ error, code }`). Use it first (outermost), so its
 * `onError` runs after every other middleware has released what it held.
 */
export function httpErrors(): MiddlewareObj<any, any> {
  return {
    onError: async (request: Request<any, any>) => {
      const err = request.error
      const code = err instanceof MiddyEtcdError ? (err as MiddyEtcdError & { code?: string }).code : undefined
      const status = statusOf(err)
      if (status === 500) console.error(err)
      request.response = json(status, { error: err?.message ?? String(err), ...(code ? { code } : {}) })
    },
  }
}
