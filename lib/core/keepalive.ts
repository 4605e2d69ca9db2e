import { ClientClosedError, type ILeaseKeepAliveRequest, type ILeaseKeepAliveResponse, type IDuplexStream, type Namespace } from 'etcd3'
import { perClient } from './per-client.js'
import { startTimer, type Timer } from '../timers.js'

/**
 * One LeaseKeepAlive stream per client, shared by all of its sessions (etcd3's `Lease` opens a
 * stream per lease). The server answers a stream's requests one by one, in order, so each reply
 * is matched to the monotonic time its request was sent: that send time + the granted TTL is a
 * conservative bound on when the lease can expire.
 *
 * Replies are only taken from the stream currently in use: once a stream is dropped (error,
 * end, or silence), late replies on it are ignored, because the send times they would be
 * matched with belong to requests on the new stream (pairing them would overstate the bound).
 */

/** What a session hears back about one keepalive it sent. */
export interface KeepAliveReply {
  /** `performance.now()` when the answered request was sent. */
  sentAt: number
  /** `Date.now()` at the same moment (see `Session.aliveUntil`: a monotonic clock that stalled). */
  sentAtWall: number
  /** Remaining TTL in seconds, as the server saw it; <= 0 means the lease is gone. */
  ttl: number
}

type Listener = (reply: KeepAliveReply) => void

/** One session's interest in a lease; {@link KeepAliveStream.register} returns it. */
export interface Registration {
  onReply: Listener
  /** Called once the client turns out to be closed: no keepalive can be sent any more. */
  onClientClosed?: () => void
}

/** Per lease: the send times of unanswered requests, oldest first, and who hears the replies. */
interface LeaseState {
  inFlight: { perf: number; wall: number }[]
  /** Usually one; more when several sessions adopted the same lease (Go's WithLease). */
  registrations: Set<Registration>
}
type Duplex = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>

/** One opened (or opening) stream. */
interface Connection {
  ready: Promise<Duplex>
}

class KeepAliveStream {
  private current?: Connection
  private readonly leases = new Map<string, LeaseState>()
  /** Set while no session is registered but requests are unanswered (see {@link release}). */
  private lingering?: Timer

  constructor(private readonly client: Namespace) {}

  /** Routes replies for `leaseId` to `onReply` until {@link release}. */
  register(leaseId: string, onReply: Listener, onClientClosed?: () => void): Registration {
    const registration: Registration = { onReply, onClientClosed }
    let state = this.leases.get(leaseId)
    if (!state) {
      state = { inFlight: [], registrations: new Set() }
      this.leases.set(leaseId, state)
    }
    state.registrations.add(registration)
    this.lingering?.cancel()
    this.lingering = undefined
    return registration
  }

  /** Stops routing replies for `leaseId` to `registration`; the stream closes when no lease is left. */
  release(leaseId: string, registration: Registration): void {
    const state = this.leases.get(leaseId)
    if (!state) return
    state.registrations.delete(registration)
    if ([...this.leases.values()].every((s) => s.registrations.size === 0)) {
      // Unanswered requests keep the stream open until their replies arrive (bounded by
      // LINGER_MS): a lease handed straight to the next session (a warm invocation) gets its
      // renewal instead of losing it with the stream and sending another.
      if (this.current && [...this.leases.values()].some((s) => s.inFlight.length > 0)) {
        const conn = this.current
        this.lingering?.cancel()
        this.lingering = startTimer(LINGER_MS, () => this.closeIdle(conn))
        return
      }
      if (this.current) this.drop(this.current)
      this.leases.clear()
    } else if (state.registrations.size === 0 && state.inFlight.length === 0) {
      this.leases.delete(leaseId)
    }
    // Otherwise the state stays until its requests are answered: were it re-registered at once
    // (a lease handed to the next invocation), those late replies must not be paired with the
    // new, later send times.
  }

  /**
   * Sends one keepalive for `leaseId`. A broken stream is replaced on the next send, and so is
   * a silent one: if this lease's oldest request has waited longer than `silentAfterMs`, the
   * stream is presumed dead (e.g. a half-open TCP connection) and a new one is opened.
   */
  send(leaseId: string, silentAfterMs = Infinity): void {
    const entry = this.leases.get(leaseId)
    if (!entry) return
    const now = performance.now()
    if (this.current && entry.inFlight.length > 0 && now - entry.inFlight[0].perf > silentAfterMs) this.drop(this.current)
    const conn = this.open()
    entry.inFlight.push({ perf: now, wall: Date.now() })
    conn.ready
      .then((stream) => stream.write({ ID: leaseId }))
      .catch((err: unknown) => {
        this.drop(conn)
        if (err instanceof ClientClosedError) this.clientClosed()
      })
  }

  /** Delivers a "gone" reply (TTL 0) for `leaseId` to its sessions; see {@link reportLeaseGone}. */
  leaseGone(leaseId: string): void {
    const state = this.leases.get(leaseId)
    if (!state) return
    const reply = { sentAt: performance.now(), sentAtWall: Date.now(), ttl: 0 }
    for (const r of [...state.registrations]) r.onReply(reply)
  }

  private open(): Connection {
    if (this.current) return this.current
    const conn: Connection = {
      ready: this.client.leaseClient.leaseKeepAlive().then((stream) => {
        // Listeners stay attached for the stream's life, so a late 'error' is always handled.
        stream.on('data', (res: ILeaseKeepAliveResponse) => {
          if (this.current === conn) this.onData(res)
        })
        stream.on('error', () => this.drop(conn))
        stream.on('end', () => this.drop(conn))
        if (this.current !== conn) {
          stream.end() // dropped (or every lease released) while it was opening
          throw new Error('keepalive stream dropped while opening')
        }
        return stream
      }),
    }
    this.current = conn
    return conn
  }

  private onData(res: ILeaseKeepAliveResponse) {
    const id = String(res.ID)
    const state = this.leases.get(id)
    const sentAt = state?.inFlight.shift()
    if (!state || sentAt === undefined) return
    if (state.registrations.size === 0 && state.inFlight.length === 0) this.leases.delete(id)
    // A renewal counts for every session on the lease: it was renewed after `sentAt` either way.
    for (const r of [...state.registrations]) r.onReply({ sentAt: sentAt.perf, sentAtWall: sentAt.wall, ttl: Number(res.TTL) })
    if (this.lingering && [...this.leases.values()].every((s) => s.inFlight.length === 0)) this.closeIdle(this.current!)
  }

  /** Closes a lingering stream once nobody registered again (see {@link release}). */
  private closeIdle(conn: Connection) {
    this.lingering?.cancel()
    this.lingering = undefined
    if (this.current !== conn || ![...this.leases.values()].every((s) => s.registrations.size === 0)) return
    this.drop(conn)
    this.leases.clear()
  }

  private clientClosed() {
    for (const state of [...this.leases.values()]) for (const r of [...state.registrations]) r.onClientClosed?.()
  }

  /** Stops using `conn` (no-op if it was already replaced); its unanswered requests are forgotten. */
  private drop(conn: Connection) {
    if (this.current !== conn) return
    this.current = undefined
    for (const [id, state] of this.leases) {
      state.inFlight.length = 0
      if (state.registrations.size === 0) this.leases.delete(id)
    }
    conn.ready.then((s) => s.end()).catch(() => {})
  }
}

/** Longest a stream with no session stays open waiting for replies to its last requests. */
const LINGER_MS = 1000

/** The shared keepalive stream of `client`. */
export const keepAliveStream: (client: Namespace) => KeepAliveStream = perClient((client) => new KeepAliveStream(client))

/**
 * Tells every session on `leaseId` (of `client`) that etcd answered a request with "lease not
 * found": as if a keepalive had come back with TTL 0, so they end at once.
 */
export function reportLeaseGone(client: Namespace, leaseId: string): void {
  keepAliveStream(client).leaseGone(leaseId)
}

export type { KeepAliveStream }
