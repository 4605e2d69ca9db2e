import { execFile } from 'node:child_process'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import * as esbuildApi from 'esbuild'
import { bundleOptions, writeSupportFiles } from '../../offline/bundle.js'
import type { NodeFunction } from '../../offline/functions.js'
import { entry, type Scenario } from '../util/types.js'
import { median } from '../util/stats.js'
import { cacheDir, esbuild, root } from '../util/build.js'

function child(script: string, env: Record<string, string>): Promise<number> {
  return run([join(root, 'bench', 'cold', script)], root, env, script)
}

function run(args: string[], cwd: string, env: Record<string, string>, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd, env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${what}: ${err.message} ${stderr}`))
      resolve((JSON.parse(stdout.trim().split('\n').pop()!) as { ms: number }).ms)
    })
  })
}

/**
 * A new process loads the packaged artifact's handler (as Lambda's runtime does: `require` of
 * the bundle) and invokes it once; prints the ms from before the require to the answer.
 */
const PACKAGED_PROBE =
  'const t0 = performance.now(); const { handler } = require("./handler.js"); const end = Date.now() + 30000;\n' +
  'handler({}, { functionName: "cold", awsRequestId: "c1", getRemainingTimeInMillis: () => end - Date.now() })\n' +
  '  .then(() => { console.log(JSON.stringify({ ms: performance.now() - t0 })); process.exit(0) }, (e) => { console.error(e); process.exit(1) })\n'

/** Builds the etcdLock fixture exactly as `serverless package` does (offline/bundle.ts) into `dir`. */
async function buildPackaged(dir: string): Promise<void> {
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const fn: NodeFunction = {
    key: 'cold',
    fn: {},
    module: 'handler',
    source: join(root, 'bench', 'fixtures', 'lock-handler.ts'),
    typescript: true,
  }
  await esbuildApi.build(bundleOptions(root, [fn], { outdir: dir, target: 'node20' }))
  writeSupportFiles(dir)
}

/**
 * Cold start: a new Node process per sample. Ours: import the built toolkit (lib bundled by
 * esbuild, npm packages external — what `npm run build` consumers load), create a client, a
 * session and take the first lock. Peer: import etcd3 and do the first put. The packaged
 * artifact (what a deployed function loads): require the bundle and the first invocation of its
 * etcdLock handler (lease grant, lock, unlock). Also Middy + etcdLock from the built toolkit.
 */
export const coldStart: Scenario = {
  name: 'cold-start',
  async run(ctx) {
    const lib = join(cacheDir, 'lib.mjs')
    const mw = join(cacheDir, 'middleware.mjs')
    const packaged = join(cacheDir, 'cold-package')
    const common = ['--bundle', '--platform=node', '--format=esm', '--packages=external', '--target=node20']
    esbuild(['lib/index.ts', ...common, `--outfile=${lib}`])
    let mwWhy: string | undefined
    try {
      esbuild(['middleware/index.ts', ...common, `--outfile=${mw}`])
    } catch (err) {
      mwWhy = (err as Error).message
    }
    await buildPackaged(packaged)
    const runs = Math.max(3, Math.round(11 * Math.min(1, ctx.scale * 2)))
    const ours: number[] = []
    const peer: number[] = []
    const viaMw: number[] = []
    const pkg: number[] = []
    const env = { ETCD_ENDPOINTS: ctx.endpoints.join(','), BENCH_LIB: lib, BENCH_MW: mw }
    for (let i = 0; i < runs; i++) {
      peer.push(await child('peer.mjs', { ...env, BENCH_NAME: ctx.prefix('cold-peer') }))
      ours.push(await child('ours.mjs', { ...env, BENCH_NAME: ctx.prefix('cold-ours') }))
      pkg.push(await run(['-e', PACKAGED_PROBE], packaged, { ETCD_ENDPOINTS: env.ETCD_ENDPOINTS }, 'packaged handler'))
      if (!mwWhy) viaMw.push(await child('middleware.mjs', { ...env, BENCH_NAME: ctx.prefix('cold-mw') }))
    }
    const o = median(ours)
    const p = median(peer)
    const k = median(pkg)
    const m = viaMw.length ? median(viaMw) : null
    return {
      entries: [
        entry('cold start, packaged artifact: require + first etcdLock invocation', 'ms (median)', pkg, 'etcd3 import + first put', peer, {
          kind: 'max-ratio',
          ratio: 0.8,
        }),
        entry('cold start: new process, import + first lock', 'ms (median)', ours, 'etcd3 import + first put', peer, {
          kind: 'max-ratio',
          ratio: 1.5,
        }),
      ],
      notes: [
        `${runs} new processes each, alternating (medians). Packaged artifact (the esbuild bundle \`serverless package\` builds, etcd3's service definitions precompiled in it): require + first invocation of the etcdLock handler (lease grant, lock Txn, unlock Txn) ${k.toFixed(1)} ms; ` +
          `ours from the built toolkit (import lib + client + Session (lease grant) + first lock): ${o.toFixed(1)} ms; ` +
          `etcd3 import + client + first put: ${p.toFixed(1)} ms; Middy + etcdLock first invocation from the built toolkit: ${m === null ? `not available (${mwWhy})` : `${m.toFixed(1)} ms`}. ` +
          'Times run from just before the first import (require) to the answer, inside the child (Node start-up itself, equal for all, is excluded).',
      ],
      details: { packaged: pkg, ours, peer, middleware: viaMw },
    }
  },
}
