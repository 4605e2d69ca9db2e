import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { entry, type Scenario } from '../util/types.js'
import { median } from '../util/stats.js'
import { cacheDir, esbuild, root } from '../util/build.js'

function child(script: string, env: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(root, 'bench', 'cold', script)], { cwd: root, env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${script}: ${err.message} ${stderr}`))
      resolve((JSON.parse(stdout.trim().split('\n').pop()!) as { ms: number }).ms)
    })
  })
}

/**
 * Cold start: a new Node process per sample. Ours: import the built toolkit (lib bundled by
 * esbuild, npm packages external — what `npm run build` consumers load), create a client, a
 * session and take the first lock. Peer: import etcd3 and do the first put. Also the first
 * invocation of an etcdLock handler (Middy + middleware) for reference.
 */
export const coldStart: Scenario = {
  name: 'cold-start',
  async run(ctx) {
    const lib = join(cacheDir, 'lib.mjs')
    const mw = join(cacheDir, 'middleware.mjs')
    const common = ['--bundle', '--platform=node', '--format=esm', '--packages=external', '--target=node20']
    esbuild(['lib/index.ts', ...common, `--outfile=${lib}`])
    let mwWhy: string | undefined
    try {
      esbuild(['middleware/index.ts', ...common, `--outfile=${mw}`])
    } catch (err) {
      mwWhy = (err as Error).message
    }
    const runs = Math.max(3, Math.round(11 * Math.min(1, ctx.scale * 2)))
    const ours: number[] = []
    const peer: number[] = []
    const viaMw: number[] = []
    const env = { ETCD_ENDPOINTS: ctx.endpoints.join(','), BENCH_LIB: lib, BENCH_MW: mw }
    for (let i = 0; i < runs; i++) {
      peer.push(await child('peer.mjs', { ...env, BENCH_NAME: ctx.prefix('cold-peer') }))
      ours.push(await child('ours.mjs', { ...env, BENCH_NAME: ctx.prefix('cold-ours') }))
      if (!mwWhy) viaMw.push(await child('middleware.mjs', { ...env, BENCH_NAME: ctx.prefix('cold-mw') }))
    }
    const o = median(ours)
    const p = median(peer)
    const m = viaMw.length ? median(viaMw) : null
    return {
      entries: [entry('cold start: new process, import + first lock', 'ms (median)', o, 'etcd3 import + first put', p, { kind: 'max-ratio', ratio: 1.5 })],
      notes: [
        `${runs} new processes each (median). Ours (import lib + client + Session (lease grant) + first lock): ${o.toFixed(1)} ms; ` +
          `etcd3 import + client + first put: ${p.toFixed(1)} ms; Middy + etcdLock first invocation: ${m === null ? `not available (${mwWhy})` : `${m.toFixed(1)} ms`}. ` +
          'Times run from just before the first import to the answer, inside the child (Node start-up itself, equal for both, is excluded).',
      ],
      details: { ours, peer, middleware: viaMw },
    }
  },
}
