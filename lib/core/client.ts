import { readFileSync } from 'node:fs'
import { ConstantBackoff, handleWhen, noop, retry, type IBackoff } from 'cockatiel'
import { Etcd3, isRecoverableError, type IOptions, type Namespace } from 'etcd3'
import { useCredentialsProvider, type CredentialsProvider } from './credentials.js'
import { ConfigurationError } from '../errors.js'
import { DEFAULT_MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES, RESPONSE_BUDGET_BYTES } from '../limits.js'
import { MAX_TIMER_MS } from '../timers.js'

/**
 * A connected etcd client: an `etcd3` client, or a namespace of one (all keys prefixed).
 * Every primitive takes one of these.
 */
export type EtcdClient = Namespace & { close(): void }

/** How to reach etcd. Anything left out is read from the environment (see {@link createClient}). */
export interface ClientOptions {
  /** `http(s)://host:port` URLs, or one comma-separated string. Env: `ETCD_ENDPOINTS`. */
  endpoints?: string[] | string
  /** Env: `ETCD_USERNAME`. */
  username?: string
  /** Env: `ETCD_PASSWORD`. */
  password?: string
  /**
   * Fetches the user name and password (e.g. from Secrets Manager or SSM) instead of
   * `username`/`password`: called on the first etcd call and again when etcd rejects them.
   */
  credentials?: CredentialsProvider
  /** PEM CA bundle path. Env: `ETCD_CA_FILE`. */
  caFile?: string
  /** PEM client certificate path. Env: `ETCD_CERT_FILE`. */
  certFile?: string
  /** PEM client key path. Env: `ETCD_KEY_FILE`. */
  keyFile?: string
  /** Prefix added to every key this client touches. Env: `ETCD_NAMESPACE`. */
  namespace?: string
  /** Deadline for every unary call, in ms (default 5000). Env: `ETCD_CALL_TIMEOUT_MS`. */
  callTimeoutMs?: number
  /**
   * Largest answer the client accepts, in bytes (default 32 MiB; gRPC's own default is 4 MiB).
   * etcd takes requests of up to 1.5 MiB but may answer a Range with much more; the primitives
   * plan every read to fit 16 MiB, so a larger answer is one of your own reads, or values above
   * etcd's default request limit. It fails with `ResponseTooLargeError`. At least 16 MiB.
   * Env: `ETCD_MAX_RESPONSE_BYTES`.
   */
  maxResponseBytes?: number
  /** Where to read settings that are not given (default `process.env`). */
  env?: Record<string, string | undefined>
}

const DEFAULT_CALL_TIMEOUT_MS = 5000

/** Reads `ETCD_<name>`, falling back to etcdctl's `ETCDCTL_<name>`; returns the name it came from. */
function fromEnv(env: Record<string, string | undefined>, name: string, ctlName = name) {
  for (const key of [`ETCD_${name}`, `ETCDCTL_${ctlName}`]) {
    const value = env[key]
    if (value !== undefined && value !== '') return { value, setting: key }
  }
  return undefined
}

function setting<T>(given: T | undefined, option: string, env: Record<string, string | undefined>, name: string, ctlName?: string) {
  if (given !== undefined) return { value: given, setting: option }
  return fromEnv(env, name, ctlName)
}

function parseEndpoints(raw: unknown, settingName: string): string[] {
  if (typeof raw !== 'string' && !Array.isArray(raw)) {
    throw new ConfigurationError(
      settingName,
      `${settingName} must be a URL string, a comma-separated string or an array of URL strings, got ${raw === null ? 'null' : typeof raw}`,
    )
  }
  const list = (Array.isArray(raw) ? (raw as unknown[]) : raw.split(','))
    .map((s) => (typeof s === 'string' ? s.trim() : s))
    .filter((s) => s !== '')
  if (list.length === 0) {
    throw new ConfigurationError(settingName, `${settingName} is empty: give at least one etcd endpoint, e.g. http://127.0.0.1:2379`)
  }
  return list.map((endpoint) => {
    if (typeof endpoint !== 'string') {
      throw new ConfigurationError(settingName, `${settingName} must hold URL strings, got ${endpoint === null ? 'null' : typeof endpoint}`)
    }
    // etcdctl accepts host:port without a scheme (ETCDCTL_ENDPOINTS=127.0.0.1:2379): plain http.
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint) ? endpoint : `http://${endpoint}`
    let url: URL
    try {
      url = new URL(withScheme)
    } catch {
      throw new ConfigurationError(
        settingName,
        `${settingName} has a malformed endpoint ${JSON.stringify(endpoint)}: use http://host:port or https://host:port`,
      )
    }
    // URL drops a port equal to the scheme's default (https://h:443 has port ''): look at the text.
    const authority = withScheme.slice(withScheme.indexOf('://') + 3).split(/[/?#]/)[0]
    const hasPort = /:[0-9]+$/.test(authority)
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '' || !hasPort) {
      throw new ConfigurationError(
        settingName,
        `${settingName} endpoint ${JSON.stringify(endpoint)} needs an http:// or https:// scheme, a host and a port, e.g. http://127.0.0.1:2379`,
      )
    }
    const port = url.port || (url.protocol === 'https:' ? '443' : '80')
    return `${url.protocol}//${url.hostname}:${port}`
  })
}

function readPem(path: { value: string; setting: string } | undefined): Buffer | undefined {
  if (!path) return undefined
  try {
    return readFileSync(path.value)
  } catch (err) {
    throw new ConfigurationError(path.setting, `${path.setting}: cannot read ${JSON.stringify(path.value)} (${(err as Error).message})`, {
      cause: err,
    })
  }
}

/** Whether a failed call certainly never left this process (no connection could be made). */
export function neverSent(err: Error): boolean {
  return (
    isRecoverableError(err) && /No connection established|ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|Name resolution failed/i.test(err.message)
  )
}

/** Turns options + environment into `etcd3` options; throws {@link ConfigurationError} on bad settings. */
export function resolveClientOptions(options: ClientOptions = {}): { etcd: IOptions; namespace: string } {
  const env = options.env ?? process.env
  const endpoints = setting(options.endpoints, 'endpoints', env, 'ENDPOINTS')
  if (!endpoints) {
    throw new ConfigurationError(
      'ETCD_ENDPOINTS',
      'no etcd endpoints: pass { endpoints } to createClient or set ETCD_ENDPOINTS=http://host:2379[,http://host2:2379]',
    )
  }
  const hosts = parseEndpoints(endpoints.value, endpoints.setting)

  const timeout = setting(options.callTimeoutMs, 'callTimeoutMs', env, 'CALL_TIMEOUT_MS', 'COMMAND_TIMEOUT_MS')
  const rawTimeout: unknown = timeout?.value
  const callTimeoutMs = timeout
    ? typeof rawTimeout === 'number' || typeof rawTimeout === 'string'
      ? Number(rawTimeout)
      : NaN
    : DEFAULT_CALL_TIMEOUT_MS
  // Timers cannot be longer than 2^31-1 ms; a longer one would fire at once.
  if (timeout && (!Number.isFinite(callTimeoutMs) || callTimeoutMs <= 0 || callTimeoutMs > MAX_TIMER_MS)) {
    throw new ConfigurationError(
      timeout.setting,
      `${timeout.setting} must be a positive number of milliseconds (at most ${MAX_TIMER_MS}), got ${JSON.stringify(String(rawTimeout))}`,
    )
  }

  const maxResponse = setting(options.maxResponseBytes, 'maxResponseBytes', env, 'MAX_RESPONSE_BYTES')
  const rawMax: unknown = maxResponse?.value
  const maxResponseBytes = maxResponse
    ? typeof rawMax === 'number' || typeof rawMax === 'string'
      ? Number(rawMax)
      : NaN
    : DEFAULT_MAX_RESPONSE_BYTES
  // Below the primitives' own budget their reads would fail; gRPC takes a 32-bit signed length.
  if (
    maxResponse &&
    (!Number.isInteger(maxResponseBytes) || maxResponseBytes < RESPONSE_BUDGET_BYTES || maxResponseBytes > MAX_RESPONSE_BYTES)
  ) {
    throw new ConfigurationError(
      maxResponse.setting,
      `${maxResponse.setting} must be a whole number of bytes from ${RESPONSE_BUDGET_BYTES} (16 MiB, what the primitives' reads are planned to fit) to ${MAX_RESPONSE_BYTES}, got ${JSON.stringify(String(rawMax))}`,
    )
  }

  const username = setting(options.username, 'username', env, 'USERNAME', 'USER')
  let password = setting(options.password, 'password', env, 'PASSWORD')
  if (username && !password && username.value.includes(':')) {
    // etcdctl's --user / ETCDCTL_USER accepts "name:password".
    const at = username.value.indexOf(':')
    password = { value: username.value.slice(at + 1), setting: username.setting }
    username.value = username.value.slice(0, at)
  }
  if (options.credentials !== undefined && typeof options.credentials !== 'function') {
    throw new ConfigurationError('credentials', 'credentials must be a function () => Promise<{ username, password }>')
  }
  if (options.credentials && username) {
    throw new ConfigurationError(
      username.setting,
      `both a credentials provider and a username (${username.setting}) are set: use one of them`,
    )
  }
  if (username && !password) {
    throw new ConfigurationError(
      'ETCD_PASSWORD',
      `a username is set (${username.setting}) but no password: set ETCD_PASSWORD or pass { password }`,
    )
  }

  const ca = readPem(setting(options.caFile, 'caFile', env, 'CA_FILE', 'CACERT'))
  const cert = readPem(setting(options.certFile, 'certFile', env, 'CERT_FILE', 'CERT'))
  const key = readPem(setting(options.keyFile, 'keyFile', env, 'KEY_FILE', 'KEY'))
  if (Boolean(cert) !== Boolean(key)) {
    throw new ConfigurationError(
      cert ? 'ETCD_KEY_FILE' : 'ETCD_CERT_FILE',
      'a client certificate needs both a certificate and a key file: set ETCD_CERT_FILE and ETCD_KEY_FILE together',
    )
  }
  const secure = hosts.some((h) => h.startsWith('https:'))
  if ((ca || cert) && !secure) {
    throw new ConfigurationError('ETCD_ENDPOINTS', 'TLS files are set but the endpoints use http://: use https:// endpoints')
  }

  const ns = setting(options.namespace, 'namespace', env, 'NAMESPACE')
  if (ns && typeof ns.value !== 'string') {
    throw new ConfigurationError(
      ns.setting,
      `${ns.setting} must be a string key prefix such as "myapp/", got ${ns.value === null ? 'null' : typeof ns.value}`,
    )
  }
  const namespace = ns?.value ?? ''

  const etcd: IOptions = {
    hosts,
    // A call without a deadline never returns from a silent server; streams (watch, keepalive)
    // are long-lived by design and watched by their own logic.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    faultHandling: {
      // etcd3's default per-host breaker turns one failure into 5 s of instant errors. We keep
      // no breaker. A failed call is retried once (on another member when there is one) only
      // if it never reached etcd: a write whose answer was lost may have been applied, and
      // sending it again would apply it twice (Go retries mutations on the same condition).
      host: () => noop,
      global: retry(handleWhen(neverSent), { maxAttempts: 1, backoff: new ConstantBackoff(50) }),
      // etcd3 calls next() on this itself; its typings predate cockatiel 3's backoff factories.
      watchBackoff: new ConstantBackoff(250) as unknown as IBackoff<unknown>,
    },
    grpcOptions: {
      // Notice a dead connection quickly while streams (watches, lease keepalives) are open.
      // Not while idle: etcd's server policy (PermitWithoutStream=false) answers pings on an
      // idle connection with GOAWAY "too_many_pings" after ~30 s, tearing the connection down
      // and logging an error. An idle connection that died (e.g. across a freeze) costs one call
      // deadline: etcd3 then rebuilds the channel and the retry goes out on a fresh one.
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 3_000,
      'grpc.keepalive_permit_without_calls': 0,
      // Set on purpose: grpc-js stops at 4 MiB, and one Range answer can exceed that while its
      // request stays within etcd's 1.5 MiB limit. An answer above this is a ResponseTooLargeError.
      'grpc.max_receive_message_length': maxResponseBytes,
    },
  }
  if (username && password) etcd.auth = { username: username.value, password: password.value }
  if (secure) {
    // Without a CA file, gRPC falls back to the system roots.
    if (ca || cert) etcd.credentials = { rootCertificate: ca as Buffer, certChain: cert, privateKey: key }
  }
  return { etcd, namespace }
}

/**
 * A new etcd client from `options`, falling back to `ETCD_ENDPOINTS`, `ETCD_USERNAME`,
 * `ETCD_PASSWORD`, `ETCD_CA_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`, `ETCD_NAMESPACE`,
 * `ETCD_CALL_TIMEOUT_MS`, `ETCD_MAX_RESPONSE_BYTES` (and
 * etcdctl's `ETCDCTL_*` names), or with a `credentials` provider. Every unary call gets a
 * deadline. Close it with `close()`.
 */
export function createClient(options?: ClientOptions): EtcdClient {
  const { etcd, namespace } = resolveClientOptions(options)
  const root = new Etcd3(etcd)
  if (options?.credentials) useCredentialsProvider(root, options.credentials)
  if (namespace === '') return root
  const scoped = root.namespace(namespace) as EtcdClient
  scoped.close = () => root.close()
  return scoped
}

let shared: EtcdClient | undefined

/**
 * One client per process, configured from the environment and reused by every warm invocation
 * (module scope survives between invocations of a function instance).
 *
 * Its settings are read on first use, not when it is asked for: `new Queue(sharedClient(), …)`
 * at module scope only remembers the client, and `ETCD_ENDPOINTS` (and the rest) are read when
 * the first etcd call is made. So a handler module can be imported before its environment is
 * complete — by a test that starts etcd in `beforeAll`, or by a tool that only lists exports —
 * and a missing setting is a `ConfigurationError` from that first call. Closing it (at shutdown
 * or between tests) makes the next `sharedClient()` a fresh one, which reads the settings again.
 */
export function sharedClient(): EtcdClient {
  if (!shared) {
    const client: EtcdClient = lazyClient(() => {
      if (shared === client) shared = undefined
    })
    shared = client
  }
  return shared
}

const lazyClients = new WeakSet<object>()

/** Whether `client` is a shared client that has not read its settings yet (or has). */
export function isLazyClient(client: unknown): boolean {
  return typeof client === 'object' && client !== null && lazyClients.has(client)
}

/**
 * A client that is created by {@link createClient} on the first read of anything but `close`
 * and `pool`: every method and property is the real client's (methods bound to it), so etcd3
 * sees its own object. `pool` is a stand-in until then, because `closedSignal` hooks a client's
 * pool when a primitive is built (at import, for a module-scope primitive); closing this client
 * closes the stand-in too, so every wait of every primitive built on it hears of the close.
 */
function lazyClient(onClose: () => void): EtcdClient {
  let real: EtcdClient | undefined
  let closed = false
  const resolve = (): EtcdClient => {
    if (!real) {
      real = createClient()
      // Closed before its first use: the primitives see what they would see on a closed client.
      if (closed) real.close()
    }
    return real
  }
  const pool = {
    close() {
      closed = true
      real?.close()
    },
  }
  const close = () => {
    onClose()
    // Through the stand-in, whose close closedSignal may have wrapped.
    pool.close()
  }
  const proxy = new Proxy({} as EtcdClient, {
    get(_target, prop) {
      if (prop === 'close') return close
      if (prop === 'pool') return pool
      // Not a thenable (`await sharedClient()`), and symbols (Symbol.iterator, util.inspect's)
      // are asked by inspectors and test matchers: none of them reads the settings.
      if (prop === 'then') return undefined
      if (typeof prop === 'symbol' && !real) return undefined
      const client = resolve()
      const value: unknown = Reflect.get(client, prop, client)
      return typeof value === 'function' ? value.bind(client) : value
    },
    set(_target, prop, value) {
      return Reflect.set(resolve(), prop, value)
    },
    // `in` is asked by inspectors and test matchers: answered from etcd3's methods until the
    // client exists, so it reads no setting.
    has(_target, prop) {
      return prop === 'close' || prop === 'pool' || Reflect.has(real ?? Etcd3.prototype, prop)
    },
  })
  lazyClients.add(proxy)
  return proxy
}
