// An idempotent charge: the same Idempotency-Key runs the charge once and gets the first
// response again (a retry, a double click); the same key with another body is a 422.
import { randomUUID } from 'node:crypto'
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdIdempotency, etcdPlugin, type IdempotencyContext } from '../middleware/index.js'
import { runSTM, sharedClient } from '../lib/index.js'
import { body, httpErrors, intField, json, type HttpEvent } from './http.js'

const CHARGE = '{ amount: number }'
const CHARGES = 'example/charges/count'

/** POST /charges { amount } with an Idempotency-Key header → 201 { chargeId, amount, charges } */
export const charge = middy(async (event: HttpEvent, _context: Context & IdempotencyContext) => {
  const amount = intField(body(event), 'amount', CHARGE, { min: 1, max: 1_000_000 })
  // The "charge": counted, so a duplicate that ran it again would show.
  const { result: charges } = await runSTM(sharedClient(), async (stm) => {
    const count = Number((await stm.get(CHARGES)) ?? '0') + 1
    stm.put(CHARGES, String(count))
    return count
  })
  return json(201, { chargeId: randomUUID(), amount, charges })
}, etcdPlugin())
  .use(httpErrors())
  .use(
    etcdIdempotency<HttpEvent>({
      // HTTP API (payload 2.0) events carry header names lower-cased.
      key: (event) => event.headers?.['idempotency-key'],
      payload: (event) => body(event),
      ttl: 3600,
    }),
  )

/** GET /charges → { charges }: how many charges ran. */
export const count = middy(async () => json(200, { charges: Number((await sharedClient().get(CHARGES).string()) ?? '0') })).use(
  httpErrors(),
)
