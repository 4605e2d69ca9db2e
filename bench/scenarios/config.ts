import { Worker } from 'node:worker_threads'
import middy from '@middy/core'
import type { Context } from 'aws-lambda'
import { etcdConfig, type ConfigContext } from '../../middleware/index.js'
import { lambdaContext } from '../../testing/index.js'
import { rpcSnapshot, type RpcCounts } from '../util/rpcs.js'
import { pct, sleep } from '../util/stats.js'
import { entry, type BenchContext, type Scenario } from '../util/types.js'

/**
 * Issue 28: configuration from etcd on warm invocations.
 *
 *   - etcd requests per warm invocation with nothing changed: etcdConfig vs a TTL cache (what
 *     @middy/ssm and Powertools Parameters do: fetch the values, serve them for `maxAge`, fetch
 *     again), both invoked at the same pace for the same time;
 *   - time from a write to the first invocation that serves it, warm (invocations every ms)
 *     and after a thaw: the event loop is blocked for 1.5 s (what a frozen Lambda looks like to
 *     the cache: its tick comes late) while a worker thread writes the change, then the next
 *     invocation is timed from the end of the block.
 */

type Settings = { version: string; limits: { rps: number } }

/** The TTL peer: one Range of the prefix per `maxAgeMs`, served from memory in between. */
function ttlCached(ctx: BenchContext, prefix: string, maxAgeMs: number) {
  let fetchedAt = -Infinity
  let values: Record<string, unknown> = {}
  return middy(async () => {
    if (performance.now() - fetchedAt > maxAgeMs) {
      const kvs = await ctx.client.getAll().prefix(prefix).strings()
      values = Object.fromEntries(Object.entries(kvs).map(([k, v]) => [k.slice(prefix.length), JSON.parse(v)]))
      fetchedAt = performance.now()
    }
    return values
  })
}

/**
 * What a configuration read can ask of etcd: Range (a load, a proof), Watch (its stream) and Txn.
 * Not the lease keepalives of other scenarios' sessions still open on this etcd, which the
 * server's counters count alike.
 */
const CONFIG_METHODS = ['Range', 'Watch', 'Txn']

function requestsIn(before: RpcCounts, after: RpcCounts): number {
  let n = 0
  for (const k of CONFIG_METHODS) n += (after[k] ?? 0) - (before[k] ?? 0)
  return n
}

/** Invokes `call` every `paceMs` for `ms`; returns the etcd requests made meanwhile and the invocations. */
async function paced(ctx: BenchContext, call: () => Promise<unknown>, ms: number, paceMs: number) {
  // The load (first invocation) and the watch it starts are not what is counted.
  await call()
  await sleep(500)
  await call()
  const before = await rpcSnapshot(ctx.endpoints[0])
  let invocations = 0
  const until = performance.now() + ms
  while (performance.now() < until) {
    await call()
    invocations++
    await sleep(paceMs)
  }
  return { requests: requestsIn(before, await rpcSnapshot(ctx.endpoints[0])), invocations }
}

/** A put through etcd's JSON gateway from a worker thread: it runs while this thread is blocked. */
function putFromWorker(endpoint: string, key: string, value: string, blockMs: number): Promise<void> {
  const source = `
    const { workerData, parentPort } = require('node:worker_threads')
    const b64 = (s) => Buffer.from(s).toString('base64')
    setTimeout(async () => {
      const res = await fetch(workerData.endpoint + '/v3/kv/put', { method: 'POST', body: JSON.stringify({ key: b64(workerData.key), value: b64(workerData.value) }) })
      parentPort.postMessage(res.status)
    }, 100)`
  const worker = new Worker(source, { eval: true, workerData: { endpoint, key, value } })
  const done = new Promise<void>((resolve, reject) => {
    worker.once('message', (status: number) => (status === 200 ? resolve() : reject(new Error(`gateway put: HTTP ${status}`))))
    worker.once('error', reject)
  })
  // The block: no tick, no socket read, as in a frozen process.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, blockMs)
  return done.finally(() => worker.terminate())
}

export const config: Scenario = {
  name: 'config',
  async run(ctx) {
    const prefix = `${ctx.prefix('config')}/`
    await ctx.client.put(`${prefix}version`).value('"0"')
    await ctx.client.put(`${prefix}limits`).value('{"rps":20}')
    // maxStaleMs left at its default (30 s): at least the 13 s a quiet watch vouches for, so a
    // running process proves nothing by request (below 13 s it pays one Range per maxStaleMs).
    const handler = middy(async (_e: unknown, context: Context & ConfigContext<Settings>) => context.etcd.config).use(
      etcdConfig<Settings>({ prefix, parse: 'json', client: ctx.client }),
    )
    const invoke = () => handler({}, lambdaContext()) as Promise<Settings>
    const ms = Math.max(3000, Math.round(10_000 * ctx.scale))
    const maxAgeMs = 1000
    const ours = await paced(ctx, invoke, ms, 5)
    const ttlHandler = ttlCached(ctx, prefix, maxAgeMs)
    const ttl = await paced(ctx, () => ttlHandler({}, lambdaContext()), ms, 5)

    // Warm: a write, then invocations back to back until one serves it.
    const writes = Math.max(20, Math.round(100 * ctx.scale))
    const warm: number[] = []
    for (let i = 1; i <= writes; i++) {
      const t0 = performance.now()
      await ctx.client.put(`${prefix}version`).value(JSON.stringify(`w${i}`))
      while ((await invoke()).version !== `w${i}`) await new Promise((r) => setImmediate(r))
      warm.push(performance.now() - t0)
    }
    // After a thaw: the write lands while the thread is blocked; timed from the end of the block.
    const thaws = Math.max(5, Math.round(20 * ctx.scale))
    const thawed: number[] = []
    for (let i = 1; i <= thaws; i++) {
      await invoke()
      await putFromWorker(ctx.endpoints[0], `${prefix}version`, JSON.stringify(`t${i}`), 1500)
      const t0 = performance.now()
      while ((await invoke()).version !== `t${i}`) await new Promise((r) => setImmediate(r))
      thawed.push(performance.now() - t0)
    }
    const perInvocation = (r: { requests: number; invocations: number }) => r.requests / r.invocations
    const f = (xs: number[]) => `p50 ${pct(xs, 0.5).toFixed(2)} / p99 ${pct(xs, 0.99).toFixed(2)} ms`
    return {
      entries: [
        entry(
          `etcdConfig: warm invocations, nothing changed (${ms / 1000} s, one every 5 ms)`,
          'etcd requests/invocation',
          perInvocation(ours),
          `a TTL cache (maxAge ${maxAgeMs} ms)`,
          perInvocation(ttl),
          { kind: 'max-ratio', ratio: 0 },
        ),
        entry('etcdConfig: a write to the first warm invocation serving it', 'p50 ms', pct(warm, 0.5), '—', null, { kind: 'none' }),
        entry('etcdConfig: a write to the first warm invocation serving it', 'p99 ms', pct(warm, 0.99), '—', null, { kind: 'none' }),
        entry(
          'etcdConfig: after a 1.5 s freeze, the first invocation serving a write made during it',
          'p50 ms',
          pct(thawed, 0.5),
          '—',
          null,
          {
            kind: 'none',
          },
        ),
        entry(
          'etcdConfig: after a 1.5 s freeze, the first invocation serving a write made during it',
          'p99 ms',
          pct(thawed, 0.99),
          '—',
          null,
          {
            kind: 'none',
          },
        ),
      ],
      notes: [
        `etcdConfig (default maxStaleMs, 30 s) vs a TTL cache of the same prefix (maxAge ${maxAgeMs} ms, as @middy/ssm's cacheExpiry), each invoked every 5 ms for ${ms / 1000} s with nothing changed: ` +
          `etcdConfig ${ours.requests} etcd requests in ${ours.invocations} invocations; the TTL cache ${ttl.requests} in ${ttl.invocations} (one per maxAge). ` +
          `A write to the first warm invocation serving it: ${f(warm)} (${writes} writes, invocations back to back). ` +
          `After a 1.5 s block of the event loop during which a worker thread wrote the change (the cache sees a freeze): ${f(thawed)} from the end of the block (${thaws} freezes).`,
      ],
      details: { ours, ttl, warm, thawed },
    }
  },
}
