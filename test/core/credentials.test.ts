// createClient({ credentials }): etcd auth from a provider (a secret store) rather than plaintext
// settings, against a real etcd with auth enabled: fetched once, fetched again after etcd
// rejects a rotated password, typed errors for a provider that fails or returns nonsense.
import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigurationError, createClient, Mutex, Queue, Session, type Credentials, type EtcdClient } from '../../lib/index.js'
import { sleep, uniqueName } from '../helpers.js'
import { etcdctl, startMember, type Member } from '../support/secure-etcd.js'

const ROOT_PASSWORD = 'root-Cr3d-pw-1177'

describe('createClient with a credentials provider', () => {
  let etcd: Member
  const clients: EtcdClient[] = []
  const client = (options: Parameters<typeof createClient>[0]) => {
    const c = createClient({ callTimeoutMs: 3000, env: {}, ...options })
    clients.push(c)
    return c
  }
  const root = (...args: string[]) => etcdctl(etcd.endpoint, [`--user=root:${ROOT_PASSWORD}`, ...args])

  beforeAll(async () => {
    etcd = await startMember()
    etcdctl(etcd.endpoint, ['user', 'add', `root:${ROOT_PASSWORD}`])
    etcdctl(etcd.endpoint, ['user', 'grant-role', 'root', 'root'])
    etcdctl(etcd.endpoint, ['role', 'add', 'app'])
    etcdctl(etcd.endpoint, ['role', 'grant-permission', '--prefix=true', 'app', 'readwrite', 'cred/'])
    etcdctl(etcd.endpoint, ['auth', 'enable'])
  })
  afterAll(async () => {
    for (const c of clients) c.close()
    await etcd?.stop()
  })

  /** A user of role app with `password`. */
  const user = (password: string) => {
    const name = uniqueName('u')
    root('user', 'add', `${name}:${password}`)
    root('user', 'grant-role', name, 'app')
    return name
  }

  it('fetches once, then takes a lock, keeps a lease alive and queues with the token', async () => {
    const name = user('first-Pw-1')
    let calls = 0
    const c = client({ endpoints: etcd.endpoint, credentials: async () => (calls++, { username: name, password: 'first-Pw-1' }) })
    const session = await Session.create(c, { ttl: 5 })
    const mutex = new Mutex(session, `cred/${uniqueName('lock')}`)
    await mutex.lock()
    await new Queue(c, `cred/${uniqueName('q')}`).enqueue('x')
    await mutex.unlock()
    await session.close()
    expect(calls).toBe(1)
  })

  it('fetches again when etcd rejects a rotated password, and carries on', async () => {
    const name = user('old-Pw-2')
    let secret: Credentials = { username: name, password: 'old-Pw-2' }
    let calls = 0
    const c = client({ endpoints: etcd.endpoint, credentials: () => (calls++, secret) })
    await c.put(`cred/${name}`).value('1')
    expect(calls).toBe(1)
    // The secret rotates (after the provider's refresh interval): etcd drops the user's tokens.
    await sleep(5_500)
    const changed = spawnSync(
      'etcdctl',
      [`--endpoints=${etcd.endpoint}`, `--user=root:${ROOT_PASSWORD}`, 'user', 'passwd', name, '--interactive=false'],
      {
        input: 'new-Pw-2\n',
        encoding: 'utf8',
        env: { ...process.env, ETCDCTL_API: '3' },
      },
    )
    expect(changed.status, changed.stderr).toBe(0)
    secret = { username: name, password: 'new-Pw-2' }
    await c.put(`cred/${name}`).value('2')
    expect(calls).toBe(2)
    expect(await c.get(`cred/${name}`).string()).toBe('2')
  }, 20_000)

  it('a provider that fails is a ConfigurationError naming credentials, and is asked again next time', async () => {
    const name = user('third-Pw-3')
    let calls = 0
    const c = client({
      endpoints: etcd.endpoint,
      credentials: async () => {
        calls++
        if (calls === 1) throw new Error('secret store unreachable')
        return { username: name, password: 'third-Pw-3' }
      },
    })
    const err = await c
      .put('cred/x')
      .value('1')
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(err).toBeInstanceOf(ConfigurationError)
    expect(err).toMatchObject({ setting: 'credentials', message: expect.stringContaining('secret store unreachable') })
    await c.put(`cred/${name}`).value('ok')
    expect(calls).toBe(2)
  })

  it('refuses a provider that returns no password, and a provider beside a username', async () => {
    const c = client({ endpoints: etcd.endpoint, credentials: async () => ({ username: 'x' }) as Credentials })
    await expect(c.put('cred/y').value('1')).rejects.toThrow(/must return \{ username, password \}/)
    expect(() =>
      createClient({
        endpoints: etcd.endpoint,
        username: 'a',
        password: 'b',
        credentials: async () => ({ username: 'a', password: 'b' }),
        env: {},
      }),
    ).toThrow(ConfigurationError)
    expect(() => createClient({ endpoints: etcd.endpoint, credentials: 'secret' as never, env: {} })).toThrow(/must be a function/)
  })
})
