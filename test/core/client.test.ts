import { createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  Barrier,
  ConfigurationError,
  EtcdUnavailableError,
  IdempotencyStore,
  LockedError,
  Mutex,
  PriorityQueue,
  Queue,
  RateLimiter,
  Session,
  SessionExpiredError,
  createClient,
  resolveClientOptions,
  sharedClient,
  type ClientOptions,
} from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { freePort, startEtcd } from '../../testing/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd()

afterEach(() => {
  vi.unstubAllEnvs()
})

/** The ConfigurationError `fn` throws (fails the test if it throws anything else or nothing). */
function configError(fn: () => unknown): ConfigurationError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigurationError)
    return err as ConfigurationError
  }
  throw new Error('expected a ConfigurationError')
}

const resolve = (options: ClientOptions) => resolveClientOptions({ env: {}, ...options })

describe('client configuration', () => {
  it('takes endpoints from options: an array or a comma-separated string', () => {
    expect(resolve({ endpoints: ['http://a:2379', ' https://b:2380 '] }).etcd.hosts).toEqual(['http://a:2379', 'https://b:2380'])
    expect(resolve({ endpoints: 'http://a:2379,http://b:2379' }).etcd.hosts).toEqual(['http://a:2379', 'http://b:2379'])
  })

  it('reads ETCD_ENDPOINTS, falls back to ETCDCTL_ENDPOINTS, and prefers options', () => {
    expect(resolve({ env: { ETCD_ENDPOINTS: 'http://e:1' } }).etcd.hosts).toEqual(['http://e:1'])
    expect(resolve({ env: { ETCDCTL_ENDPOINTS: 'http://c:2' } }).etcd.hosts).toEqual(['http://c:2'])
    expect(resolve({ env: { ETCD_ENDPOINTS: 'http://e:1', ETCDCTL_ENDPOINTS: 'http://c:2' } }).etcd.hosts).toEqual(['http://e:1'])
    expect(resolve({ endpoints: 'http://o:3', env: { ETCD_ENDPOINTS: 'http://e:1' } }).etcd.hosts).toEqual(['http://o:3'])
    // etcdctl-style host:port without a scheme means http.
    expect(resolve({ env: { ETCDCTL_ENDPOINTS: '127.0.0.1:2379' } }).etcd.hosts).toEqual(['http://127.0.0.1:2379'])
    // An explicit default port is kept (URL would drop it).
    expect(resolve({ endpoints: 'https://etcd.example:443' }).etcd.hosts).toEqual(['https://etcd.example:443'])
  })

  it('reads process.env by default', () => {
    vi.stubEnv('ETCD_ENDPOINTS', 'http://from-env:2379')
    vi.stubEnv('ETCD_NAMESPACE', 'app/')
    const { etcd: options, namespace } = resolveClientOptions()
    expect(options.hosts).toEqual(['http://from-env:2379'])
    expect(namespace).toBe('app/')
  })

  it('no endpoints anywhere → ConfigurationError naming ETCD_ENDPOINTS', () => {
    const err = configError(() => resolve({}))
    expect(err.setting).toBe('ETCD_ENDPOINTS')
    expect(err.message).toContain('ETCD_ENDPOINTS')
    expect(configError(() => resolve({ endpoints: ' , ' })).setting).toBe('endpoints')
    expect(configError(() => resolve({ endpoints: [] })).setting).toBe('endpoints')
  })

  it.each([
    ['http://', 'endpoints'],
    ['ftp://h:21', 'endpoints'],
    ['http://host-without-port', 'endpoints'],
    ['http://h:notaport', 'endpoints'],
    ['://', 'endpoints'],
  ])('malformed endpoint %s → ConfigurationError naming %s', (endpoint, settingName) => {
    const err = configError(() => resolve({ endpoints: endpoint }))
    expect(err.setting).toBe(settingName)
    expect(err.message).toContain(JSON.stringify(endpoint))
  })

  it('a malformed endpoint from the environment names the variable', () => {
    expect(configError(() => resolve({ env: { ETCD_ENDPOINTS: 'http://[oops' } })).setting).toBe('ETCD_ENDPOINTS')
    expect(configError(() => resolve({ env: { ETCDCTL_ENDPOINTS: 'http://[oops' } })).setting).toBe('ETCDCTL_ENDPOINTS')
  })

  it('non-string endpoints and namespace are ConfigurationErrors, not TypeErrors', () => {
    expect(configError(() => resolve({ endpoints: 42 as unknown as string })).setting).toBe('endpoints')
    expect(configError(() => resolve({ endpoints: [null] as unknown as string[] })).setting).toBe('endpoints')
    expect(configError(() => resolve({ endpoints: 'http://a:1', namespace: 7 as unknown as string })).setting).toBe('namespace')
  })

  it('an unreadable TLS file → ConfigurationError naming the setting and the path', () => {
    const base = { endpoints: 'https://h:2379' }
    const missing = '/nonexistent/ca.pem'
    const err = configError(() => resolve({ ...base, caFile: missing }))
    expect(err.setting).toBe('caFile')
    expect(err.message).toContain(missing)
    expect(configError(() => resolve({ ...base, env: { ETCD_CA_FILE: missing } })).setting).toBe('ETCD_CA_FILE')
    expect(configError(() => resolve({ ...base, env: { ETCDCTL_CACERT: missing } })).setting).toBe('ETCDCTL_CACERT')
    expect(configError(() => resolve({ ...base, certFile: tmpdir(), keyFile: tmpdir() })).setting).toBe('certFile') // a directory
    expect(configError(() => resolve({ ...base, env: { ETCD_KEY_FILE: missing } })).setting).toBe('ETCD_KEY_FILE')
  })

  it.each([0, -5, NaN, Infinity, 2 ** 31])('callTimeoutMs %s → ConfigurationError naming callTimeoutMs', (ms) => {
    expect(configError(() => resolve({ endpoints: 'http://a:1', callTimeoutMs: ms })).setting).toBe('callTimeoutMs')
  })

  it.each(['abc', '0', '-1', '5s'])('ETCD_CALL_TIMEOUT_MS=%s → ConfigurationError naming ETCD_CALL_TIMEOUT_MS', (value) => {
    const err = configError(() => resolve({ endpoints: 'http://a:1', env: { ETCD_CALL_TIMEOUT_MS: value } }))
    expect(err.setting).toBe('ETCD_CALL_TIMEOUT_MS')
  })

  it("a username without a password is a ConfigurationError; etcdctl's user:password form works", () => {
    expect(configError(() => resolve({ endpoints: 'http://a:1', username: 'root' })).setting).toBe('ETCD_PASSWORD')
    expect(resolve({ endpoints: 'http://a:1', env: { ETCDCTL_USER: 'root:secret' } }).etcd.auth).toEqual({
      username: 'root',
      password: 'secret',
    })
  })

  it('TLS files with http:// endpoints are a ConfigurationError', () => {
    expect(configError(() => resolve({ endpoints: 'http://a:1', caFile: '/etc/hostname' })).setting).toBe('ETCD_ENDPOINTS')
  })
})

describe('client against etcd', () => {
  it('ETCD_NAMESPACE puts every key under the prefix, and Mutex works inside it', async () => {
    const ns = `${uniqueName('ns')}/`
    const scoped = createClient({ env: { ETCD_ENDPOINTS: etcd.cluster.endpoints.join(','), ETCD_NAMESPACE: ns } })
    const raw = etcd.client
    try {
      await scoped.put('plain').value('v')
      expect(await raw.get(`${ns}plain`).string()).toBe('v')
      expect(await raw.get('plain').string()).toBe(null)

      const s1 = await Session.create(scoped, { ttl: 10 })
      const m1 = new Mutex(s1, 'L')
      await m1.lock()
      expect(m1.key).toBe(`L/${s1.leaseHex}`)
      const rawKeys = await raw.getAll().prefix(`${ns}L/`).keys()
      expect(rawKeys).toEqual([`${ns}L/${s1.leaseHex}`])

      // The same lock seen without the namespace is the same queue.
      const s2 = await Session.create(raw, { ttl: 10 })
      await expect(new Mutex(s2, `${ns}L`).tryLock()).rejects.toBeInstanceOf(LockedError)

      // A second namespaced waiter queues and gets it after unlock (its watches are namespaced too).
      const s3 = await Session.create(scoped, { ttl: 10 })
      const m3 = new Mutex(s3, 'L')
      const waiting = m3.lock()
      for (let i = 0; i < 200 && (await raw.getAll().prefix(`${ns}L/`).count()) < 2; i++) await sleep(25)
      expect(await raw.getAll().prefix(`${ns}L/`).count()).toBe(2)
      await m1.unlock()
      await waiting
      expect(m3.held).toBe(true)
      expect(await raw.getAll().prefix(`${ns}L/`).keys()).toEqual([`${ns}L/${s3.leaseHex}`])
      await m3.unlock()
      await Promise.all([s1.close(), s2.close(), s3.close()])
    } finally {
      scoped.close()
    }
  })

  it('a port nobody listens on → EtcdUnavailableError, not a hang', async () => {
    const client = createClient({ endpoints: `http://127.0.0.1:${await freePort()}`, callTimeoutMs: 1000 })
    try {
      const started = performance.now()
      await expect(keyspace(client).range('k')).rejects.toBeInstanceOf(EtcdUnavailableError)
      await expect(Session.create(client, { ttl: 5 })).rejects.toBeInstanceOf(EtcdUnavailableError)
      expect(performance.now() - started).toBeLessThan(10_000)
    } finally {
      client.close()
    }
  })

  it('a server that accepts but never answers → EtcdUnavailableError within the deadline, not a hang', async () => {
    const sockets: Socket[] = []
    const server = createServer((socket) => sockets.push(socket))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const { port } = server.address() as { port: number }
    const client = createClient({ endpoints: `http://127.0.0.1:${port}`, callTimeoutMs: 1000 })
    try {
      const started = performance.now()
      await expect(keyspace(client).txn([], [])).rejects.toBeInstanceOf(EtcdUnavailableError)
      await expect(Session.create(client, { ttl: 5 })).rejects.toBeInstanceOf(EtcdUnavailableError)
      expect(performance.now() - started).toBeLessThan(10_000)
      expect(sockets.length).toBeGreaterThan(0) // it really connected
    } finally {
      client.close()
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    }
  })

  it('after failures the next call against a live server works at once (no circuit breaker)', async () => {
    const cluster = await startEtcd()
    const client = createClient({ endpoints: cluster.endpoints, callTimeoutMs: 1000 })
    const ks = keyspace(client)
    try {
      await ks.txn([], [ks.put('k', 'before')])
      await cluster.stopMember(0)
      // etcd3's default breaker opens after 3 failures and then fails every call for 5 s.
      for (let i = 0; i < 4; i++) await expect(ks.range('k')).rejects.toBeInstanceOf(EtcdUnavailableError)
      await cluster.startMember(0)
      const res = await ks.range('k')
      expect(res.kvs[0].value.toString()).toBe('before')
    } finally {
      client.close()
      await cluster.stop()
    }
  })

  it('a lock wait does not hang when etcd goes away: it rejects once the session cannot be kept alive', async () => {
    const cluster = await startEtcd()
    const client = createClient({ endpoints: cluster.endpoints, callTimeoutMs: 1000 })
    try {
      const [s1, s2] = await Promise.all([Session.create(client, { ttl: 2 }), Session.create(client, { ttl: 2 })])
      const name = uniqueName('gone')
      await new Mutex(s1, name).lock()
      const waiter = new Mutex(s2, name)
      const waiting = waiter.lock()
      waiting.catch(() => {}) // asserted below; it may settle before the assertion is attached
      for (let i = 0; i < 200 && (await keyspace(client).range(`${name}/`, { prefix: true, countOnly: true })).count < 2n; i++)
        await sleep(25)
      const started = performance.now()
      await cluster.stopMember(0)
      await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError)
      expect(performance.now() - started).toBeLessThan(10_000)
      expect(waiter.held).toBe(false)
    } finally {
      client.close()
      await cluster.stop()
    }
  })

  it('with a dead and a live endpoint, calls go through on the live one', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`
    const client = createClient({ endpoints: [dead, ...etcd.cluster.endpoints], callTimeoutMs: 1000 })
    const ks = keyspace(client)
    const key = uniqueName('failover')
    try {
      for (let i = 0; i < 10; i++) await ks.txn([], [ks.put(key, String(i))])
      expect((await ks.range(key)).kvs[0].value.toString()).toBe('9')
    } finally {
      client.close()
    }
  })

  it('sharedClient() is one client per process, configured from the environment', async () => {
    vi.stubEnv('ETCD_ENDPOINTS', etcd.cluster.endpoints.join(','))
    const a = sharedClient()
    expect(sharedClient()).toBe(a)
    const key = uniqueName('shared')
    await a.put(key).value('x')
    expect(await etcd.client.get(key).string()).toBe('x')
    a.close()
    // Closed, it is replaced by a fresh one on the next call.
    const b = sharedClient()
    expect(b).not.toBe(a)
    expect(await b.get(key).string()).toBe('x')
    b.close()
  })

  it('sharedClient() reads its settings on first use: primitives built before ETCD_ENDPOINTS is set work once it is', async () => {
    // As a handler module imported by a test file before beforeAll() starts etcd.
    vi.stubEnv('ETCD_ENDPOINTS', undefined)
    vi.stubEnv('ETCDCTL_ENDPOINTS', undefined)
    const client = sharedClient()
    const name = uniqueName('lazy')
    const queue = new Queue(client, `${name}/q`)
    const urgent = new PriorityQueue(client, `${name}/pq`)
    const barrier = new Barrier(client, `${name}/b`)
    const limiter = new RateLimiter(client, `${name}/rl`, { rate: 10, per: 1000 })
    const store = new IdempotencyStore(client, `${name}/idem`)
    try {
      // Used with nothing set: the first call says what is missing; nothing was created.
      const err = await queue.enqueue('too early').catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ConfigurationError)
      expect((err as ConfigurationError).setting).toBe('ETCD_ENDPOINTS')
      vi.stubEnv('ETCD_ENDPOINTS', etcd.cluster.endpoints.join(','))
      await queue.enqueue('first')
      await urgent.enqueue('urgent', 0)
      expect(await barrier.hold()).toBeGreaterThan(0n)
      expect((await limiter.decide()).admitted).toBe(true)
      expect(store).toBeInstanceOf(IdempotencyStore)
      expect(Object.values(await etcd.client.getAll().prefix(`${name}/q/`).strings())).toEqual(['first'])
      expect(sharedClient()).toBe(client)
    } finally {
      await limiter.close()
      client.close()
    }
  })

  it('a shared client closed before its first use creates no connection, and its waits end', async () => {
    vi.stubEnv('ETCD_ENDPOINTS', undefined)
    vi.stubEnv('ETCDCTL_ENDPOINTS', undefined)
    const client = sharedClient()
    const queue = new Queue(client, uniqueName('lazy-closed'))
    client.close() // with no endpoints: nothing to read, nothing thrown
    // (Compared by identity: a matcher would inspect the unused client's fields.)
    expect(sharedClient() === client).toBe(false)
    sharedClient().close()
    vi.stubEnv('ETCD_ENDPOINTS', etcd.cluster.endpoints.join(','))
    // The primitive built on it answers as one on a closed client does, instead of connecting.
    const err = await queue.receive({ max: 1, signal: AbortSignal.timeout(5_000) }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(/client was already closed/)
  })
})
