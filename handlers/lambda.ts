// The Lambda client of the example functions: offline it talks to serverless-offline's Invoke
// endpoint (MIDDY_ETCD_LAMBDA_ENDPOINT, set by the plugin) with dummy credentials; in the cloud,
// to AWS with the function's role.
import type { LambdaClient } from '@aws-sdk/client-lambda'

let client: Promise<LambdaClient> | undefined

export function lambdaClient(): Promise<LambdaClient> {
  client ??= import('@aws-sdk/client-lambda').then(({ LambdaClient }) => {
    const endpoint = process.env.MIDDY_ETCD_LAMBDA_ENDPOINT || undefined
    return new LambdaClient({
      region: process.env.AWS_REGION || 'us-east-1',
      ...(endpoint ? { endpoint, credentials: { accessKeyId: 'offline', secretAccessKey: 'offline' } } : {}),
    })
  })
  return client
}
