/**
 * HTTP events as Lambda receives them, after the samples in AWS's documentation: API Gateway
 * REST APIs (payload 1.0: header names as the caller sent them, `multiValueHeaders` beside
 * `headers`, `headers` null without any), HTTP APIs (payload 2.0: every header name
 * lower-cased, duplicates joined by commas), function URLs (2.0, with a `lambda-url` domain) and
 * ALB. Tests use them instead of `{ headers }` stand-ins, whose shape no route ever sends.
 */
import type { ALBEvent, APIGatewayProxyEvent, APIGatewayProxyEventV2 } from 'aws-lambda'

export interface HttpRequest {
  method?: string
  path?: string
  /** Header names as the caller wrote them: a 2.0 event lower-cases them, as API Gateway does. */
  headers?: Record<string, string>
  body?: string
  pathParameters?: Record<string, string>
}

/** A REST API (API Gateway v1, payload 1.0) proxy event. */
export function restEvent(r: HttpRequest = {}): APIGatewayProxyEvent {
  const method = r.method ?? 'POST'
  const path = r.path ?? '/orders'
  const headers = r.headers && Object.keys(r.headers).length > 0 ? r.headers : null
  return {
    resource: path,
    path,
    httpMethod: method,
    headers: headers as APIGatewayProxyEvent['headers'],
    multiValueHeaders: (headers
      ? Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]]))
      : null) as APIGatewayProxyEvent['multiValueHeaders'],
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: r.pathParameters ?? null,
    stageVariables: null,
    requestContext: {
      accountId: '123456789012',
      apiId: '1234567890',
      authorizer: null,
      domainName: '1234567890.execute-api.us-east-1.amazonaws.com',
      domainPrefix: '1234567890',
      extendedRequestId: 'LgLs4FbOoAMEVtQ=',
      httpMethod: method,
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: null,
        apiKeyId: null,
        caller: null,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: '203.0.113.7',
        user: null,
        userAgent: 'curl/8.5.0',
        userArn: null,
      },
      path: `/prod${path}`,
      protocol: 'HTTP/1.1',
      requestId: 'c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
      requestTime: '09/Apr/2026:12:34:56 +0000',
      requestTimeEpoch: 1775738096000,
      resourceId: '123456',
      resourcePath: path,
      stage: 'prod',
    },
    body: r.body ?? null,
    isBase64Encoded: false,
  }
}

/** An HTTP API (API Gateway v2, payload 2.0) event; `domain` 'url' makes it a function URL's. */
export function httpApiEvent(r: HttpRequest = {}, domain: 'api' | 'url' = 'api'): APIGatewayProxyEventV2 {
  const method = r.method ?? 'POST'
  const path = r.path ?? '/orders'
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(r.headers ?? {}))
    headers[k.toLowerCase()] = headers[k.toLowerCase()] === undefined ? v : `${headers[k.toLowerCase()]},${v}`
  const domainName = domain === 'url' ? 'abcdefghij.lambda-url.us-east-1.on.aws' : '1234567890.execute-api.us-east-1.amazonaws.com'
  return {
    version: '2.0',
    routeKey: domain === 'url' ? '$default' : `${method} ${path}`,
    rawPath: path,
    rawQueryString: '',
    headers: { 'content-length': String(Buffer.byteLength(r.body ?? '')), host: domainName, 'user-agent': 'curl/8.5.0', ...headers },
    pathParameters: r.pathParameters,
    requestContext: {
      accountId: domain === 'url' ? 'anonymous' : '123456789012',
      apiId: domain === 'url' ? 'abcdefghij' : '1234567890',
      domainName,
      domainPrefix: domainName.split('.')[0],
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '203.0.113.7', userAgent: 'curl/8.5.0' },
      requestId: 'JKJaXmPLvHcESHA=',
      routeKey: domain === 'url' ? '$default' : `${method} ${path}`,
      stage: '$default',
      time: '09/Apr/2026:12:34:56 +0000',
      timeEpoch: 1775738096000,
    },
    body: r.body,
    isBase64Encoded: false,
  }
}

/** An ALB target group event (multi-value headers off: lower-cased names in `headers`). */
export function albEvent(r: HttpRequest = {}): ALBEvent {
  return {
    requestContext: { elb: { targetGroupArn: 'arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/lambda/5a7c2b' } },
    httpMethod: r.method ?? 'POST',
    path: r.path ?? '/orders',
    queryStringParameters: {},
    headers: Object.fromEntries(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
    body: r.body ?? '',
    isBase64Encoded: false,
  }
}

/** An EventBridge scheduled event: not HTTP. */
export const scheduledEvent = {
  version: '0',
  id: '53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa',
  'detail-type': 'Scheduled Event',
  source: 'aws.events',
  account: '123456789012',
  time: '2026-04-09T12:00:00Z',
  region: 'us-east-1',
  resources: ['arn:aws:events:us-east-1:123456789012:rule/nightly'],
  detail: {},
}
