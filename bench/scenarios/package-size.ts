import { execFileSync, execFile } from 'node:child_process'
import { cpSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { entry, type Scenario } from '../util/types.js'
import { cacheDir, esbuild, root } from '../util/build.js'

/**
 * Packaged function size: the etcdLock fixture handler bundled by esbuild (CommonJS, every
 * dependency inside, minified) plus etcd3's .proto files, which etcd3 reads from disk at import
 * (etcd3 issue #179), zipped as a Lambda artifact. The artifact is then loaded and invoked once
 * in a new process, so the number is for a package that runs.
 */
export const packageSize: Scenario = {
  name: 'package-size',
  async run(ctx) {
    const dir = join(cacheDir, 'package')
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(join(dir, 'dist'), { recursive: true })
    esbuild(['bench/fixtures/lock-handler.ts', '--bundle', '--platform=node', '--format=cjs', '--minify', '--target=node20', `--outfile=${join(dir, 'dist', 'handler.js')}`])
    // etcd3 loads `${__dirname}/../proto/rpc.proto`: ship the protos beside dist/.
    cpSync(join(root, 'node_modules', 'etcd3', 'proto'), join(dir, 'proto'), { recursive: true })
    const zip = join(cacheDir, 'lock-handler.zip')
    rmSync(zip, { force: true })
    execFileSync('zip', ['-qr9', zip, 'dist', 'proto'], { cwd: dir })
    const kib = statSync(zip).size / 1024
    const unzipped = statSync(join(dir, 'dist', 'handler.js')).size / 1024
    const probe = join(dir, 'probe.cjs')
    writeFileSync(
      probe,
      "const { handler } = require('./dist/handler.js');\nconst end = Date.now() + 30000;\n" +
        "handler({}, { functionName: 'pkg', awsRequestId: 'p1', getRemainingTimeInMillis: () => end - Date.now() })\n" +
        '  .then((r) => { console.log(JSON.stringify(r)); process.exit(0) }, (e) => { console.error(e); process.exit(1) })\n',
    )
    const runs = await new Promise<string>((resolve) => {
      execFile(process.execPath, [probe], { cwd: dir, env: { ...process.env, ETCD_ENDPOINTS: ctx.endpoints.join(',') }, timeout: 30_000 }, (err, stdout, stderr) =>
        resolve(err ? `FAILED: ${stderr.slice(0, 300)}` : stdout.trim()),
      )
    })
    return {
      entries: [entry('packaged function (zip): etcdLock no-op handler', 'KiB', kib, '—', null, { kind: 'none' })],
      notes: [`esbuild bundle ${unzipped.toFixed(0)} KiB (minified CJS, all dependencies) + etcd3 protos, zipped: ${kib.toFixed(0)} KiB. Packaged artifact invoked once in a new process: ${runs}.`],
      details: { zipKiB: kib, bundleKiB: unzipped, probe: runs },
    }
  },
}
