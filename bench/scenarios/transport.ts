import { connect, constants, type ClientHttp2Session } from 'node:http2'
import { median } from '../util/stats.js'
import { entry, type BenchContext, type Entry, type Scenario } from '../util/types.js'

/**
 * Issue 25, "the transport, measured": client CPU per Range, Put and Txn sent three ways to the
 * same etcd, sequentially, from this process:
 *
 *   - etcd3 (grpc-js), as the library sends them;
 *   - gRPC over a bare `node:http2` session: the same protobuf messages, framed by hand (the
 *     5-byte gRPC prefix), no channel, interceptors or retries;
 *   - etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`) over plain HTTP/1.1 with
 *     Node's built-in `fetch` (undici, keep-alive).
 *
 * Only what the client spends is compared (process.cpuUsage over the calls); the server's work
 * is the same request each way. Nothing here is used by the library: it measures whether a
 * transport seam under lib/core/kv.ts would pay.
 */

/** One transport's three calls, each resolving when etcd's answer is read whole. */
interface Transport {
  range(key: string): Promise<void>
  put(key: string, value: string): Promise<void>
  /** If the key's version is > -1 (always), put it; the shape of the library's write Txns. */
  txn(key: string, value: string): Promise<void>
  close(): void
}

function etcd3Transport(ctx: BenchContext): Transport {
  const client = ctx.newClient()
  return {
    range: async (key) => void (await client.get(key).buffer()),
    put: async (key, value) => void (await client.put(key).value(value).exec()),
    txn: async (key, value) => void (await client.if(key, 'Version', '>', -1).then(client.put(key).value(value)).commit()),
    close: () => client.close(),
  }
}

// --- protobuf, only the fields these three requests use (etcd's rpc.proto field numbers) ---

function varint(n: number): number[] {
  const out: number[] = []
  let v = n
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80)
    v = Math.floor(v / 128)
  }
  out.push(v)
  return out
}

/** A length-delimited field (wire type 2). */
function bytesField(field: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([...varint((field << 3) | 2), ...varint(data.length)]), data])
}

/** A varint field (wire type 0); negative values as 10-byte two's complement, as protobuf does. */
function intField(field: number, value: number): Buffer {
  const tag = varint(field << 3)
  if (value >= 0) return Buffer.from([...tag, ...varint(value)])
  const out = [...tag]
  let v = BigInt.asUintN(64, BigInt(value))
  while (v > 0x7fn) {
    out.push(Number((v & 0x7fn) | 0x80n))
    v >>= 7n
  }
  out.push(Number(v))
  return Buffer.from(out)
}

const rangeRequest = (key: string) => bytesField(1, Buffer.from(key))
const putRequest = (key: string, value: string) => Buffer.concat([bytesField(1, Buffer.from(key)), bytesField(2, Buffer.from(value))])
function txnRequest(key: string, value: string): Buffer {
  // Compare { result: GREATER (1), target: VERSION (0), key, version: -1 }
  const compare = Buffer.concat([intField(1, 1), intField(2, 0), bytesField(3, Buffer.from(key)), intField(4, -1)])
  // RequestOp { request_put: PutRequest } (field 2)
  const op = bytesField(2, putRequest(key, value))
  return Buffer.concat([bytesField(1, compare), bytesField(2, op)])
}

/** The gRPC length prefix: not compressed, then the message length big-endian. */
function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5)
  head.writeUInt32BE(message.length, 1)
  return Buffer.concat([head, message])
}

function http2Transport(endpoint: string): Transport {
  const session: ClientHttp2Session = connect(endpoint)
  const unary = (path: string, message: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const stream = session.request({
        [constants.HTTP2_HEADER_METHOD]: 'POST',
        [constants.HTTP2_HEADER_PATH]: path,
        'content-type': 'application/grpc',
        te: 'trailers',
      })
      let status: string | undefined
      stream.on('trailers', (t) => (status = String(t['grpc-status'])))
      stream.on('response', (h) => {
        if (h['grpc-status'] !== undefined) status = String(h['grpc-status'])
      })
      stream.on('data', () => {})
      stream.on('error', reject)
      stream.on('end', () => (status === '0' ? resolve() : reject(new Error(`${path}: grpc-status ${status}`))))
      stream.end(grpcFrame(message))
    })
  return {
    range: (key) => unary('/etcdserverpb.KV/Range', rangeRequest(key)),
    put: (key, value) => unary('/etcdserverpb.KV/Put', putRequest(key, value)),
    txn: (key, value) => unary('/etcdserverpb.KV/Txn', txnRequest(key, value)),
    close: () => session.close(),
  }
}

function gatewayTransport(endpoint: string): Transport {
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  const call = async (path: string, body: unknown) => {
    const res = await fetch(`${endpoint}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    })
    const text = await res.text()
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${text}`)
  }
  return {
    range: (key) => call('/v3/kv/range', { key: b64(key) }),
    put: (key, value) => call('/v3/kv/put', { key: b64(key), value: b64(value) }),
    txn: (key, value) =>
      call('/v3/kv/txn', {
        compare: [{ result: 'GREATER', target: 'VERSION', key: b64(key), version: '-1' }],
        success: [{ request_put: { key: b64(key), value: b64(value) } }],
      }),
    close: () => {},
  }
}

type Op = 'range' | 'put' | 'txn'
const OPS: Op[] = ['range', 'put', 'txn']

/** Client CPU (µs) and wall time (ms) per call, `n` sequential calls after a warm-up. */
async function measure(t: Transport, op: Op, key: string, n: number): Promise<{ cpuUs: number; wallMs: number }> {
  const call = () => (op === 'range' ? t.range(key) : op === 'put' ? t.put(key, 'v') : t.txn(key, 'v'))
  for (let i = 0; i < Math.min(200, n); i++) await call()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < n; i++) await call()
  const wallMs = (performance.now() - t0) / n
  const cpu = process.cpuUsage(cpu0)
  return { cpuUs: (cpu.user + cpu.system) / n, wallMs }
}

export const transport: Scenario = {
  name: 'transport',
  async run(ctx) {
    const n = Math.max(300, Math.round(3000 * ctx.scale))
    const endpoint = ctx.endpoints[0]
    const key = `${ctx.prefix('transport')}/k`
    const transports: Record<string, Transport> = {
      etcd3: etcd3Transport(ctx),
      http2: http2Transport(endpoint),
      gateway: gatewayTransport(endpoint),
    }
    // Each transport proves it reaches etcd before it is timed (a failing call throws here).
    for (const t of Object.values(transports)) await t.put(key, 'v').then(() => t.range(key))
    const runs: Record<string, Record<Op, { cpuUs: number[]; wallMs: number[] }>> = {}
    for (const name of Object.keys(transports)) {
      runs[name] = { range: { cpuUs: [], wallMs: [] }, put: { cpuUs: [], wallMs: [] }, txn: { cpuUs: [], wallMs: [] } }
    }
    // Interleaved rounds, so a slow spell of the machine falls on every transport alike.
    for (let round = 0; round < 3; round++) {
      for (const op of OPS) {
        for (const [name, t] of Object.entries(transports)) {
          const m = await measure(t, op, key, n)
          runs[name][op].cpuUs.push(m.cpuUs)
          runs[name][op].wallMs.push(m.wallMs)
        }
      }
    }
    for (const t of Object.values(transports)) t.close()
    const entries: Entry[] = []
    const notes: string[] = []
    for (const op of OPS) {
      const base = runs.etcd3[op]
      entries.push(
        entry(`transport: ${op}, bare node:http2 gRPC`, 'client CPU µs/call', runs.http2[op].cpuUs, 'etcd3 (grpc-js)', median(base.cpuUs), {
          kind: 'none',
        }),
        entry(
          `transport: ${op}, JSON gateway via fetch`,
          'client CPU µs/call',
          runs.gateway[op].cpuUs,
          'etcd3 (grpc-js)',
          median(base.cpuUs),
          {
            kind: 'none',
          },
        ),
      )
      const f = (name: string) =>
        `${name} ${median(runs[name][op].cpuUs).toFixed(1)} µs CPU / ${median(runs[name][op].wallMs).toFixed(3)} ms per call`
      notes.push(`${op}: ${f('etcd3')}; ${f('http2')}; ${f('gateway')} (medians of 3 interleaved rounds of ${n} sequential calls).`)
    }
    return { entries, notes, details: runs }
  },
}
