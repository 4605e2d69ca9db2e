import { randomUUID } from 'node:crypto'
import type { Context } from 'aws-lambda'

/**
 * A Lambda-like context for tests: `getRemainingTimeInMillis()` counts down from `timeoutMs`.
 * Typed with `etcd: any` so it fits handlers whose middlewares add `context.etcd.*`.
 */
export function lambdaContext(timeoutMs = 30_000, name = 'fn'): Context & { etcd: any } {
  const end = Date.now() + timeoutMs
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${name}`,
    memoryLimitInMB: '128',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${name}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => Math.max(0, end - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
    etcd: undefined,
  }
}
