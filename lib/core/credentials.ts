// etcd credentials from a provider (Secrets Manager, SSM, …) instead of plaintext settings:
// fetched on the client's first call (once per cold start for a module-scope client) and fetched
// again when etcd rejects them (a rotated secret).
import type { Etcd3 } from 'etcd3'
import { ConfigurationError } from '../errors.js'

/** A user name and password for etcd auth. */
export interface Credentials {
  username: string
  password: string
}

/** Fetches {@link Credentials}: called on the client's first call, and again after etcd rejects them. */
export type CredentialsProvider = () => Credentials | Promise<Credentials>

/** Credentials younger than this are not fetched again on a rejection: the provider has nothing newer. */
const MIN_REFRESH_MS = 5_000

/** The part of etcd3's connection pool (1.1.2) that authenticates: its options and its token cache. */
interface Authenticator {
  getMetadata(): Promise<unknown>
  invalidateMetadata(): void
  awaitingMetadata: Promise<unknown> | null
}

function checked(value: unknown): Credentials {
  const c = value as Partial<Credentials> | null
  if (
    typeof c !== 'object' ||
    c === null ||
    typeof c.username !== 'string' ||
    c.username === '' ||
    typeof c.password !== 'string' ||
    c.password === ''
  ) {
    throw new ConfigurationError(
      'credentials',
      'the credentials provider must return { username, password } (non-empty strings); check the secret it reads',
    )
  }
  return { username: c.username, password: c.password }
}

/** Whether etcd refused the user name or password (not a network failure). */
function rejected(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.constructor.name === 'EtcdAuthenticationFailedError' || /authentication failed, invalid user ID or password/.test(err.message))
  )
}

/**
 * Makes `client` authenticate with what `provider` returns. etcd3 reads `options.auth` each time
 * it authenticates, so the credentials are put there before its authentication runs.
 */
export function useCredentialsProvider(client: Etcd3, provider: CredentialsProvider): void {
  const pool = (client as unknown as { pool?: { options?: { auth?: Credentials }; authenticator?: Authenticator } }).pool
  const auth = pool?.authenticator
  if (!pool?.options || !auth || typeof auth.getMetadata !== 'function' || typeof auth.invalidateMetadata !== 'function') {
    throw new ConfigurationError(
      'credentials',
      'this etcd3 version authenticates differently: a credentials provider needs etcd3 1.1.x; pass { username, password } instead',
    )
  }
  const options = pool.options
  const authenticate = auth.getMetadata.bind(auth)
  const invalidate = auth.invalidateMetadata.bind(auth)
  let current: { credentials: Promise<Credentials>; at: number } | undefined
  let metadata: Promise<unknown> | null = null

  const fetch = () => {
    const credentials = Promise.resolve()
      .then(provider)
      .then(checked, (err: unknown) => {
        throw err instanceof ConfigurationError
          ? err
          : new ConfigurationError('credentials', `the credentials provider failed: ${(err as Error)?.message ?? String(err)}`, {
              cause: err,
            })
      })
    const fetched = { credentials, at: Date.now() }
    current = fetched
    // A failed fetch is not kept: the next call asks the provider again.
    credentials.catch(() => {
      if (current === fetched) current = undefined
    })
    return credentials
  }
  const tokenWith = async (credentials: Promise<Credentials>) => {
    options.auth = await credentials
    auth.awaitingMetadata = null
    return authenticate()
  }
  const login = async () => {
    const used = current ?? { credentials: fetch(), at: Date.now() }
    try {
      return await tokenWith(used.credentials)
    } catch (err) {
      if (!rejected(err) || Date.now() - used.at < MIN_REFRESH_MS) throw err
      // Rotated since we fetched them: fetch once more and try again.
      return tokenWith(fetch())
    }
  }
  auth.getMetadata = () => {
    metadata ??= login().catch((err: unknown) => {
      metadata = null
      throw err
    })
    return metadata
  }
  auth.invalidateMetadata = () => {
    metadata = null
    invalidate()
  }
}
