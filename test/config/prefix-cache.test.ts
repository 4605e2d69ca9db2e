/**
 * PrefixCache (lib/config/prefix-cache.ts), issue 28: every key under a prefix at one revision,
 * kept current by a watch, proved current after a freeze, against a real etcd.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  ConfigParseError,
  ConfigStaleError,
  createClient,
  ConfigTooLargeError,
  InvalidArgumentError,
  InvalidStateError,
  PrefixCache,
  WatchLostError,
  type ConfigEvent,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { CONFIG_PAGE_BYTES } from '../../lib/limits.js'
import { freeze, uniqueName, until, useEtcd } from '../helpers.js'
import { measuredClient } from '../support/answer-sizes.js'
import { tcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)
const caches: PrefixCache<unknown>[] = []
const workers: Worker[] = []
const proxies: TcpProxy[] = []
afterEach(async () => {
  for (const c of caches.splice(0)) c.close()
  for (const w of workers.splice(0)) {
    w.signal('SIGCONT')
    await w.kill()
  }
  for (const p of proxies.splice(0)) await p.close()
})

function open<T = string>(...args: ConstructorParameters<typeof PrefixCache<T>>): PrefixCache<T> {
  const cache = new PrefixCache<T>(...args)
  caches.push(cache as PrefixCache<unknown>)
  return cache
}

/** Puts `count` keys `<prefix><%04d>` with values of `size` bytes, 100 per Txn. */
async function fill(prefix: string, count: number, size: number, tag = 'v'): Promise<void> {
  const ks = keyspace(etcd.client)
  for (let i = 0; i < count; i += 100) {
    const ops = []
    for (let j = i; j < Math.min(count, i + 100); j++)
      ops.push(ks.put(`${prefix}${String(j).padStart(4, '0')}`, `${tag}${j}:`.padEnd(size, 'x')))
    await ks.txn([], ops)
  }
}

describe('PrefixCache: one revision', () => {
  it('loads 1,000 keys at one revision, in pages of bounded size, equal to a read at that revision', async () => {
    const prefix = `${uniqueName('cfg-load')}/`
    await fill(prefix, 1000, 1000)
    const ks = keyspace(etcd.client)
    // A writer changes keys while the cache loads: the pages must all still read one revision.
    let writing = true
    const writer = (async () => {
      for (let i = 0; writing; i++) await ks.txn([], [ks.put(`${prefix}${String(i % 1000).padStart(4, '0')}`, `w${i}`)])
    })()
    const measured = measuredClient(etcd.cluster.endpoints)
    try {
      const cache = open(measured.client, prefix)
      await cache.ready
      // Before any watch answer can be applied (they come in later I/O callbacks): the load itself.
      const loaded = cache.snapshot()
      const pages = measured.sizes.requests
      writing = false
      await writer
      const atRevision = await ks.range(prefix, { prefix: true, revision: loaded.revision })
      expect(atRevision.kvs.length).toBe(1000)
      expect(Object.keys(loaded.values).length).toBe(1000)
      for (const kv of atRevision.kvs) expect(loaded.values[kv.key.slice(prefix.length)]).toBe(kv.value.toString())
      // More than one page, and none far above the planned page size.
      expect(pages).toBeGreaterThan(1)
      expect(measured.sizes.largest).toBeLessThan(CONFIG_PAGE_BYTES + 256 * 1024)
      // The watch then brings it to what etcd holds now.
      const now = await ks.range(prefix, { prefix: true })
      await until('the cache to reach the last write', 10_000, () => cache.revision >= now.revision)
      for (const kv of now.kvs) expect(cache.get(kv.key.slice(prefix.length))).toBe(kv.value.toString())
    } finally {
      measured.client.close()
    }
  })

  it('never shows one key of a Txn without the other, and changes arrive in order', async () => {
    const prefix = `${uniqueName('cfg-txn')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}a`, '0'), ks.put(`${prefix}b`, '0')])
    const cache = open<number>(etcd.client, prefix, { parse: 'json' })
    await cache.ready
    const torn: string[] = []
    const seenA: number[] = []
    const check = (where: string) => {
      const { values } = cache.snapshot()
      if (values.a !== values.b) torn.push(`${where}: a=${values.a} b=${values.b}`)
    }
    cache.onChange((event: ConfigEvent<number>) => {
      check('onChange')
      const a = event.changes.find((c) => c.key === 'a')
      if (a?.value !== undefined) seenA.push(a.value)
    })
    let reading = true
    let reads = 0
    const reader = (async () => {
      for (; reading; reads++) {
        check('reader')
        expect(cache.get('a')).toBe(cache.get('b'))
        await new Promise((r) => setImmediate(r))
      }
    })()
    const WRITES = 300
    for (let i = 1; i <= WRITES; i++) await ks.txn([], [ks.put(`${prefix}a`, String(i)), ks.put(`${prefix}b`, String(i))])
    await until('the last Txn to arrive', 10_000, () => cache.get('a') === WRITES)
    reading = false
    await reader
    expect(torn).toEqual([])
    expect(reads).toBeGreaterThan(100)
    expect(cache.get('b')).toBe(WRITES)
    // In order: each answer's value is later than the one before (answers may carry several revisions).
    expect(seenA.length).toBeGreaterThan(0)
    for (let i = 1; i < seenA.length; i++) expect(seenA[i]).toBeGreaterThan(seenA[i - 1])
    expect(seenA.at(-1)).toBe(WRITES)
  })
})

describe('PrefixCache: requests', () => {
  it('serves warm reads with zero requests while the watch is live, changes included', async () => {
    const prefix = `${uniqueName('cfg-zero')}/`
    await fill(prefix, 10, 20)
    const measured = measuredClient(etcd.cluster.endpoints)
    try {
      const cache = open(measured.client, prefix)
      await cache.ready
      await until('the watch to attach', 5_000, async () => (await cache.current({ maxStaleMs: 30_000 })) && true)
      measured.sizes.reset()
      for (let i = 0; i < 100; i++) await cache.current({ maxStaleMs: 30_000 })
      const ks = keyspace(etcd.client)
      await ks.txn([], [ks.put(`${prefix}0003`, 'changed')])
      await until('the change to arrive', 5_000, () => cache.get('0003') === 'changed')
      for (let i = 0; i < 100; i++) expect((await cache.current({ maxStaleMs: 30_000 })).values['0003']).toBe('changed')
      expect(measured.sizes.requests).toBe(0)
    } finally {
      measured.client.close()
    }
  })

  it('after a blocked event loop (a freeze as the process sees it), proves currency with one Range before serving', async () => {
    const prefix = `${uniqueName('cfg-block')}/`
    await fill(prefix, 5, 20)
    const measured = measuredClient(etcd.cluster.endpoints)
    try {
      const cache = open(measured.client, prefix)
      await cache.ready
      await cache.current({ maxStaleMs: 1_000 })
      // 1.5 s with no tick: as a Lambda sees its freeze when it thaws.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1_500)
      measured.sizes.reset()
      const snapshot = await cache.current({ maxStaleMs: 1_000 })
      expect(measured.sizes.requests).toBe(1)
      expect(snapshot.values['0002']).toBe('v2:'.padEnd(20, 'x'))
      // Proved: the next read is free again.
      await cache.current({ maxStaleMs: 1_000 })
      expect(measured.sizes.requests).toBe(1)
    } finally {
      measured.client.close()
    }
  })
})

describe('PrefixCache: freezes, compactions, a closed client', () => {
  it('a child frozen (SIGSTOP) while keys change serves the changes after SIGCONT, within maxStaleMs', async () => {
    const prefix = `${uniqueName('cfg-freeze')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}mode`, 'before'), ks.put(`${prefix}gone`, 'x')])
    const w = await Worker.start(etcd.cluster.endpoints, '', { script: 'config-worker.ts' })
    workers.push(w)
    await w.request({ op: 'open', prefix }, 'opened')
    expect((await w.request({ op: 'current', maxStaleMs: 60_000 }, 'current')).values).toEqual({ mode: 'before', gone: 'x' })
    await freeze(w.pid)
    const changed = await ks.txn([], [ks.put(`${prefix}mode`, 'during'), ks.deleteOp(`${prefix}gone`), ks.put(`${prefix}new`, 'n')])
    await new Promise((r) => setTimeout(r, 1_500))
    w.signal('SIGCONT')
    const after = await w.request({ op: 'current', maxStaleMs: 500 }, 'current')
    expect(after.values).toEqual({ mode: 'during', new: 'n' })
    expect(BigInt(after.revision)).toBeGreaterThanOrEqual(changed.revision)
  })

  it('a compaction past the revision of a cut-off watch: one full reload, and an event that says so', async () => {
    const prefix = `${uniqueName('cfg-compact')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}a`, '1'), ks.put(`${prefix}b`, '1')])
    const proxy = await tcpProxy(etcd.cluster.endpoints[0])
    proxies.push(proxy)
    const client = etcd.newClient([proxy.endpoint])
    const cache = open(client, prefix)
    await cache.ready
    const events: ConfigEvent<string>[] = []
    cache.onChange((e) => events.push(e))
    await until('the watch to attach', 5_000, async () => (await cache.current({ maxStaleMs: 30_000 })) && true)
    proxy.cut()
    // Changes, then a compaction past them: the watch can no longer resume from its revision.
    await ks.txn([], [ks.put(`${prefix}a`, '2'), ks.deleteOp(`${prefix}b`)])
    const last = await ks.txn([], [ks.put(`${prefix}c`, '2')])
    await etcd.client.kv.compact({ revision: String(last.revision), physical: true })
    proxy.heal()
    await until('the reload', 15_000, () => events.some((e) => e.type === 'reload'))
    const reloads = events.filter((e) => e.type === 'reload')
    expect(reloads.length).toBe(1)
    expect(reloads[0]).toMatchObject({ type: 'reload', reason: 'compacted' })
    expect(reloads[0].revision).toBeGreaterThanOrEqual(last.revision)
    expect(cache.snapshot().values).toEqual({ a: '2', c: '2' })
    expect(new Set(reloads[0].changes.map((c) => `${c.key}:${c.deleted}`))).toEqual(new Set(['a:false', 'b:true', 'c:false']))
    // Current again: it serves, and later changes come from the new watch.
    expect((await cache.current({ maxStaleMs: 5_000 })).values.a).toBe('2')
    await ks.txn([], [ks.put(`${prefix}a`, '3')])
    await until('a change after the reload', 10_000, () => cache.get('a') === '3')
  })

  it('a partition of its member: current() past maxStaleMs fails with ConfigStaleError (no hang); healed, the cache is current again, changes included', async () => {
    const prefix = `${uniqueName('cfg-partition')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}a`, '1')])
    const proxy = await tcpProxy(etcd.cluster.endpoints[0])
    proxies.push(proxy)
    const client = createClient({ endpoints: [proxy.endpoint], callTimeoutMs: 1_000 })
    try {
      const cache = open(client, prefix)
      await cache.ready
      await until('the watch to attach', 5_000, async () => (await cache.current({ maxStaleMs: 30_000 })) && true)
      proxy.cut() // a black hole: the stream still looks alive to the client
      await ks.txn([], [ks.put(`${prefix}a`, '2')])
      // Past maxStaleMs, the cache must prove itself and cannot: a typed error, not the old value.
      const err = await cache.current({ maxStaleMs: 0 }).catch((e) => e)
      expect(err).toBeInstanceOf(ConfigStaleError)
      expect((err as ConfigStaleError).maxStaleMs).toBe(0)
      expect((err as Error).message).toMatch(/could not prove the configuration current within maxStaleMs \(0 ms\)/)
      proxy.heal()
      const healed = await until('a proved snapshot after the heal', 20_000, () =>
        cache.current({ maxStaleMs: 0 }).then(
          (s) => (s.values.a === '2' ? s : undefined),
          () => undefined,
        ),
      )
      expect(healed.revision).toBeGreaterThan(0n)
      await ks.txn([], [ks.put(`${prefix}a`, '3')])
      await until('a change after the heal, from the watch', 10_000, () => cache.get('a') === '3')
    } finally {
      client.close()
    }
  })

  it('a closed client: current() fails with WatchLostError (client-closed) at once, and a new cache on it never hangs', async () => {
    const prefix = `${uniqueName('cfg-closed')}/`
    await fill(prefix, 3, 10)
    const client = etcd.newClient()
    const cache = open(client, prefix)
    await cache.ready
    client.close()
    const err = await cache.current({ maxStaleMs: 30_000 }).catch((e) => e)
    expect(err).toBeInstanceOf(WatchLostError)
    expect((err as WatchLostError).reason).toBe('client-closed')
    expect(() => cache.get('0001')).toThrow(WatchLostError)
    const late = open(client, prefix)
    await expect(late.ready).rejects.toBeInstanceOf(WatchLostError)
  })
})

describe('PrefixCache: bad input', () => {
  it('refuses an empty prefix, an unknown parse, a bad maxBytes or maxStaleMs, naming the setting', async () => {
    expect(() => new PrefixCache(etcd.client, '')).toThrow(InvalidArgumentError)
    expect(() => new PrefixCache(etcd.client, '')).toThrow(/prefix must be a non-empty string/)
    expect(() => new PrefixCache(etcd.client, 'p/', { parse: 'yaml' as never })).toThrow(/parse must be 'json', 'string' or a function/)
    expect(() => new PrefixCache(etcd.client, 'p/', { maxBytes: 0 })).toThrow(/maxBytes must be a whole number of bytes/)
    expect(() => new PrefixCache({} as never, 'p/')).toThrow(/needs an etcd client/)
    const cache = open(etcd.client, `${uniqueName('cfg-bad')}/`)
    await cache.ready
    await expect(cache.current({ maxStaleMs: -1 })).rejects.toThrow(/maxStaleMs must be a whole number of milliseconds/)
    await expect(cache.current(undefined as never)).rejects.toThrow(/maxStaleMs/)
  })

  it('its signal closes it (later reads are an InvalidStateError); a signal given to current() gives up that proof only', async () => {
    const prefix = `${uniqueName('cfg-signal')}/`
    await fill(prefix, 2, 10)
    const controller = new AbortController()
    const cache = open(etcd.client, prefix, { signal: controller.signal })
    await cache.ready
    // An aborted proof: its reason, and the cache still serves.
    const reason = new Error('given up')
    const aborted = AbortSignal.abort(reason)
    await expect(cache.current({ maxStaleMs: 0, signal: aborted })).rejects.toBe(reason)
    expect((await cache.current({ maxStaleMs: 0 })).values['0001']).toBe('v1:'.padEnd(10, 'x'))
    controller.abort()
    expect(cache.usable).toBe(false)
    await expect(cache.current({ maxStaleMs: 30_000 })).rejects.toBeInstanceOf(InvalidStateError)
    expect(() => cache.get('0001')).toThrow(/is closed; create a new one/)
    // Aborted before it starts: the load never runs.
    const never = open(etcd.client, prefix, { signal: AbortSignal.abort(reason) })
    await expect(never.ready).rejects.toBe(reason)
  })

  it('a prefix over maxBytes fails the load with ConfigTooLargeError naming maxBytes and the fix; so does a change that crosses it', async () => {
    const prefix = `${uniqueName('cfg-big')}/`
    await fill(prefix, 20, 1000)
    const cache = open(etcd.client, prefix, { maxBytes: 10_000 })
    const err = await cache.ready.catch((e) => e)
    expect(err).toBeInstanceOf(ConfigTooLargeError)
    expect((err as ConfigTooLargeError).limit).toBe(10_000)
    expect((err as Error).message).toMatch(/maxBytes \(10000 bytes.*Raise maxBytes, or keep less under the prefix/)
    await expect(cache.current({ maxStaleMs: 1000 })).rejects.toBeInstanceOf(ConfigTooLargeError)

    const growing = `${uniqueName('cfg-grow')}/`
    await fill(growing, 5, 1000)
    const fits = open(etcd.client, growing, { maxBytes: 10_000 })
    await fits.ready
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${growing}huge`, 'y'.repeat(8_000))])
    await until('the change to be refused', 10_000, () =>
      fits.current({ maxStaleMs: 30_000 }).then(
        () => false,
        (e) => e instanceof ConfigTooLargeError,
      ),
    )
    // Nothing of the refused answer was applied.
    expect(() => fits.get('huge')).toThrow(ConfigTooLargeError)
  })

  it('a value that does not parse is a ConfigParseError naming the key and the fix, for every read that includes it', async () => {
    const prefix = `${uniqueName('cfg-parse')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}good`, '{"n":1}'), ks.put(`${prefix}bad`, '{not json')])
    const cache = open<{ n: number }>(etcd.client, prefix, { parse: 'json' })
    await cache.ready
    expect(cache.get('good')).toEqual({ n: 1 })
    const err = (() => {
      try {
        cache.get('bad')
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(ConfigParseError)
    expect((err as ConfigParseError).key).toBe('bad')
    expect((err as Error).message).toMatch(/"bad".*does not parse as JSON.*Fix the value in etcd \(middy-etcd config set/)
    await expect(cache.current({ maxStaleMs: 30_000 })).rejects.toBeInstanceOf(ConfigParseError)
    // Fixed in etcd: served again.
    await ks.txn([], [ks.put(`${prefix}bad`, '{"n":2}')])
    await until('the fix to arrive', 10_000, () => {
      try {
        return cache.get('bad')?.n === 2
      } catch {
        return false
      }
    })
    expect(cache.entries()).toEqual([
      ['bad', { n: 2 }],
      ['good', { n: 1 }],
    ])
    expect((await cache.current({ maxStaleMs: 30_000 })).values.bad).toEqual({ n: 2 })
    // A parse function's error says so too; its result is what is served.
    const byFunction = open<number>(etcd.client, prefix, {
      parse: (raw, key) => {
        if (key === 'good') throw new Error('not this one')
        return raw.length
      },
    })
    await byFunction.ready
    expect(byFunction.get('bad')).toBe(7)
    expect(() => byFunction.get('good')).toThrow(/with the parse function: not this one/)
  })
})

describe('PrefixCache: a member restart', () => {
  it('etcd down: current() past maxStaleMs is a ConfigStaleError; restarted, the watch comes back and serves what was written after', async () => {
    const prefix = `${uniqueName('cfg-restart')}/`
    const ks = keyspace(etcd.client)
    await ks.txn([], [ks.put(`${prefix}a`, '1')])
    const client = createClient({ endpoints: etcd.cluster.endpoints, callTimeoutMs: 1_000 })
    try {
      const cache = open(client, prefix)
      await cache.ready
      await until('the watch to attach', 5_000, async () => (await cache.current({ maxStaleMs: 30_000 })) && true)
      await etcd.cluster.stopMember(0)
      await expect(cache.current({ maxStaleMs: 0 })).rejects.toBeInstanceOf(ConfigStaleError)
      // Within its bound the cache still serves what it has: it was current a moment ago.
      expect((await cache.current({ maxStaleMs: 30_000 })).values.a).toBe('1')
      await etcd.cluster.startMember(0)
      await until('etcd to take writes again', 20_000, () =>
        ks.txn([], [ks.put(`${prefix}a`, '2')]).then(
          () => true,
          () => false,
        ),
      )
      await until('the change to arrive after the restart', 20_000, () => cache.get('a') === '2')
      expect((await cache.current({ maxStaleMs: 0 })).values).toEqual({ a: '2' })
    } finally {
      client.close()
    }
  })
})
