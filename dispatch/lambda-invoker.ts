// An Invoke over the Lambda Invoke API (`@aws-sdk/client-lambda`, loaded on first use): what
// the dispatcher calls consumers with, in AWS and against serverless-offline's Invoke endpoint.
import { InvalidArgumentError } from '../lib/errors.js'
import type { Invoke } from './dispatcher.js'

/** What an Invoke call answers, as far as the dispatcher reads it. */
interface InvokeAnswer {
  StatusCode?: number
  Payload?: Uint8Array
  FunctionError?: string
}

/** Options of {@link lambdaInvoker}. */
export interface LambdaInvokerOptions {
  /**
   * Invoke API endpoint; default `MIDDY_ETCD_LAMBDA_ENDPOINT` (the offline plugin sets it to
   * serverless-offline's, e.g. http://localhost:3002), else AWS.
   */
  endpoint?: string
  /** Default `AWS_REGION`, else us-east-1. */
  region?: string
  /** `RequestResponse` (default): wait and learn the outcome; `Event`: fire and forget. */
  invocationType?: 'Event' | 'RequestResponse'
  env?: Record<string, string | undefined>
}

/**
 * An {@link Invoke} over `@aws-sdk/client-lambda` (loaded on first use). Against a local endpoint
 * it uses dummy credentials, which serverless-offline accepts, unless AWS credentials are set.
 */
export function lambdaInvoker(options: LambdaInvokerOptions = {}): Invoke {
  const env = options.env ?? process.env
  const endpoint = options.endpoint ?? (env.MIDDY_ETCD_LAMBDA_ENDPOINT || undefined)
  const region = options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1'
  const invocationType = options.invocationType ?? 'RequestResponse'
  if (invocationType !== 'Event' && invocationType !== 'RequestResponse') {
    throw new InvalidArgumentError(`invocationType must be 'Event' or 'RequestResponse', got ${JSON.stringify(invocationType)}`)
  }
  let client:
    | Promise<{ send: (command: unknown) => Promise<InvokeAnswer>; InvokeCommand: typeof import('@aws-sdk/client-lambda').InvokeCommand }>
    | undefined
  const load = () =>
    (client ??= import('@aws-sdk/client-lambda').then(({ LambdaClient, InvokeCommand }) => {
      const local = endpoint !== undefined && !env.AWS_ACCESS_KEY_ID
      const lambda = new LambdaClient({
        region,
        ...(endpoint ? { endpoint } : {}),
        ...(local ? { credentials: { accessKeyId: 'offline', secretAccessKey: 'offline' } } : {}),
      })
      return { send: (c: unknown) => lambda.send(c as never) as Promise<InvokeAnswer>, InvokeCommand }
    }))
  return async (functionName, event) => {
    const { send, InvokeCommand } = await load()
    const res = await send(
      new InvokeCommand({ FunctionName: functionName, InvocationType: invocationType, Payload: Buffer.from(JSON.stringify(event)) }),
    )
    if (invocationType === 'Event') return { ok: res.StatusCode === 202 || res.StatusCode === 200 }
    const text = res.Payload ? Buffer.from(res.Payload as Uint8Array).toString('utf8') : ''
    let body: unknown
    try {
      body = text ? JSON.parse(text) : undefined
    } catch {
      body = text
    }
    // The answer is the function's JSON (or text): read its fields without trusting its shape.
    const field = (name: string): unknown =>
      typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined
    if (res.FunctionError) {
      const type = field('errorType')
      const errorType = typeof type === 'string' ? { errorType: type } : {}
      return { ok: false, error: String(field('errorMessage') ?? field('Message') ?? res.FunctionError), ...errorType }
    }
    const items = field('batchItemFailures')
    const failures: unknown[] = Array.isArray(items) ? items : []
    return { ok: true, failedIds: failures.map((f) => String((f as { itemIdentifier?: unknown } | null)?.itemIdentifier)) }
  }
}
