import type { Namespace } from 'etcd3'
import { perClient } from '../lib/core/per-client.js'
import { Session } from '../lib/session/session.js'

/** A lease a finished invocation left behind, and until when it is certainly alive by both clocks. */
interface IdleLease {
  leaseId: string
  ttl: number
  /** `performance.now()` bound. */
  aliveUntil: number
  /** The same bound by `Date.now()`: the monotonic clock may not advance while a frozen VM is paused. */
  aliveUntilWall: number
}

/**
 * Leases that a finished invocation left behind, for the next warm invocation of the same
 * process. A lease is lent to one invocation at a time (Go's Mutex treats a key as owned by its
 * lease, so two concurrent invocations must never share one), and only while the client's own
 * conservative estimate says it is certainly still alive; its keepalive then goes out
 * concurrently with the invocation's first Txn instead of a LeaseGrant round trip before it.
 * A lease that lost its session, or that still carries a key some clean-up could not delete
 * (`Session.stranded`), is never lent again: it is left to expire with whatever is on it.
 */
class LeasePool {
  private readonly idle: IdleLease[] = []

  constructor(private readonly client: Namespace) {}

  /** A session for one invocation: a reused lease when one is certainly alive, else a new grant. */
  async take(ttl: number): Promise<Session> {
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const lease = this.idle[i]
      // Whichever clock says the lease ends sooner decides.
      const left = Math.min(lease.aliveUntil - performance.now(), lease.aliveUntilWall - Date.now())
      if (left <= (lease.ttl * 1000) / 3) {
        // Expired, or about to: the server drops it by itself. A lease with less than a third of
        // its TTL left is not lent either: its bound would pass before the renewal sent with the
        // invocation's first Txn is answered on a busy machine, and the invocation would fail
        // with SessionExpiredError although etcd is fine (seen in serverless offline: a lease
        // lent with a few hundred ms left). A third is when a Session renews anyway.
        this.idle.splice(i, 1)
      } else if (lease.ttl === ttl) {
        this.idle.splice(i, 1)
        return Session.create(this.client, { leaseId: lease.leaseId, ttl, aliveUntil: performance.now() + left })
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
    const reusable = session.active && session.stranded.length === 0
    session.orphan()
    if (!reusable) return
    const left = aliveUntil - performance.now()
    if (left > 0) this.idle.push({ leaseId: session.leaseId, ttl: session.ttl, aliveUntil, aliveUntilWall: Date.now() + left })
  }
}

/** The lease pool of `client`. */
export const leasePool: (client: Namespace) => LeasePool = perClient((client) => new LeasePool(client))
