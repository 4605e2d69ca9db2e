// An API that charges a card once per Idempotency-Key header, on REST API (payload 1.0) and HTTP
// API or function URL (payload 2.0) routes alike: a client's retry gets the first answer, a retry
// while the first is still running waits for it, the same key with another body is refused
// (422), and a request without the header, or whose body is not JSON, gets a 400.
import middy from '@middy/core'
import httpErrorHandler from '@middy/http-error-handler'
import type { APIGatewayProxyEvent, APIGatewayProxyEventV2 } from 'aws-lambda'
import { etcdIdempotency, etcdPlugin, fromHeader } from '../middleware/index.js'

interface Charge {
  orderId: string
  amount: number
}

/** The payment provider (here: a list of the charges made, for the tests to count). */
export const charged: { charge: Charge; fence?: bigint }[] = []

async function chargeCard(charge: Charge, fence: bigint) {
  charged.push({ charge, fence })
  return { orderId: charge.orderId, amount: charge.amount, receipt: `r-${charged.length}` }
}

type HttpEvent = APIGatewayProxyEvent | APIGatewayProxyEventV2

export const handler = middy<HttpEvent>(etcdPlugin())
  .use(httpErrorHandler()) // our errors carry statusCode and expose: the caller gets the 400, 409, 413 or 422
  .use(
    etcdIdempotency({
      key: fromHeader('Idempotency-Key'), // any case: HTTP APIs lower-case header names, REST APIs keep them
      requireKey: true, // no header: 400 (IdempotencyKeyMissingError), not a run without idempotency
      payload: (event: HttpEvent) => JSON.parse(event.body ?? '{}'), // not JSON: 400; same key, other body: 422
      ttl: 24 * 3600,
    }),
  )
  .handler(async (event, context) => {
    const charge = JSON.parse(event.body ?? '{}') as Charge
    const fence = context.etcd.idempotency.fence // strictly increasing per key: pass it downstream
    const receipt = await chargeCard(charge, fence)
    return { statusCode: 201, body: JSON.stringify(receipt) }
  })
