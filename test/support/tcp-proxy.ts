import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP proxy in front of one etcd member, for cutting a client off without touching etcd:
 * `cut()` makes it a black hole (connections stay open, bytes in either direction are dropped,
 * as a network partition looks to both ends); `heal()` forwards again on new connections
 * (old ones are dropped, as after a real partition the client reconnects).
 */
export interface TcpProxy {
  /** `http://127.0.0.1:<port>`: give this to the client instead of the member's endpoint. */
  endpoint: string
  cut(): void
  heal(): void
  close(): Promise<void>
}

export async function tcpProxy(target: string): Promise<TcpProxy> {
  const url = new URL(target)
  const pairs = new Set<[Socket, Socket]>()
  let cut = false
  const server: Server = createServer((client) => {
    if (cut) {
      // A partition: the connection is accepted by nobody; hold it open and say nothing.
      client.on('error', () => {})
      client.on('data', () => {})
      pairs.add([client, client])
      return
    }
    const upstream = connect({ host: url.hostname, port: Number(url.port) })
    const pair: [Socket, Socket] = [client, upstream]
    pairs.add(pair)
    const forward = (from: Socket, to: Socket) =>
      from.on('data', (chunk) => {
        if (!cut) to.write(chunk)
      })
    forward(client, upstream)
    forward(upstream, client)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    for (const s of pair) {
      s.on('error', end)
      s.on('close', end)
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut() {
      cut = true
    },
    heal() {
      cut = false
      for (const [a, b] of pairs) {
        a.destroy()
        b.destroy()
      }
      pairs.clear()
    },
    async close() {
      for (const [a, b] of pairs) {
        a.destroy()
        b.destroy()
      }
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
