// The plugin's reading of `etcdQueue` events (offline/config.ts): the subscriptions it hands the
// dispatcher, with every queue setting, and the name checks it makes before anything runs.
import { describe, expect, it } from 'vitest'
import { InvalidArgumentError } from '../lib/index.js'
import { checkQueueNames, queueSubscriptions, type FunctionObject, type ServerlessLike } from '../offline/config.js'

function serverless(functions: Record<string, FunctionObject>): ServerlessLike {
  return {
    serviceDir: '/nowhere',
    service: {
      service: 'svc',
      provider: { name: 'aws', stage: 'dev' },
      getAllFunctions: () => Object.keys(functions),
      getFunction: (k) => functions[k],
    },
  }
}
const consumer = (etcdQueue: Record<string, unknown>): FunctionObject => ({ handler: 'h.worker', events: [{ etcdQueue }] })

describe('etcdQueue events', () => {
  it('become subscriptions with every queue setting, retry back-off included', () => {
    const subs = queueSubscriptions(
      serverless({ worker: consumer({ queue: 'jobs', batchSize: 5, maxReceives: 3, retryDelay: 2, maxRetryDelay: 60 }) }),
    )
    expect(subs).toEqual([
      {
        function: 'svc-dev-worker',
        functionKey: 'worker',
        queue: 'jobs',
        priority: false,
        batchSize: 5,
        visibilityTimeout: undefined,
        maxReceives: 3,
        deadLetterQueue: undefined,
        retryDelay: 2,
        maxRetryDelay: 60,
        concurrency: undefined,
      },
    ])
  })

  it('are refused, naming the functions, when one queue is read as a Queue and as a PriorityQueue', () => {
    const config = serverless({ a: consumer({ queue: 'jobs' }), b: consumer({ queue: 'jobs', priority: true }) })
    expect(() => queueSubscriptions(config)).toThrow(/function a reads "jobs" as a Queue but function b as a PriorityQueue/)
  })

  it('are refused when a queue is nested in another subscribed queue (whose consumers would take its messages)', () => {
    const config = serverless({ all: consumer({ queue: 'orders' }), eu: consumer({ queue: 'orders/eu' }) })
    expect(() => queueSubscriptions(config)).toThrow(InvalidArgumentError)
    expect(() => queueSubscriptions(config)).toThrow(/queue "orders\/eu" \(function eu\) is nested in queue "orders" \(function all\)/)
    // Siblings that only share a beginning are fine: "orders2" is not under "orders/".
    expect(() => queueSubscriptions(serverless({ a: consumer({ queue: 'orders' }), b: consumer({ queue: 'orders2' }) }))).not.toThrow()
  })

  it('are refused when a dead-letter queue overlaps its own queue; the default dlq/<queue> and a dead-letter queue read by another function are fine', () => {
    expect(() => queueSubscriptions(serverless({ w: consumer({ queue: 'jobs', deadLetterQueue: 'jobs/dead' }) }))).toThrow(
      /deadLetterQueue "jobs\/dead" overlaps its queue "jobs"/,
    )
    expect(() =>
      queueSubscriptions(serverless({ w: consumer({ queue: 'jobs' }), inspector: consumer({ queue: 'dlq/jobs' }) })),
    ).not.toThrow()
    expect(() => checkQueueNames([{ function: 'f', queue: 'q', maxReceives: Infinity, deadLetterQueue: 'q/x' }])).not.toThrow() // dead-lettering off
  })
})
