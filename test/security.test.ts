/**
 * Security: TLS with server and client certificates (options and environment, a
 * wrong CA), RBAC limited to one prefix (our primitives work inside it with ETCD_NAMESPACE,
 * and cannot take or break locks outside it), and no secret in errors, events, logs or the
 * CLI's --json output.
 */
import { spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import middy from '@middy/core'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  createClient,
  Election,
  EtcdUnavailableError,
  MiddyEtcdError,
  Mutex,
  PermissionDeniedError,
  Queue,
  runSTM,
  Session,
  type EtcdClient,
} from '../lib/index.js'
import { keyspace } from '../lib/core/kv.js'
import { etcdLock, type EtcdEvent } from '../middleware/index.js'
import { uniqueName } from './helpers.js'
import { lambdaContext } from './lambda.js'
import { etcdctl, makeCerts, startMember, type Certs, type Member } from './support/secure-etcd.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const PASSWORD = 'app-S3cr3t-pw-7781'
const ROOT_PASSWORD = 'root-S3cr3t-pw-4410'

const clients: EtcdClient[] = []
function client(options: Parameters<typeof createClient>[0]) {
  const c = createClient(options)
  clients.push(c)
  return c
}
afterEach(() => {
  vi.unstubAllEnvs()
})
afterAll(() => {
  for (const c of clients.splice(0)) c.close()
})

/** "Does not hang": far beyond the call deadline, well within the test timeout. */
const HANG_BOUND_MS = 15_000

describe('TLS with client certificates', () => {
  let certs: Certs
  let etcd: Member
  beforeAll(async () => {
    certs = makeCerts()
    etcd = await startMember({ tls: certs })
  })
  afterAll(async () => {
    await etcd?.stop()
    if (certs) rmSync(certs.dir, { recursive: true, force: true })
  })

  async function lockRoundTrip(c: EtcdClient) {
    const session = await Session.create(c, { ttl: 5 })
    const m = new Mutex(session, uniqueName('tls'))
    await m.lock()
    expect(m.fence).toBeGreaterThan(0n)
    await m.unlock()
    await session.close()
  }

  it('connects with CA + client certificate given as options', async () => {
    await lockRoundTrip(
      client({ endpoints: etcd.endpoint, caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey, env: {} }),
    )
  })

  it('connects with ETCD_CA_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE and an https ETCD_ENDPOINTS', async () => {
    vi.stubEnv('ETCD_ENDPOINTS', etcd.endpoint)
    vi.stubEnv('ETCD_CA_FILE', certs.ca)
    vi.stubEnv('ETCD_CERT_FILE', certs.clientCert)
    vi.stubEnv('ETCD_KEY_FILE', certs.clientKey)
    vi.stubEnv('ETCD_NAMESPACE', '')
    await lockRoundTrip(client(undefined))
  })

  async function failsClearly(c: EtcdClient, mentions: RegExp) {
    const started = performance.now()
    const err = await Session.create(c, { ttl: 5 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(performance.now() - started).toBeLessThan(HANG_BOUND_MS)
    expect(err).toBeInstanceOf(EtcdUnavailableError)
    expect((err as Error).message).toMatch(mentions)
    return err as Error
  }

  it('a wrong CA fails within the deadline with an error that says the certificate is not trusted', async () => {
    const err = await failsClearly(
      client({
        endpoints: etcd.endpoint,
        caFile: certs.otherCa,
        certFile: certs.clientCert,
        keyFile: certs.clientKey,
        callTimeoutMs: 2000,
        env: {},
      }),
      /certificate/i,
    )
    // No key material in the message.
    expect(err.message).not.toMatch(/BEGIN|PRIVATE/)
    expect(err.message).not.toContain(readFileSync(certs.clientKey, 'utf8').split('\n')[1])
  })

  it('no client certificate (the server requires one) fails within the deadline', async () => {
    await failsClearly(client({ endpoints: etcd.endpoint, caFile: certs.ca, callTimeoutMs: 2000, env: {} }), /did not answer/)
  })

  it('plain http to the TLS port fails within the deadline', async () => {
    await failsClearly(client({ endpoints: etcd.endpoint.replace('https:', 'http:'), callTimeoutMs: 2000, env: {} }), /did not answer/)
  })
})

describe('auth: a role limited to /app/', () => {
  let etcd: Member
  /** The app user's client, namespaced to /app/ through ETCD_NAMESPACE. */
  let app: EtcdClient
  /** The app user's client without namespace. */
  let appRaw: EtcdClient
  let rootClient: EtcdClient

  beforeAll(async () => {
    etcd = await startMember()
    const ctl = (...args: string[]) => etcdctl(etcd.endpoint, args)
    ctl('user', 'add', `root:${ROOT_PASSWORD}`)
    ctl('user', 'grant-role', 'root', 'root')
    ctl('role', 'add', 'r')
    ctl('role', 'grant-permission', '--prefix=true', 'r', 'readwrite', '/app/')
    ctl('user', 'add', `app:${PASSWORD}`)
    ctl('user', 'grant-role', 'app', 'r')
    ctl('auth', 'enable')
    app = client({ env: { ETCD_ENDPOINTS: etcd.endpoint, ETCD_USERNAME: 'app', ETCD_PASSWORD: PASSWORD, ETCD_NAMESPACE: '/app/' } })
    appRaw = client({ endpoints: etcd.endpoint, username: 'app', password: PASSWORD, env: {} })
    rootClient = client({ endpoints: etcd.endpoint, username: 'root', password: ROOT_PASSWORD, env: {} })
  })
  afterAll(async () => {
    await etcd?.stop()
  })

  it('Mutex, Election, Queue (receive/ack) and STM work inside the namespace', async () => {
    const session = await Session.create(app, { ttl: 5 })
    const m = new Mutex(session, uniqueName('lock'))
    await m.lock()
    await m.unlock()

    const e = new Election(session, uniqueName('elect'))
    await e.campaign('me')
    expect((await e.leader()).value).toBe('me')
    await e.resign()

    const q = new Queue(app, uniqueName('queue'))
    await q.enqueue('job')
    const [msg] = await q.receive({ max: 1, visibilityTimeout: 5 })
    expect(msg.value).toBe('job')
    await q.ack(msg)

    const acct = uniqueName('acct')
    const { result } = await runSTM(app, async (stm) => {
      const v = Number((await stm.get(acct)) || '0')
      stm.put(acct, String(v + 1))
      return v + 1
    })
    expect(result).toBe(1)
    await session.close()

    // Everything landed under /app/ (root can see it; the app user wrote nothing elsewhere).
    const everything = await rootClient.getAll().keys()
    expect(everything.length).toBeGreaterThan(0)
    expect(everything.every((k) => k.startsWith('/app/'))).toBe(true)
  })

  it('leases need no key permission: the app user can grant a lease (etcd 3.4)', async () => {
    const session = await Session.create(appRaw, { ttl: 5 })
    expect(session.active).toBe(true)
    await session.close()
  })

  it('cannot take a lock outside its prefix: PermissionDeniedError, no key written', async () => {
    const session = await Session.create(appRaw, { ttl: 5 })
    const name = `/other/${uniqueName('lock')}`
    await expect(new Mutex(session, name).lock()).rejects.toBeInstanceOf(PermissionDeniedError)
    await expect(new Mutex(session, name).tryLock()).rejects.toBeInstanceOf(PermissionDeniedError)
    await expect(new Election(session, name).campaign('x')).rejects.toBeInstanceOf(PermissionDeniedError)
    await expect(new Queue(appRaw, name).enqueue('x')).rejects.toBeInstanceOf(PermissionDeniedError)
    await session.close()
    expect(await rootClient.getAll().prefix('/other/').keys()).toEqual([])
  })

  it('cannot break a lock held outside its prefix: neither delete its key nor revoke its lease', async () => {
    const holderSession = await Session.create(rootClient, { ttl: 10 })
    const name = `/other/${uniqueName('held')}`
    const held = new Mutex(holderSession, name)
    await held.lock()

    const ks = keyspace(appRaw)
    await expect(ks.del(held.key)).rejects.toBeInstanceOf(PermissionDeniedError)
    await expect(ks.del('/other/', { prefix: true })).rejects.toBeInstanceOf(PermissionDeniedError)
    // Adopting the holder's lease and revoking it: etcd checks write permission on its keys.
    const adopted = await Session.create(appRaw, { leaseId: holderSession.leaseId, ttl: 10 })
    await expect(adopted.close()).rejects.toBeInstanceOf(PermissionDeniedError)

    // Still held, by the same key.
    const owner = await keyspace(rootClient).range(`${name}/`, { prefix: true })
    expect(owner.kvs.map((kv) => kv.key)).toEqual([held.key])
    await held.unlock()
    await holderSession.close()
  })

  it('a wrong password fails with a typed error that does not contain the password', async () => {
    const wrong = 'wrong-S3cr3t-pw-0000'
    const c = client({ endpoints: etcd.endpoint, username: 'app', password: wrong, callTimeoutMs: 2000, env: {} })
    const err = await Session.create(c, { ttl: 5 }).then(
      () => undefined,
      (e: unknown) => e as Error,
    )
    // Typed, and says what to fix. (Fails until lib/core/kv.ts toTypedError maps etcd3's
    // EtcdAuthenticationFailedError; see the reliability report.)
    expect(err).toBeInstanceOf(MiddyEtcdError)
    expect(String(err?.message)).toMatch(/authentication|password/i)
    expect(String(err?.message)).not.toContain(wrong)
    expect(JSON.stringify(err, Object.getOwnPropertyNames(err))).not.toContain(wrong)
  })

  it('middleware events and logs carry no password', async () => {
    const events: EtcdEvent[] = []
    const logged: unknown[] = []
    const spies = (['log', 'info', 'warn', 'error', 'debug'] as const).map((level) =>
      vi.spyOn(console, level).mockImplementation((...args) => void logged.push(args)),
    )
    try {
      const name = uniqueName('mw')
      const handler = middy(async (_e: unknown, context: any) => context.etcd.lock.fence.toString()).use(
        etcdLock({ name, client: app, ttl: 3, onEvent: (e) => events.push(e) }),
      )
      await handler({}, lambdaContext())
      // And one that fails (outside the prefix) through the same middleware.
      const denied = middy(async () => 'ran').use(
        etcdLock({ name: `/other/${name}`, client: appRaw, ttl: 3, onEvent: (e) => events.push(e) }),
      )
      const err = await denied({}, lambdaContext()).then(
        () => undefined,
        (e: unknown) => e as Error,
      )
      expect(err).toBeInstanceOf(PermissionDeniedError)
      expect(String(err?.message)).not.toContain(PASSWORD)
    } finally {
      for (const s of spies) s.mockRestore()
    }
    expect(events.map((e) => e.type)).toEqual(['acquired', 'released'])
    const text = JSON.stringify([events, logged], (_k, v) => (typeof v === 'bigint' ? v.toString() : v))
    expect(text).not.toContain(PASSWORD)
    expect(text).not.toContain(ROOT_PASSWORD)
  })

  it('the CLI (--json and errors) never prints the password', async () => {
    const run = (args: string[], env: Record<string, string>) =>
      new Promise<{ code: number | null; out: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
          cwd: root,
          env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoint, ETCD_CALL_TIMEOUT_MS: '', ...env },
        })
        let out = ''
        child.stdout.on('data', (d) => (out += d))
        child.stderr.on('data', (d) => (out += d))
        const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
        child.on('error', reject)
        child.on('close', (code) => {
          clearTimeout(killer)
          resolve({ code, out })
        })
      })
    const session = await Session.create(app, { ttl: 5 })
    const m = new Mutex(session, uniqueName('cli'))
    await m.lock()
    const ok = await run(['locks', '--json'], { ETCD_USERNAME: 'app', ETCD_PASSWORD: PASSWORD, ETCD_NAMESPACE: '/app/' })
    expect(ok.code).toBe(0)
    expect(ok.out).toContain(m.key)
    expect(ok.out).not.toContain(PASSWORD)
    const denied = await run(['locks', '/other/', '--json'], { ETCD_USERNAME: 'app', ETCD_PASSWORD: PASSWORD, ETCD_NAMESPACE: '' })
    expect(denied.code).not.toBe(0)
    expect(denied.out).not.toContain(PASSWORD)
    const wrong = await run(['locks', '--json'], { ETCD_USERNAME: 'app', ETCD_PASSWORD: 'wrong-S3cr3t-pw-0000', ETCD_NAMESPACE: '/app/' })
    expect(wrong.code).not.toBe(0)
    expect(wrong.out).not.toContain('wrong-S3cr3t-pw-0000')
    await m.unlock()
    await session.close()
  })
})
