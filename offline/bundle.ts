// esbuild bundles of a service's handlers, the same for `serverless offline` and for `serverless
// package`: one CommonJS file per handler module with every dependency inside, etcd3's `.proto`
// files beside them (etcd3 reads them from disk when it is imported, etcd3 issue #179: a bundle
// without them fails at its first line) and a package.json that makes `.js` CommonJS.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { ConfigurationError } from '../lib/errors.js'
import type { NodeFunction } from './functions.js'

type Esbuild = typeof import('esbuild')
type BuildOptions = import('esbuild').BuildOptions

/** The directory name, at the artifact root, that holds etcd3's proto files. */
export const PROTO_DIR = 'etcd3-proto'
/** Written at the artifact root: the bundles are CommonJS whatever the service's package.json says. */
export const PACKAGE_JSON = 'package.json'

/** Packages whose use makes a handler ours: it needs the proto files that only we ship. */
const ETCD_PACKAGES = /^(middy-etcd|etcd3)(\/|$)/

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

/** esbuild, from the service's own node_modules first. */
export async function loadEsbuild(serviceDir: string): Promise<Esbuild> {
  const fromService = createRequire(join(serviceDir, 'package.json'))
  try {
    return (await import(fromService.resolve('esbuild'))) as Esbuild
  } catch {
    try {
      return await import('esbuild')
    } catch (err) {
      throw new ConfigurationError('esbuild', 'middy-etcd bundles handlers with esbuild, which is not installed in this service: npm install --save-dev esbuild', { cause: err })
    }
  }
}

/**
 * The functions whose handler code imports middy-etcd or etcd3, or is TypeScript. Reads only the
 * service's own modules (packages stay external), so it is quick and never fails on a package
 * esbuild could not bundle.
 */
export async function usingEtcd(esbuild: Esbuild, serviceDir: string, functions: NodeFunction[]): Promise<NodeFunction[]> {
  if (functions.length === 0) return []
  const scan = await esbuild.build({
    entryPoints: Object.fromEntries(functions.map((f) => [f.module, f.source])),
    absWorkingDir: serviceDir,
    outdir: join(serviceDir, '.middy-etcd-scan'),
    bundle: true,
    write: false,
    metafile: true,
    packages: 'external',
    platform: 'node',
    format: 'cjs',
    logLevel: 'silent',
  })
  const uses = new Set<string>()
  for (const output of Object.values(scan.metafile!.outputs)) {
    if (output.entryPoint && output.imports.some((i) => i.external && ETCD_PACKAGES.test(i.path))) uses.add(output.entryPoint)
  }
  const relativeSource = (f: NodeFunction) => f.source.slice(serviceDir.length + 1).split('\\').join('/')
  return functions.filter((f) => f.typescript || uses.has(relativeSource(f)))
}

/** Options of {@link bundleHandlers}. */
export interface BundleOptions {
  outdir: string
  /** esbuild target, e.g. `node22`. */
  target: string
  /** Linked source maps beside the bundles (default none: they double the artifact). */
  sourcemap?: boolean
}

/** The esbuild options for bundling `functions` (also used for watching, offline). */
export function bundleOptions(serviceDir: string, functions: NodeFunction[], options: BundleOptions): BuildOptions {
  return {
    entryPoints: Object.fromEntries(functions.map((f) => [f.module, f.source])),
    absWorkingDir: serviceDir,
    outdir: options.outdir,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: options.target,
    minify: true,
    // Error classes name themselves after their constructor (`err.name`): keep the names.
    keepNames: true,
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
  }
}

/**
 * Bundles each function's handler into `<outdir>/<module>.js` and writes the proto files and the
 * CommonJS package.json beside them. Returns module → bundle file.
 */
export async function bundleHandlers(esbuild: Esbuild, serviceDir: string, functions: NodeFunction[], options: BundleOptions): Promise<Map<string, string>> {
  await esbuild.build(bundleOptions(serviceDir, functions, options))
  writeSupportFiles(options.outdir)
  return new Map(functions.map((f) => [f.module, join(options.outdir, `${f.module}.js`)]))
}

/**
 * etcd3's proto files and the CommonJS package.json. The protos come from the etcd3 this
 * package depends on (an exact version), which is the one bundled with middy-etcd.
 */
export function writeSupportFiles(outdir: string): void {
  const protoSource = join(dirname(createRequire(import.meta.url).resolve('etcd3/package.json')), 'proto')
  mkdirSync(join(outdir, PROTO_DIR), { recursive: true })
  for (const file of readdirSync(protoSource)) {
    if (file.endsWith('.proto')) copyFileSync(join(protoSource, file), join(outdir, PROTO_DIR, file))
  }
  writeFileSync(join(outdir, PACKAGE_JSON), `${JSON.stringify({ type: 'commonjs' })}\n`)
}
