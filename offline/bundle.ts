// esbuild bundles of a service's handlers, the same for `serverless offline` and for `serverless
// package`: one CommonJS file per handler module with every dependency inside — etcd3's `.proto`
// files included, parsed at build time (etcd3 itself reads and parses them from disk when it is
// imported, etcd3 issue #179) — and a package.json that makes `.js` CommonJS.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { ConfigurationError } from '../lib/errors.js'
import type { NodeFunction } from './functions.js'

type Esbuild = typeof import('esbuild')
type BuildOptions = import('esbuild').BuildOptions

/** Written at the artifact root: the bundles are CommonJS whatever the service's package.json says. */
export const PACKAGE_JSON = 'package.json'

/** Packages whose use makes a handler ours: its bundle needs etcd3's protos built in, which only we do. */
const ETCD_PACKAGES = /^(middy-etcd|etcd3)(\/|$)/

/** etcd3's own proto loading in lib/connection-pool.js, as it is in the etcd3 version we depend on. */
const ETCD3_LOADER = 'const proto_loader_1 = require("@grpc/proto-loader");'
const ETCD3_LOAD_SYNC = `(0, proto_loader_1.loadSync)(\`\${__dirname}/../proto/rpc.proto\`, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
})`

/**
 * etcd3's connection-pool.js with its .proto files loaded at build time. etcd3 parses them when
 * it is imported (proto-loader's loadSync), and proto-loader then builds reflection descriptors
 * of every message, which grpc-js's clients never use: together tens of ms of every cold start.
 * The bundle instead carries the parsed files as protobufjs JSON (made here, with etcd3's
 * `keepCase`) and builds the same service definitions grpc-js needs from it (path, streaming,
 * and proto-loader's serializers: `fromObject` + `encode`, `decode` + `toObject` with etcd3's
 * options), with protobufjs's light build (no parser).
 */
function withPrecompiledProtos(connectionPool: string): string {
  const code = readFileSync(connectionPool, 'utf8')
  if (!code.includes(ETCD3_LOADER) || !code.includes(ETCD3_LOAD_SYNC)) {
    throw new Error(`middy-etcd: etcd3's proto loading changed in ${connectionPool}; cannot bundle it safely`)
  }
  const etcd3Dir = join(dirname(connectionPool), '..')
  const fromLoader = createRequire(createRequire(join(etcd3Dir, 'package.json')).resolve('@grpc/proto-loader'))
  const protobuf = fromLoader('protobufjs') as typeof import('protobufjs')
  const camelCase = fromLoader('lodash.camelcase') as (name: string) => string
  const root = new protobuf.Root()
  root.loadSync(join(etcd3Dir, 'proto', 'rpc.proto'), { keepCase: true })
  root.resolveAll()
  const services: Record<
    string,
    { name: string; originalName: string; requestType: string; responseType: string; requestStream: boolean; responseStream: boolean }[]
  > = {}
  const visit = (ns: import('protobufjs').NamespaceBase) => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Service) {
        services[obj.fullName.slice(1)] = obj.methodsArray.map((m) => ({
          name: m.name,
          originalName: camelCase(m.name),
          requestType: m.resolvedRequestType!.fullName,
          responseType: m.resolvedResponseType!.fullName,
          requestStream: Boolean(m.requestStream),
          responseStream: Boolean(m.responseStream),
        }))
      } else if (obj instanceof protobuf.Namespace) visit(obj)
    }
  }
  visit(root)
  const light = fromLoader.resolve('protobufjs/light')
  const definitions = `((json, services) => {
    const root = require(${JSON.stringify(light)}).Root.fromJSON(json);
    const options = { longs: String, enums: String, defaults: true, oneofs: true };
    const serialize = (type) => (arg) => type.encode(type.fromObject(arg)).finish();
    const deserialize = (type) => (buf) => type.toObject(type.decode(buf), options);
    const definition = {};
    for (const [service, methods] of Object.entries(services)) {
      definition[service] = {};
      for (const m of methods) {
        const request = root.lookupType(m.requestType), response = root.lookupType(m.responseType);
        definition[service][m.name] = { path: "/" + service + "/" + m.name, requestStream: m.requestStream, responseStream: m.responseStream, requestSerialize: serialize(request), requestDeserialize: deserialize(request), responseSerialize: serialize(response), responseDeserialize: deserialize(response), originalName: m.originalName, options: {} };
      }
    }
    return definition;
  })(JSON.parse(${JSON.stringify(JSON.stringify(root.toJSON()))}), ${JSON.stringify(services)})`
  return code.replace(ETCD3_LOADER, '').replace(ETCD3_LOAD_SYNC, definitions)
}

/** esbuild, from the service's own node_modules first. */
export async function loadEsbuild(serviceDir: string): Promise<Esbuild> {
  const fromService = createRequire(join(serviceDir, 'package.json'))
  try {
    return (await import(fromService.resolve('esbuild'))) as Esbuild
  } catch {
    try {
      return await import('esbuild')
    } catch (err) {
      throw new ConfigurationError(
        'esbuild',
        'middy-etcd bundles handlers with esbuild, which is not installed in this service: npm install --save-dev esbuild',
        { cause: err },
      )
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
  const relativeSource = (f: NodeFunction) =>
    f.source
      .slice(serviceDir.length + 1)
      .split('\\')
      .join('/')
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
          build.onLoad({ filter: /[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, (args) => ({
            contents: withPrecompiledProtos(args.path),
            loader: 'js',
          }))
        },
      },
    ],
  }
}

/**
 * Bundles each function's handler into `<outdir>/<module>.js` and writes the CommonJS
 * package.json beside them. Returns module → bundle file.
 */
export async function bundleHandlers(
  esbuild: Esbuild,
  serviceDir: string,
  functions: NodeFunction[],
  options: BundleOptions,
): Promise<Map<string, string>> {
  await esbuild.build(bundleOptions(serviceDir, functions, options))
  writeSupportFiles(options.outdir)
  return new Map(functions.map((f) => [f.module, join(options.outdir, `${f.module}.js`)]))
}

/** The CommonJS package.json beside the bundles (a service's own may say `"type": "module"`). */
export function writeSupportFiles(outdir: string): void {
  mkdirSync(outdir, { recursive: true })
  writeFileSync(join(outdir, PACKAGE_JSON), `${JSON.stringify({ type: 'commonjs' })}\n`)
}
