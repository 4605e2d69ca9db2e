import { Queue, type EtcdClient, type Message } from '../../lib/index.js'
import { unixNano } from '../../lib/core/keys.js'
import { keyspace } from '../../lib/core/kv.js'
import { rpcPerOp, rpcSnapshot, type RpcCounts } from '../util/rpcs.js'
import { p50s, summarize } from '../util/stats.js'
import { entry, type BenchContext, type Scenario } from '../util/types.js'

/**
 * Queues at scale (issue 22): what one receive + ack costs a consumer — etcd requests per
 * message, bytes etcd sent per message, p50 latency — with 100 messages in flight against
 * 100,000, and behind a backlog of 1,000 against 1,000,000. Target: the large case within
 * 1.5x of the small one. Items are written as a Go producer would (`<name>/<unixNano>`, in Txns
 * of 128 puts); the in-flight ones are claimed by receives of 1000, as a consumer would.
 */

/** Bytes etcd has sent to gRPC clients (its own counter). */
async function sentBytes(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text()
  const m = /^etcd_network_client_grpc_sent_bytes_total (\S+)$/m.exec(text)
  return m ? Number(m[1]) : NaN
}

/** Writes `n` 16-byte items into `name` (Txns of 128 puts, 8 at a time). */
async function fill(client: EtcdClient, name: string, n: number): Promise<void> {
  const ks = keyspace(client)
  const txns: Promise<unknown>[] = []
  for (let i = 0; i < n; i += 128) {
    txns.push(
      ks.txn(
        [],
        Array.from({ length: Math.min(128, n - i) }, (_, j) => ks.put(`${name}/${unixNano()}`, `m${String(i + j).padStart(15, '0')}`)),
      ),
    )
    if (txns.length >= 8) await Promise.all(txns.splice(0))
  }
  await Promise.all(txns)
}

/** What `n` receive({ max: 1 }) + ack cycles cost on one warm consumer object. */
interface Cost {
  requests: number
  rpcs: RpcCounts
  bytes: number
  latencies: number[]
  p50: number
  p99: number
}

async function cycles(ctx: BenchContext, q: Queue, n: number): Promise<Cost> {
  const ep = ctx.endpoints[0]
  for (let i = 0; i < 20; i++) {
    const [m] = await q.receive({ max: 1, visibilityTimeout: 300, wait: false })
    if (m) await q.ack(m)
  }
  const [before, bytes0] = [await rpcSnapshot(ep), await sentBytes(ep)]
  const latencies: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    const [m] = await q.receive({ max: 1, visibilityTimeout: 300, wait: false })
    if (!m) throw new Error(`queue-scale: receive ${i} of ${n} found nothing`)
    await q.ack(m)
    latencies.push(performance.now() - t0)
  }
  const [after, bytes1] = [await rpcSnapshot(ep), await sentBytes(ep)]
  const rpcs = rpcPerOp(before, after, n)
  const s = summarize(latencies)
  return { requests: Object.values(rpcs).reduce((a, b) => a + b, 0), rpcs, bytes: (bytes1 - bytes0) / n, latencies, p50: s.p50, p99: s.p99 }
}

/** Claims `n` items of `name` with long-lived claims (receives of 1000), as consumers with that many in flight would. */
async function hold(client: EtcdClient, name: string, n: number): Promise<Message[]> {
  const q = new Queue(client, name)
  const held: Message[] = []
  while (held.length < n) {
    const got = await q.receive({ max: Math.min(1000, n - held.length), visibilityTimeout: 3600, wait: false })
    if (got.length === 0) throw new Error(`queue-scale: only ${held.length} of ${n} could be claimed`)
    held.push(...got)
  }
  return held
}

export const queueScale: Scenario = {
  name: 'queue-scale',
  async run(ctx) {
    const n = Math.max(100, Math.round(500 * ctx.scale))
    const bigInFlight = ctx.scale < 1 ? 10_000 : 100_000
    const bigBacklog = ctx.scale < 1 ? 100_000 : 1_000_000
    const measure = async (label: string, setup: (name: string) => Promise<void>) => {
      const name = ctx.prefix('qscale')
      const t0 = performance.now()
      await setup(name)
      const built = (performance.now() - t0) / 1000
      ctx.log(`  ${label}: built in ${built.toFixed(1)} s`)
      const cost = await cycles(ctx, new Queue(ctx.newClient(), name), n)
      // What it wrote goes (a delete of a million keys may outlast the call deadline: then it stays, on a server the run discards).
      for (const p of ['', '__claims/', '__receives/'])
        await keyspace(ctx.client)
          .del(`${p}${name}/`, { prefix: true })
          .catch(() => {})
      return { ...cost, built }
    }
    // n + 20 (warm-up) visible items after the in-flight ones.
    const inFlight = async (k: number) =>
      measure(`${k} in flight`, async (name) => {
        await fill(ctx.client, name, k)
        await hold(ctx.newClient(), name, k)
        await fill(ctx.client, name, n + 20)
      })
    const backlog = async (k: number) => measure(`backlog ${k}`, (name) => fill(ctx.client, name, k))

    // The first measurement of a process pays for its warm-up (JIT, connections): thrown away.
    await inFlight(100)
    const small = await inFlight(100)
    const big = await inFlight(bigInFlight)
    const shallow = await backlog(1000)
    let deep: Awaited<ReturnType<typeof backlog>> | null = null
    let why: string | undefined
    try {
      deep = await backlog(bigBacklog)
    } catch (err) {
      why = `backlog of ${bigBacklog} not measured: ${(err as Error).message}`
      ctx.log(why)
    }
    const target = { kind: 'max-ratio' as const, ratio: 1.5 }
    const rows = (label: string, a: typeof small | null, b: typeof small, peer: string, note?: string) => [
      entry(`${label}: receive(max 1) + ack`, 'etcd requests per message', a?.requests ?? null, peer, b.requests, target, note),
      entry(`${label}: receive(max 1) + ack`, 'bytes etcd sent per message', a?.bytes ?? null, peer, b.bytes, target, note),
      entry(`${label}: receive(max 1) + ack`, 'p50 ms', a ? p50s(a.latencies) : null, peer, b ? p50s(b.latencies) : null, target, note),
    ]
    const f = (c: typeof small | null) =>
      c
        ? `${c.requests.toFixed(2)} requests (${Object.entries(c.rpcs)
            .map(([k, v]) => `${k} ${v}`)
            .join(
              ', ',
            )}), ${c.bytes.toFixed(0)} bytes, p50 ${c.p50.toFixed(2)} / p99 ${c.p99.toFixed(2)} ms per message (built in ${c.built.toFixed(1)} s)`
        : why
    return {
      entries: [
        ...rows(`${bigInFlight} in flight`, big, small, 'same, 100 in flight'),
        ...rows(`backlog of ${bigBacklog}`, deep, shallow, 'same, backlog of 1000', why),
      ],
      notes: [
        `${n} sequential receive({ max: 1 }) + ack cycles on one warm consumer object after 20 for warm-up; requests from etcd's grpc_server_msg_received_total, bytes from its etcd_network_client_grpc_sent_bytes_total, both per message. ` +
          `100 in flight: ${f(small)}. ${bigInFlight} in flight: ${f(big)}. Backlog of 1000: ${f(shallow)}. Backlog of ${bigBacklog}: ${f(deep)}.`,
      ],
      details: Object.fromEntries(Object.entries({ small, big, shallow, deep }).map(([k, c]) => [k, c && { ...c, latencies: undefined }])),
    }
  },
}
