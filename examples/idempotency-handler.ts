// An API that charges a card once per Idempotency-Key header: a client's retry gets the first
// answer, a retry while the first is still running waits for it, and the same key with another
// body is refused (422).
import middy from '@middy/core'
import type { APIGatewayProxyEvent } from 'aws-lambda'
import { etcdIdempotency, etcdPlugin } from '../middleware/index.js'

interface Charge {
  orderId: string
  amount: number
}

/** The payment provider (here: a list of the charges made, for the tests to count). */
export const charged: { charge: Charge; fence?: bigint }[] = []

async function chargeCard(charge: Charge, fence: bigint | undefined) {
  charged.push({ charge, fence })
  return { orderId: charge.orderId, amount: charge.amount, receipt: `r-${charged.length}` }
}

export const handler = middy<APIGatewayProxyEvent>(etcdPlugin())
  .use(
    etcdIdempotency<APIGatewayProxyEvent>({
      key: (event) => event.headers['Idempotency-Key'], // no header: runs without idempotency
      payload: (event) => JSON.parse(event.body ?? '{}'), // same key, other body: 422
      ttl: 24 * 3600,
    }),
  )
  .handler(async (event, context) => {
    const charge = JSON.parse(event.body ?? '{}') as Charge
    const fence = context.etcd.idempotency?.fence // strictly increasing per key (none without a key): pass it downstream
    const receipt = await chargeCard(charge, fence)
    return { statusCode: 201, body: JSON.stringify(receipt) }
  })
