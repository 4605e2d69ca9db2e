import type { Namespace } from 'etcd3'
import { Session } from '../lib/session.js'

/**
 * Leases that a finished invocation left behind, for the next warm invocation of the same
 * process. A lease is lent to one invocation at a time (Go's Mutex treats a key as owned by its
 * lease, so two concurrent invocations must never share one), and only while the client's own
 * conservative estimate says it is certainly still alive; its keepalive then goes out
 * concurrently with the invocation's first Txn instead of a LeaseGrant round trip before it.
 */
class LeasePool {
  private readonly idle: { leaseId: string; ttl: number; aliveUntil: number }[] = []

  constructor(private readonly client: Namespace) {}

  /** A session for one invocation: a reused lease when one is certainly alive, else a new grant. */
  async take(ttl: number): Promise<Session> {
    const now = performance.now()
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const lease = this.idle[i]
      if (lease.aliveUntil <= now) {
        this.idle.splice(i, 1) // expired, or about to: the server drops it by itself
      } else if (lease.ttl === ttl) {
        this.idle.splice(i, 1)
        return Session.create(this.client, { leaseId: lease.leaseId, ttl, aliveUntil: lease.aliveUntil })
      }
    }
    return Session.create(this.client, { ttl })
  }

  /**
   * Takes back a session whose invocation released everything it held. Its keepalive stops
   * (a frozen process sends none anyway), so the lease lives at most one TTL unless reused.
   */
  give(session: Session): void {
    const aliveUntil = session.aliveUntil
    if (!session.active) return
    session.orphan()
    if (aliveUntil > performance.now()) this.idle.push({ leaseId: session.leaseId, ttl: session.ttl, aliveUntil })
  }
}

const pools = new WeakMap<Namespace, LeasePool>()

/** The lease pool of `client`. */
export function leasePool(client: Namespace): LeasePool {
  let pool = pools.get(client)
  if (!pool) {
    pool = new LeasePool(client)
    pools.set(client, pool)
  }
  return pool
}
