// `serverless package` for TypeScript handlers that use etcd3: bundles each function's handler
// with esbuild into `.serverless/build/<handler path>.js` (CommonJS, so `__dirname` exists) and
// ships etcd3's `.proto` files beside the bundles — etcd3 reads them from disk when it is
// imported (etcd3 issue #179), so a bundle without them fails at its first line. osls then zips
// the build directory instead of the source tree, and the artifacts are moved back to
// `.serverless/` where deploy expects them.
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative, resolve } from 'node:path'
import { ConfigurationError } from '../lib/errors.js'
import type { PluginLog, ServerlessLike } from './config.js'

/** The directory name, at the artifact root, that holds etcd3's proto files. */
export const PROTO_DIR = 'etcd3-proto'

export interface BundleResult {
  /** The directory that was packaged. */
  buildDir: string
  /** Entry (handler module path) → bundle file. */
  bundles: Record<string, string>
  /** Restores the service directory and moves the artifacts to `.serverless/`. */
  finish(): Promise<void>
}

const SOURCE_EXTENSIONS = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs']

/** `handlers/counter.handler` → `handlers/counter` (the module path Lambda loads). */
export function handlerModule(handler: string): string {
  const dot = handler.lastIndexOf('.')
  if (dot <= 0) throw new ConfigurationError('handler', `handler ${JSON.stringify(handler)} must look like path/to/file.exportName`)
  return handler.slice(0, dot)
}

/** esbuild's `target` for a Lambda runtime such as `nodejs22.x`. */
export function nodeTarget(runtime: string | undefined): string {
  const m = /^nodejs(\d+)/.exec(runtime ?? '')
  return `node${m ? m[1] : '20'}`
}

// etcd3 loads `${__dirname}/../proto/rpc.proto`. In a bundle `__dirname` is the bundle's
// directory, which differs per handler: look upwards for the shipped proto directory instead.
const PROTO_LOOKUP = `(() => {
  const fs = require("fs"), path = require("path");
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, ${JSON.stringify(PROTO_DIR)});
    if (fs.existsSync(path.join(candidate, "rpc.proto"))) return candidate;
    if (path.dirname(dir) === dir) throw new Error("middy-etcd: ${PROTO_DIR}/rpc.proto not found above " + __dirname + "; the package must ship etcd3's proto files");
  }
})()`

/**
 * Bundles every function's handler and points osls's packaging at the bundles. Call
 * `finish()` after osls has zipped them.
 */
export async function bundleService(
  serverless: ServerlessLike,
  log: PluginLog,
  options: { include?: string[]; sourcemap?: boolean } = {},
): Promise<BundleResult> {
  const root = serverless.serviceDir
  const buildDir = join(root, '.serverless', 'build')
  rmSync(buildDir, { recursive: true, force: true })
  mkdirSync(buildDir, { recursive: true })
  const { service } = serverless

  const entryPoints: Record<string, string> = {}
  for (const key of service.getAllFunctions()) {
    const fn = service.getFunction(key)
    if (!fn.handler) continue
    const mod = handlerModule(fn.handler)
    const source = SOURCE_EXTENSIONS.map((ext) => join(root, mod + ext)).find((p) => existsSync(p))
    if (!source) throw new ConfigurationError('handler', `function ${key}: no source for handler ${fn.handler} (looked for ${mod}{${SOURCE_EXTENSIONS.join(',')}})`)
    entryPoints[mod] = source
  }

  const requireFromService = createRequire(join(root, 'package.json'))
  let esbuild: typeof import('esbuild')
  try {
    esbuild = (await import(requireFromService.resolve('esbuild'))) as typeof import('esbuild')
  } catch {
    try {
      esbuild = await import('esbuild')
    } catch (err) {
      throw new ConfigurationError('esbuild', 'middy-etcd packages handlers with esbuild, which is not installed: npm install -D esbuild', { cause: err })
    }
  }

  await esbuild.build({
    entryPoints,
    outdir: buildDir,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: nodeTarget(service.provider.runtime),
    // No source maps by default: they double the artifact and slow the cold start's parse.
    sourcemap: options.sourcemap ? 'linked' : false,
    logLevel: 'warning',
    plugins: [
      {
        name: 'etcd3-proto-path',
        setup(build) {
          build.onLoad({ filter: /[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, (args) => {
            const code = readFileSync(args.path, 'utf8')
            const patched = code.replace('`${__dirname}/../proto/rpc.proto`', `require("path").join(${PROTO_LOOKUP}, "rpc.proto")`)
            if (patched === code) throw new Error(`middy-etcd: etcd3's proto path changed in ${args.path}; cannot bundle it safely`)
            return { contents: patched, loader: 'js' }
          })
        },
      },
    ],
  })

  const protoSource = join(dirname(requireFromService.resolve('etcd3/package.json')), 'proto')
  mkdirSync(join(buildDir, PROTO_DIR))
  for (const file of readdirSync(protoSource)) {
    if (file.endsWith('.proto')) copyFileSync(join(protoSource, file), join(buildDir, PROTO_DIR, file))
  }

  // Files the functions read at run time (e.g. the CA bundle ETCD_CA_FILE points at), same relative paths.
  for (const file of options.include ?? []) {
    const from = resolve(root, file)
    const rel = relative(root, from)
    if (rel.startsWith('..') || !existsSync(from)) {
      throw new ConfigurationError('custom.etcd.include', `custom.etcd.include: ${JSON.stringify(file)} is not a file or directory inside the service`)
    }
    cpSync(from, join(buildDir, rel), { recursive: true })
  }

  const bundles = Object.fromEntries(Object.keys(entryPoints).map((mod) => [mod, join(buildDir, `${mod}.js`)]))
  log.notice(`middy-etcd: bundled ${Object.keys(bundles).length} handler${Object.keys(bundles).length === 1 ? '' : 's'} with etcd3's proto files into ${relative(root, buildDir)}`)

  // osls zips serviceDir and writes the zip to <serviceDir>/.serverless: point it at the bundles.
  serverless.serviceDir = buildDir
  let finished = false
  return {
    buildDir,
    bundles,
    async finish() {
      if (finished) return
      finished = true
      serverless.serviceDir = root
      const builtArtifacts = join(buildDir, '.serverless')
      const target = join(root, '.serverless')
      const moved = new Map<string, string>()
      if (existsSync(builtArtifacts)) {
        for (const file of readdirSync(builtArtifacts)) {
          const from = join(builtArtifacts, file)
          const to = join(target, file)
          renameSync(from, to)
          moved.set(resolve(from), to)
        }
      }
      const relocate = (pkg?: { artifact?: string }) => {
        if (pkg?.artifact && moved.has(resolve(buildDir, pkg.artifact))) pkg.artifact = moved.get(resolve(buildDir, pkg.artifact))
      }
      relocate(service.package)
      for (const key of service.getAllFunctions()) relocate(service.getFunction(key).package)
      const svc = service as { artifact?: string }
      if (svc.artifact && moved.has(resolve(buildDir, svc.artifact))) svc.artifact = moved.get(resolve(buildDir, svc.artifact))
      rmSync(buildDir, { recursive: true, force: true })
    },
  }
}
