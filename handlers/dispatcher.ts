// The queue dispatcher as a deployable function: on a schedule, the elected invocation claims
// messages from every `etcdQueue` subscription (ETCD_QUEUE_SUBSCRIPTIONS, filled in by the
// middy-etcd plugin) and invokes the subscribed functions, until shortly before its timeout.
// leaderGuard makes sure only one runs; the others return at once.
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { leaderGuard } from '../middleware/index.js'
import { sharedClient } from '../lib/index.js'
import { lambdaInvoker, runDispatcher, subscriptionsFromEnv } from '../offline/dispatcher.js'

/** Stop claiming this long before the timeout, so invocations in flight can finish (ms). */
const TAIL_MS = Number(process.env.ETCD_DISPATCH_TAIL_MS || 10_000)
const invocationType = process.env.ETCD_DISPATCH_INVOCATION_TYPE === 'Event' ? 'Event' : 'RequestResponse'

export const handler = middy(async (_event: unknown, context: Context & { etcd: { leader: { signal: AbortSignal } } }) => {
  const subscriptions = subscriptionsFromEnv()
  const window = Math.max(1_000, context.getRemainingTimeInMillis() - TAIL_MS)
  const signal = AbortSignal.any([AbortSignal.timeout(window), context.etcd.leader.signal])
  let messages = 0
  let failed = 0
  await runDispatcher({
    client: sharedClient(),
    subscriptions,
    invoke: lambdaInvoker({ invocationType }),
    signal,
    onResult: (r) => {
      messages += r.messageIds.length
      if (!r.outcome.ok) failed += r.messageIds.length
    },
    onError: (s, err) => console.error(`claiming from ${s.queue} failed:`, err),
  })
  return { leader: true, dispatched: messages, failed }
}).use(leaderGuard({ election: 'middy-etcd/dispatcher' }))
