// A scheduled task that must run once per tick however many instances fire: leaderGuard lets
// only the elected invocation run; the others return at once as followers.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { leaderGuard } from '../middleware/index.js'
import { sharedClient } from '../lib/index.js'
import { httpErrors, json } from './http.js'

const TICKS = 'example/ticks'

/** schedule: rate(1 minute) (and POST /ticks): records a tick under leadership. */
export const tick = middy(
  async (_event: unknown, context: Context & { etcd: { leader: { key: string; rev: bigint; leaderCompare: () => any } } }) => {
    const { leader } = context.etcd
    const client = sharedClient()
    const previous = Number(JSON.parse((await client.get(TICKS).string()) ?? '{"count":0}').count)
    const record = { count: previous + 1, leaderKey: leader.key, term: leader.rev.toString(), at: new Date().toISOString() }
    // Written only while this invocation still leads (its key unchanged).
    const res = await client
      .if(leader.key, 'Create', '==', leader.rev.toString())
      .then(client.put(TICKS).value(JSON.stringify(record)))
      .commit()
    return { leader: true, written: res.succeeded, ...record }
  },
)
  .use(httpErrors())
  .use(leaderGuard({ election: 'example/ticker' }))

/** GET /ticks → the last tick record. */
export const ticks = middy(async () => json(200, JSON.parse((await sharedClient().get(TICKS).string()) ?? '{"count":0}'))).use(httpErrors())
