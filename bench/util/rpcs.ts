/**
 * Counts what a piece of work asks of etcd: the server's own `grpc_server_msg_received_total`
 * (every unary request and every stream message, per method) from /metrics, before and after.
 * Measured, not estimated — and it counts the Go peer's requests the same way.
 */
export type RpcCounts = Record<string, number>

export async function rpcSnapshot(endpoint: string): Promise<RpcCounts> {
  const text = await (await fetch(`${endpoint}/metrics`)).text()
  const out: RpcCounts = {}
  const re = /^grpc_server_msg_received_total\{grpc_method="(\w+)",grpc_service="([\w.]+)"[^}]*\} (\d+(?:\.\d+)?(?:e\+\d+)?)$/gm
  for (const m of text.matchAll(re)) if (m[2].startsWith('etcdserverpb.')) out[m[1]] = Number(m[3])
  return out
}

/** Messages per operation between two snapshots, e.g. `{ Txn: 2, Watch: 1.5 }` (zeros left out). */
export function rpcPerOp(before: RpcCounts, after: RpcCounts, ops: number): RpcCounts {
  const out: RpcCounts = {}
  for (const [k, v] of Object.entries(after)) {
    const d = (v - (before[k] ?? 0)) / ops
    if (d > 0.005) out[k] = Number(d.toFixed(2))
  }
  return out
}

export function formatRpcs(r: RpcCounts): string {
  const parts = Object.entries(r).map(([k, v]) => `${k} ${v}`)
  return parts.length ? parts.join(', ') : 'none'
}

/** Runs `work` and returns its result with the etcd messages it caused per op. */
export async function countRpcs<T>(endpoint: string, ops: number, work: () => Promise<T>): Promise<{ result: T; perOp: RpcCounts }> {
  const before = await rpcSnapshot(endpoint)
  const result = await work()
  return { result, perOp: rpcPerOp(before, await rpcSnapshot(endpoint), ops) }
}

/** Bytes etcd has sent to its gRPC clients (`etcd_network_client_grpc_sent_bytes_total`): what clients received. */
export async function sentBytes(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text()
  const m = /^etcd_network_client_grpc_sent_bytes_total (\d+(?:\.\d+)?(?:e\+\d+)?)$/m.exec(text)
  if (!m) throw new Error(`${endpoint}/metrics has no etcd_network_client_grpc_sent_bytes_total`)
  return Number(m[1])
}
