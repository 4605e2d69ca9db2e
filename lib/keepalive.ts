import type { ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IDuplexStream, Namespace } from 'etcd3'

/**
 * One LeaseKeepAlive stream per client, shared by all of its sessions (etcd3's `Lease` opens a
 * stream per lease). Replies come back in the order requests went out, per lease, so each reply
 * is matched to the monotonic time its request was sent: that send time + the granted TTL is a
 * conservative bound on when the lease can expire.
 */

/** What a session hears back about one keepalive it sent. */
export interface KeepAliveReply {
  /** `performance.now()` when the answered request was sent. */
  sentAt: number
  /** Remaining TTL in seconds, as the server saw it; <= 0 means the lease is gone. */
  ttl: number
}

type Listener = (reply: KeepAliveReply) => void

class KeepAliveStream {
  private stream?: Promise<IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>>
  private readonly listeners = new Map<string, { onReply: Listener; inFlight: number[] }>()

  constructor(private readonly client: Namespace) {}

  /** Routes replies for `leaseId` to `onReply` until {@link release}. */
  register(leaseId: string, onReply: Listener): void {
    this.listeners.set(leaseId, { onReply, inFlight: [] })
  }

  release(leaseId: string): void {
    this.listeners.delete(leaseId)
    if (this.listeners.size === 0) this.close()
  }

  /** Sends one keepalive for `leaseId`; a broken stream is replaced on the next send. */
  send(leaseId: string): void {
    const entry = this.listeners.get(leaseId)
    if (!entry) return
    entry.inFlight.push(performance.now())
    this.open()
      .then((stream) => stream.write({ ID: leaseId }))
      .catch(() => this.reset())
  }

  private open() {
    this.stream ??= this.client.leaseClient.leaseKeepAlive().then((stream) => {
      stream.on('data', (res: ILeaseKeepAliveResponse) => this.onData(res))
      stream.on('error', () => this.reset(stream))
      stream.on('end', () => this.reset(stream))
      return stream
    })
    return this.stream
  }

  private onData(res: ILeaseKeepAliveResponse) {
    const entry = this.listeners.get(res.ID)
    const sentAt = entry?.inFlight.shift()
    if (entry && sentAt !== undefined) entry.onReply({ sentAt, ttl: Number(res.TTL) })
  }

  /** Drops a failed stream; requests in flight on it will never be answered. */
  private reset(failed?: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>) {
    const current = this.stream
    this.stream = undefined
    for (const entry of this.listeners.values()) entry.inFlight.length = 0
    current?.then((s) => { if (!failed || s === failed) s.end() }).catch(() => {})
  }

  private close() {
    const current = this.stream
    this.stream = undefined
    current?.then((s) => s.end()).catch(() => {})
  }
}

const streams = new WeakMap<Namespace, KeepAliveStream>()

/** The shared keepalive stream of `client`. */
export function keepAliveStream(client: Namespace): KeepAliveStream {
  let stream = streams.get(client)
  if (!stream) {
    stream = new KeepAliveStream(client)
    streams.set(client, stream)
  }
  return stream
}

export type { KeepAliveStream }
