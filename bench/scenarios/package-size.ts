import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import * as esbuild from 'esbuild'
import { bundleOptions, PACKAGE_JSON, writeSupportFiles } from '../../offline/bundle.js'
import { writeZip } from '../../offline/zip.js'
import { serviceFiles } from '../../offline/patterns.js'
import type { NodeFunction } from '../../offline/functions.js'
import { entry, type Scenario } from '../util/types.js'
import { cacheDir, root } from '../util/build.js'

/** One packaged function: its handler source and the event/environment of one probe invocation. */
interface Packaged {
  label: string
  source: string
  env: Record<string, string>
}

/**
 * Packaged function sizes, built exactly as the plugin's `serverless package` builds them
 * (offline/bundle.ts: esbuild, minified CommonJS with every dependency inside, etcd3's .proto
 * files parsed into it, the CommonJS package.json beside it; offline/zip.ts): the etcdLock fixture handler
 * and the deployable queue dispatcher (`export { handler } from 'middy-etcd/dispatcher'`).
 * Each artifact is unzipped-equivalent (the build directory) and invoked once in a new
 * process, so the numbers are for packages that run. The dispatcher's bundle inputs are also
 * checked: no Middy, middleware/ or offline/ code may be in it.
 */
export const packageSize: Scenario = {
  name: 'package-size',
  async run(ctx) {
    const functions: Packaged[] = [
      { label: 'etcdLock no-op handler', source: 'bench/fixtures/lock-handler.ts', env: {} },
      {
        label: 'queue dispatcher (middy-etcd/dispatcher)',
        source: 'handlers/dispatcher.ts',
        env: {
          ETCD_QUEUE_SUBSCRIPTIONS: JSON.stringify([{ function: 'bench-consumer', queue: ctx.prefix('dispatcher-empty') }]),
          ETCD_DISPATCH_TAIL_MS: '29000',
        },
      },
    ]
    const entries = []
    const notes: string[] = []
    const details: Record<string, unknown> = {}
    for (const [i, f] of functions.entries()) {
      const dir = join(cacheDir, `package-${i}`)
      rmSync(dir, { recursive: true, force: true })
      mkdirSync(dir, { recursive: true })
      const fn: NodeFunction = { key: `f${i}`, fn: {}, module: 'handler', source: join(root, f.source), typescript: true }
      const result = await esbuild.build({ ...bundleOptions(root, [fn], { outdir: dir, target: 'node22' }), metafile: true })
      writeSupportFiles(dir)
      const files = serviceFiles(dir)
      const zip = join(cacheDir, `package-${i}.zip`)
      const bytes = writeZip(
        zip,
        files.map((name) => ({ name, data: readFileSync(join(dir, name)) })),
      )
      const kib = bytes / 1024
      const bundleKiB = statSync(join(dir, 'handler.js')).size / 1024
      const inputs = Object.keys(result.metafile.inputs)
      const foreign = inputs.filter((p) => /^(middleware|offline)\/|node_modules\/(@middy|esbuild)\//.test(p))
      const probe = await invoke(dir, { ...f.env, ETCD_ENDPOINTS: ctx.endpoints.join(',') })
      entries.push(entry(`packaged function (zip): ${f.label}`, 'KiB', kib, '—', null, { kind: 'none' }))
      notes.push(
        `${f.label}: bundle ${bundleKiB.toFixed(0)} KiB (etcd3's protos built in) + ${PACKAGE_JSON}, zipped ${kib.toFixed(0)} KiB; ${inputs.length} input files` +
          (i === 1 ? `, of which Middy/middleware/offline/esbuild: ${foreign.length === 0 ? 'none' : foreign.join(', ')}` : '') +
          `. Invoked once in a new process: ${probe}.`,
      )
      details[f.label] = { zipKiB: kib, bundleKiB, inputs: inputs.length, foreignInputs: foreign, probe }
    }
    return { entries, notes, details }
  },
}

/** Loads `handler.js` from `dir` in a new Node process and invokes it once; its result or the failure. */
function invoke(dir: string, env: Record<string, string>): Promise<string> {
  const script =
    "const { handler } = require('./handler.js'); const end = Date.now() + 30000;\n" +
    "handler({}, { functionName: 'pkg', awsRequestId: 'p1', getRemainingTimeInMillis: () => end - Date.now() })\n" +
    '  .then((r) => { console.log(JSON.stringify(r)); process.exit(0) }, (e) => { console.error(e); process.exit(1) })\n'
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['-e', script],
      { cwd: dir, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
      (err, stdout, stderr) => resolve(err ? `FAILED: ${stderr.slice(0, 300)}` : stdout.trim()),
    )
  })
}
