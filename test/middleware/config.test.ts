/**
 * etcdConfig (middleware/config.ts), issue 28: configuration on `context.etcd.config`, zero
 * requests on a warm invocation with a live watch, currency proved after a freeze, required keys
 * as a 500 that tells the caller nothing.
 */
import middy from '@middy/core'
import httpErrorHandler from '@middy/http-error-handler'
import type { Context } from 'aws-lambda'
import { describe, expect, it } from 'vitest'
import { ConfigMissingError, InvalidArgumentError } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { etcdConfig, etcdPlugin, type ConfigContext, type EtcdEvent } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { uniqueName, until, useEtcd } from '../helpers.js'
import { measuredClient } from '../support/answer-sizes.js'
import { restEvent } from '../support/http-events.js'

const etcd = useEtcd(1)

interface Settings {
  greeting: string
  limits: { rps: number }
  flag?: boolean
}

async function seed(prefix: string, values: Record<string, unknown>): Promise<bigint> {
  const ks = keyspace(etcd.client)
  const res = await ks.txn(
    [],
    Object.entries(values).map(([k, v]) => ks.put(`${prefix}${k}`, JSON.stringify(v))),
  )
  return res.revision
}

/** A handler that returns what it was given; `seen` keeps each invocation's config and revision. */
function handlerOf(options: Parameters<typeof etcdConfig<Settings>>[0]) {
  const seen: { config: Readonly<Settings>; revision: bigint }[] = []
  type Ctx = ReturnType<typeof lambdaContext> & ConfigContext<Settings>
  const handler = middy<unknown, unknown, Error, Ctx>(async (_event: unknown, context: Ctx) => {
    seen.push({ config: context.etcd.config, revision: context.etcd.configRevision })
    return { statusCode: 200, body: context.etcd.config.greeting }
  }).use(etcdConfig<Settings>(options))
  return { invoke: () => handler({}, lambdaContext(5_000) as never), seen }
}

describe('etcdConfig', () => {
  it('puts the values on context.etcd.config; warm invocations make zero etcd requests, changes included', async () => {
    const prefix = `${uniqueName('mw-config')}/`
    await seed(prefix, { greeting: 'hello', limits: { rps: 5 } })
    const measured = measuredClient(etcd.cluster.endpoints)
    try {
      const { invoke, seen } = handlerOf({ prefix, parse: 'json', client: measured.client, required: ['greeting', 'limits'] })
      await invoke() // cold: the load
      expect(measured.sizes.requests).toBeGreaterThan(0)
      measured.sizes.reset()
      for (let i = 0; i < 50; i++) await invoke()
      expect(measured.sizes.requests).toBe(0)
      expect(seen.at(-1)!.config).toEqual({ greeting: 'hello', limits: { rps: 5 } })
      // One snapshot object per revision: invocations share it, nothing is parsed again.
      expect(seen.at(-1)!.config).toBe(seen[1].config)
      expect(Object.isFrozen(seen.at(-1)!.config)).toBe(true)

      const changed = await seed(prefix, { greeting: 'bonjour', flag: true })
      await until('an invocation to see the change', 10_000, async () => (await invoke(), seen.at(-1)!.revision >= changed))
      expect(seen.at(-1)!.config).toEqual({ greeting: 'bonjour', limits: { rps: 5 }, flag: true })
      expect(measured.sizes.requests).toBe(0)
    } finally {
      measured.client.close()
    }
  })

  it('parses each value once per change, not per invocation', async () => {
    const prefix = `${uniqueName('mw-parse')}/`
    await seed(prefix, { a: 1, b: 2 })
    const parsed: string[] = []
    const handler = middy(async (_event: unknown, context: Context & ConfigContext<{ a: number; b: number }>) => context.etcd.config).use(
      etcdConfig<{ a: number; b: number }>({
        prefix,
        client: etcd.client,
        parse: (raw, key) => {
          parsed.push(key)
          return Number(raw.toString())
        },
      }),
    )
    for (let i = 0; i < 20; i++) expect(await handler({}, lambdaContext(5_000) as never)).toEqual({ a: 1, b: 2 })
    expect(parsed.sort()).toEqual(['a', 'b'])
    await seed(prefix, { b: 3 })
    await until('the change', 10_000, async () => ((await handler({}, lambdaContext(5_000) as never)) as { b: number }).b === 3)
    for (let i = 0; i < 20; i++) await handler({}, lambdaContext(5_000) as never)
    expect(parsed.sort()).toEqual(['a', 'b', 'b'])
  })

  it('no invocation sees one key of a Txn without the other, while a writer changes both', async () => {
    const prefix = `${uniqueName('mw-txn')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}from`, '0'), ks.put(`${prefix}to`, '0')])
    const handler = middy(async (_event: unknown, context: Context & ConfigContext<{ from: number; to: number }>) => {
      const { from, to } = context.etcd.config
      return { from, to }
    }).use(etcdConfig<{ from: number; to: number }>({ prefix, parse: 'json', client: etcd.client, required: ['from', 'to'] }))
    let writing = true
    const writer = (async () => {
      for (let i = 1; writing; i++) await ks.txn([], [ks.put(`${prefix}from`, String(i)), ks.put(`${prefix}to`, String(i))])
    })()
    const torn: string[] = []
    let last = 0
    for (let i = 0; i < 500 || last === 0; i++) {
      const { from, to } = (await handler({}, lambdaContext(5_000) as never)) as { from: number; to: number }
      if (from !== to) torn.push(`${from}/${to}`)
      expect(from).toBeGreaterThanOrEqual(last) // never back in time
      last = from
      await new Promise((r) => setImmediate(r))
    }
    writing = false
    await writer
    expect(torn).toEqual([])
    expect(last).toBeGreaterThan(0)
  })

  it('after a freeze longer than maxStaleMs, one Range proves the values current before the handler runs', async () => {
    const prefix = `${uniqueName('mw-thaw')}/`
    await seed(prefix, { greeting: 'hi', limits: { rps: 1 } })
    const measured = measuredClient(etcd.cluster.endpoints)
    try {
      const { invoke, seen } = handlerOf({ prefix, parse: 'json', client: measured.client, maxStaleMs: 1_000 })
      await invoke()
      // The process as a Lambda sees it between invocations: no tick for 1.5 s.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1_500)
      measured.sizes.reset()
      await invoke()
      expect(measured.sizes.requests).toBe(1)
      expect(seen.at(-1)!.config.greeting).toBe('hi')
      await invoke()
      expect(measured.sizes.requests).toBe(1)
    } finally {
      measured.client.close()
    }
  })

  it('required keys missing: ConfigMissingError naming them; over HTTP a 500 that does not expose them; the handler never ran', async () => {
    const prefix = `${uniqueName('mw-required')}/`
    await seed(prefix, { greeting: 'hello' })
    const { invoke, seen } = handlerOf({ prefix, parse: 'json', client: etcd.client, required: ['greeting', 'limits'] })
    const err = await invoke().catch((e) => e)
    expect(err).toBeInstanceOf(ConfigMissingError)
    expect((err as ConfigMissingError).missing).toEqual(['limits'])
    expect((err as Error).message).toMatch(/required configuration missing .*"limits".*middy-etcd config set/)
    expect(seen).toEqual([])

    const events: EtcdEvent[] = []
    const http = middy(async () => ({ statusCode: 200, body: 'ran' }), etcdPlugin())
      .use(httpErrorHandler({ logger: false }))
      .use(etcdConfig({ prefix, client: etcd.client, required: ['limits'], onEvent: (e) => events.push(e) }))
    const answer = (await http(restEvent(), lambdaContext(5_000) as never)) as { statusCode: number; body: string }
    expect(answer.statusCode).toBe(500)
    expect(String(answer.body ?? '')).not.toMatch(/limits/)
    // Put in place, the next invocation runs, and the change was an event.
    await seed(prefix, { limits: { rps: 2 } })
    await until(
      'the handler to run',
      10_000,
      async () => ((await http(restEvent(), lambdaContext(5_000) as never)) as { body: string }).body === 'ran',
    )
    expect(events.some((e) => e.primitive === 'config' && e.type === 'changed' && e.name === prefix)).toBe(true)
  })

  it('refuses bad options when it is built, naming the option', () => {
    expect(() => etcdConfig({ prefix: '' })).toThrow(InvalidArgumentError)
    expect(() => etcdConfig({ prefix: '' })).toThrow(/etcdConfig: option `prefix`: prefix must be a non-empty string/)
    expect(() => etcdConfig({ prefix: 'p/', parse: 'yaml' as never })).toThrow(
      /option `parse`: parse must be 'json', 'string' or a function/,
    )
    expect(() => etcdConfig({ prefix: 'p/', maxStaleMs: -1 })).toThrow(/option `maxStaleMs` must be an integer/)
    expect(() => etcdConfig({ prefix: 'p/', required: [''] as never })).toThrow(/option `required` must be an array of non-empty strings/)
    expect(() => etcdConfig({ prefix: 'p/', maxBytes: 0 })).toThrow(/option `maxBytes`: maxBytes must be a whole number of bytes/)
    expect(() => etcdConfig({ prefix: 'p/', ttl: 3 } as never)).toThrow(/unknown option `ttl`/)
  })
})
