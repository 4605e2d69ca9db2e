import type { Namespace } from 'etcd3'
import { closedSignal } from '../core/client-closed.js'
import { EtcdUnavailableError } from '../errors.js'
import { grantLease, revokeLease } from '../core/leases.js'
import { perClient } from '../core/per-client.js'
import { startTimer } from '../timers.js'

/**
 * The leases queue claims are made with, and the settling of a batch: a receive grants one
 * lease for its whole batch (the visibility timeout) and never keeps it alive; once this
 * process has settled every message of the batch the lease is revoked, so finished batches do
 * not pile up leases on the server. The open batches are kept per client, not module-wide.
 */

/** The lease a receive claims with; `granted` when the receive owns (and may revoke) it. */
export interface ClaimLease {
  id: string
  granted: boolean
  /** Seconds. */
  ttl: number
  /** When its grant was sent (`performance.now()`, `Date.now()`), for a granted lease. */
  sentAt?: number
  sentAtWall?: number
}

/**
 * Seconds a claim lease gets beyond the visibility timeout: the lease's TTL runs from its grant,
 * which precedes the claim (on a busy queue it is granted while the scan runs, and a receive
 * that lost its races claims again with it). Claimed within this slack of the grant, the
 * messages stay hidden at least the visibility timeout from the claim; later, the lease is
 * renewed right after the claim (see {@link keepClaimFresh}).
 */
export const CLAIM_SLACK_S = 1

/** Grants the lease of one receive's batch: the visibility timeout plus {@link CLAIM_SLACK_S}. */
export async function grantClaimLease(client: Namespace, visibilityTimeout: number): Promise<ClaimLease> {
  const [sentAt, sentAtWall] = [performance.now(), Date.now()]
  const ttl = visibilityTimeout + CLAIM_SLACK_S
  return { id: await grantLease(client, ttl), granted: true, ttl, sentAt, sentAtWall }
}

/**
 * After a claim with `lease`: if more than {@link CLAIM_SLACK_S} passed since its grant (by
 * whichever clock says more), renews it with one keepalive, so its messages stay hidden for the
 * whole visibility timeout from now. A renewal that fails leaves the lease as it was (its
 * messages then come back that much earlier).
 */
export async function keepClaimFresh(client: Namespace, lease: ClaimLease): Promise<void> {
  if (!lease.granted || lease.sentAt === undefined || lease.sentAtWall === undefined) return
  const age = Math.max(performance.now() - lease.sentAt, Date.now() - lease.sentAtWall)
  if (age <= CLAIM_SLACK_S * 1000) return
  await keepAliveOnce(client, lease.id).catch(() => {})
}

/** One LeaseKeepAlive round trip on a stream of its own (bounded by `timeoutMs`). */
async function keepAliveOnce(client: Namespace, leaseId: string, timeoutMs = 5_000): Promise<void> {
  const stream = await client.leaseClient.leaseKeepAlive()
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = startTimer(timeoutMs, () => reject(new Error('no keepalive answer')), { ref: true })
      stream.on('data', () => {
        timer.cancel()
        resolve()
      })
      stream.on('error', (err: Error) => {
        timer.cancel()
        reject(err)
      })
      stream.write({ ID: leaseId })
    })
  } finally {
    stream.on('error', () => {})
    stream.end()
  }
}

/** The unsettled messages (item keys) of one granted lease, and when the lease ends anyway. */
interface OpenBatch {
  open: Set<string>
  expiresAt: number
}

/** The open batches of a client, by lease id. */
const batchesOf = perClient((): Map<string, OpenBatch> => new Map())

/** Pause between the background revokes of a claim lease etcd could not be asked to revoke. */
const REVOKE_RETRY_MS = 500

/**
 * Gives up the lease of a receive that returns no messages with it: revoked if this receive
 * granted it. A revoke etcd does not answer is not the receive's failure: it is tried again in
 * the background until the lease is gone (or has surely run out). A claim Txn that applied
 * although its answer was lost has hidden its messages under this lease, for the whole
 * visibility timeout otherwise — and etcd 3.4 starts every lease's TTL again at each leader
 * change, so during repeated elections for longer still.
 */
export async function dropLease(client: Namespace, lease: ClaimLease): Promise<void> {
  if (!lease.granted) return
  await revokeLease(client, lease.id).catch((err: unknown) => {
    if (err instanceof EtcdUnavailableError) revokeLater(client, lease)
  })
}

/** How many TTLs of the lease the background revoke keeps trying for. */
const REVOKE_RETRY_TTLS = 10

/**
 * Retries the revoke every {@link REVOKE_RETRY_MS} while etcd is unreachable, until the client is
 * closed or {@link REVOKE_RETRY_TTLS} TTLs have passed: by then the lease has run out unless
 * leaders kept changing all along, and the retries of a long outage must not pile up.
 */
function revokeLater(client: Namespace, lease: ClaimLease): void {
  const closed = closedSignal(client)
  const giveUpAt = performance.now() + REVOKE_RETRY_TTLS * lease.ttl * 1000
  const attempt = () => {
    if (closed.aborted || performance.now() > giveUpAt) return
    revokeLease(client, lease.id).catch((err: unknown) => {
      if (err instanceof EtcdUnavailableError) startTimer(REVOKE_RETRY_MS, attempt)
    })
  }
  startTimer(REVOKE_RETRY_MS, attempt)
}

/** Remembers a granted lease's unsettled messages, so the last settle can revoke it. */
export function trackBatch(client: Namespace, lease: ClaimLease, itemKeys: string[]): void {
  if (!lease.granted) return
  const batches = batchesOf(client)
  const now = performance.now()
  // Batches nobody settles (settled in another process, or abandoned) drop out once their lease has expired.
  for (const [id, b] of batches) if (b.expiresAt < now) batches.delete(id)
  batches.set(lease.id, { open: new Set(itemKeys), expiresAt: now + lease.ttl * 1000 })
}

/** Marks one message of a batch settled; revokes the batch's lease when it was the last one. */
export async function settleClaim(client: Namespace, leaseId: string, itemKey: string): Promise<void> {
  const batches = batchesOf(client)
  const batch = batches.get(leaseId)
  if (!batch?.open.delete(itemKey) || batch.open.size > 0) return
  batches.delete(leaseId)
  // The settle itself succeeded: a failed revoke must not turn it into an error (the lease
  // holds none of our markers any more and expires after the visibility timeout).
  await revokeLease(client, leaseId).catch(() => {})
}
