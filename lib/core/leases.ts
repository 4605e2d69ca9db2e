import type { Namespace } from 'etcd3'
import { toTypedError } from './kv.js'

/**
 * Bare leases, never kept alive: they simply run out. Queue claims (the visibility timeout),
 * delayed-message timers and completed idempotency records live on them; sessions keep theirs
 * alive (`session.ts`).
 */

/** Grants a lease of `ttl` seconds; returns its id (decimal). One LeaseGrant RPC. */
export async function grantLease(client: Namespace, ttl: number): Promise<string> {
  try {
    return (await client.leaseClient.leaseGrant({ TTL: ttl })).ID
  } catch (err) {
    throw toTypedError(err, 'etcd lease grant')
  }
}

/** Revokes a lease and every key on it; one already gone is fine. One LeaseRevoke RPC. */
export async function revokeLease(client: Namespace, leaseId: string): Promise<void> {
  try {
    await client.leaseClient.leaseRevoke({ ID: leaseId })
  } catch (err) {
    if (/lease not found/i.test((err as Error).message)) return
    throw toTypedError(err, 'etcd lease revoke')
  }
}
