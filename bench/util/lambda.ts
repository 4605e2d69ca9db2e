import type { Context } from 'aws-lambda'

/** A Lambda-like context whose remaining time counts down from `timeoutMs` (as on AWS). */
export function lambdaContext(timeoutMs = 30_000, name = 'bench'): Context & { etcd: any } {
  const end = Date.now() + timeoutMs
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${name}`,
    memoryLimitInMB: '128',
    awsRequestId: Math.random().toString(16).slice(2),
    logGroupName: `/aws/lambda/${name}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => Math.max(0, end - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
    etcd: undefined,
  }
}
