// Small HTTP helpers shared by the example handlers (API Gateway HTTP API, payload 2.0).
import type { MiddlewareObj, Request } from '@middy/core'
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda'
import {
  InvalidArgumentError,
  KeyExistsError,
  LockedError,
  MiddyEtcdError,
  NotLeaderError,
  WaitTimeoutError,
} from '../lib/index.js'

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

/** The parsed JSON body ({} when empty); a malformed body is a 400. */
export function body<T = Record<string, unknown>>(event: HttpEvent): T {
  if (!event.body) return {} as T
  const text = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body
  try {
    return JSON.parse(text) as T
  } catch {
    throw new InvalidArgumentError('the request body must be JSON')
  }
}

/** A path parameter; missing is a 400. */
export function param(event: HttpEvent, name: string): string {
  const value = event.pathParameters?.[name]
  if (!value) throw new InvalidArgumentError(`missing path parameter ${name}`)
  return decodeURIComponent(value)
}

/** A query parameter as a number, or the default. */
export function queryNumber(event: HttpEvent, name: string, fallback: number): number {
  const raw = event.queryStringParameters?.[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`query parameter ${name} must be a non-negative number`)
  return n
}

function statusOf(err: unknown): number {
  if (err instanceof InvalidArgumentError) return 400
  if (err instanceof KeyExistsError || err instanceof NotLeaderError) return 409
  if (err instanceof WaitTimeoutError || err instanceof LockedError) return err instanceof WaitTimeoutError ? 504 : 409
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
