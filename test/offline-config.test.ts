// The plugin's reading of `etcdQueue` events (offline/config.ts): the subscriptions it hands the
// dispatcher, with every queue setting, and the name checks it makes before anything runs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, PrefixCache } from '../lib/index.js'
import { checkQueueNames, queueSubscriptions, readConfig, type FunctionObject, type ServerlessLike } from '../offline/config.js'
import MiddyEtcdPlugin from '../offline/plugin.js'
import { uniqueName, useEtcd } from './helpers.js'

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

describe('custom.etcd.seed', () => {
  const etcd = useEtcd(1)
  const withSeed = (seed: unknown, serviceDir = '/nowhere'): ServerlessLike => ({
    serviceDir,
    service: {
      service: 'svc',
      custom: { etcd: { seed } },
      provider: { name: 'aws', stage: 'dev' },
      getAllFunctions: () => [],
      getFunction: () => ({}),
    },
  })
  const quietLog = Object.assign(() => {}, { notice() {}, info() {}, warning() {}, error() {}, verbose() {} })

  it('puts a map, or a JSON file of one, into etcd at start: what etcdConfig then serves', async () => {
    const prefix = `${uniqueName('seed')}/`
    const notices: string[] = []
    const log = Object.assign(() => {}, { ...quietLog, notice: (m: string) => notices.push(m) })
    const map = { [`${prefix}greeting`]: 'hello', [`${prefix}limits`]: { rps: 5 } }
    const plugin = new MiddyEtcdPlugin(withSeed(map), {}, { log })
    await plugin.seed(etcd.client, readConfig(withSeed(map)).seed)
    expect(notices.at(-1)).toMatch(/^etcd: seeded 2 keys from custom.etcd.seed in 1 transaction, revision \d+$/)

    const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-seed-'))
    try {
      writeFileSync(join(dir, 'seed.json'), JSON.stringify({ [`${prefix}flag`]: true }))
      const fromFile = withSeed('seed.json', dir)
      await new MiddyEtcdPlugin(fromFile, {}, { log }).seed(etcd.client, readConfig(fromFile).seed)
      expect(notices.at(-1)).toMatch(/seeded 1 key from custom.etcd.seed \(seed.json\)/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
    // A string as it is, any other value as its JSON text.
    const cache = new PrefixCache(etcd.client, prefix)
    try {
      await cache.ready
      expect(cache.snapshot().values).toEqual({ greeting: 'hello', limits: '{"rps":5}', flag: 'true' })
    } finally {
      cache.close()
    }
  })

  it('is refused when the config is read, before etcd starts: not a map, a missing or non-JSON file', () => {
    expect(() => readConfig(withSeed([1, 2]))).toThrow(/custom.etcd.seed must be an object of key → value/)
    expect(() => readConfig(withSeed('missing.json'))).toThrow(/custom.etcd.seed: cannot read \/nowhere\/missing.json/)
    const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-seed-'))
    try {
      writeFileSync(join(dir, 'bad.json'), '{oops')
      expect(() => readConfig(withSeed('bad.json', dir))).toThrow(/is not JSON .* it must hold an object of key → value/)
      expect(() => readConfig(withSeed({ '': 'x' }))).toThrow(InvalidArgumentError)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
