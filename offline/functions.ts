// Which functions of a service middy-etcd builds: Node functions whose handler code uses the
// library (or etcd3) — their bundles need etcd3's protos built in — and TypeScript handlers, which
// the framework cannot ship as they are. Everything else (other runtimes, images, functions with
// their own artifact, plain JavaScript that does not use etcd) is left to the framework.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigurationError } from '../lib/errors.js'
import type { FunctionObject, ServerlessLike } from './config.js'

/** A Node function of the service and the source file of its handler. */
export interface NodeFunction {
  key: string
  fn: FunctionObject
  /** `handlers/jobs.worker` → `handlers/jobs`: the module path Lambda loads. */
  module: string
  /** The handler's source file (absolute). */
  source: string
  typescript: boolean
}

/** Handler source extensions, in the order Lambda and serverless-offline try them (then TypeScript). */
const SOURCE_EXTENSIONS = ['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts']
/** The runtime osls deploys when neither the function nor the provider names one. */
const DEFAULT_RUNTIME = 'nodejs'

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

/** The lowest Node major among the functions' runtimes, as an esbuild target: one build serves them all. */
export function buildTarget(serverless: ServerlessLike, functions: NodeFunction[]): string {
  return `node${Math.min(...functions.map((f) => Number(nodeTarget(runtimeOf(serverless, f.fn)).slice('node'.length))))}`
}

/** The runtime a function deploys with. */
export function runtimeOf(serverless: ServerlessLike, fn: FunctionObject): string {
  return fn.runtime ?? serverless.service.provider.runtime ?? DEFAULT_RUNTIME
}

/**
 * Every function with a Node runtime that the framework would zip from source: not an image,
 * not `package.disable`, no `package.artifact` of its own. A handler whose file is missing is a
 * {@link ConfigurationError} naming the function and the paths tried.
 */
export function nodeFunctions(serverless: ServerlessLike): NodeFunction[] {
  const { service, serviceDir } = serverless
  const found: NodeFunction[] = []
  for (const key of service.getAllFunctions()) {
    const fn = service.getFunction(key)
    if (fn.image || !fn.handler || fn.package?.disable || fn.package?.artifact) continue
    if (!runtimeOf(serverless, fn).startsWith('nodejs')) continue
    const module = handlerModule(fn.handler)
    const source = SOURCE_EXTENSIONS.map((ext) => join(serviceDir, module + ext)).find((p) => existsSync(p))
    if (!source) {
      throw new ConfigurationError(
        'handler',
        `function ${key}: no source for handler ${fn.handler} (looked for ${module}{${SOURCE_EXTENSIONS.join(',')}} in ${serviceDir})`,
      )
    }
    found.push({ key, fn, module, source, typescript: /\.[mc]?ts$/.test(source) })
  }
  return found
}

/** Whether serverless-esbuild is one of the service's plugins: it bundles, and middy-etcd steps aside. */
export function hasOwnBundler(serverless: ServerlessLike): string | undefined {
  const plugins = serverless.service.plugins
  const list = Array.isArray(plugins) ? plugins : (plugins?.modules ?? [])
  return list.find((p) => p === 'serverless-esbuild' || p === 'serverless-webpack')
}

/** What makes Node use the `.map` files beside the bundles for stack traces. */
export const SOURCE_MAPS_FLAG = '--enable-source-maps'

/**
 * Adds `--enable-source-maps` to the `NODE_OPTIONS` of each function's environment (keeping what
 * the function or the provider already puts there), so stack traces point at the sources: Lambda
 * reads it, and so do serverless-offline's worker threads — a worker parses the NODE_OPTIONS of
 * the environment it is given (the function's), not the CLI's, so `NODE_OPTIONS=… osls offline`
 * alone never reaches a handler. Returns the keys of functions whose NODE_OPTIONS is not a
 * string (a CloudFormation reference), which are left as they are.
 */
export function enableSourceMaps(serverless: ServerlessLike, functions: NodeFunction[]): string[] {
  const skipped: string[] = []
  for (const f of functions) {
    const current = f.fn.environment?.NODE_OPTIONS ?? serverless.service.provider.environment?.NODE_OPTIONS
    if (current !== undefined && current !== null && typeof current !== 'string') {
      skipped.push(f.key)
      continue
    }
    const options = (current ?? '').trim()
    if (options.split(/\s+/).includes(SOURCE_MAPS_FLAG)) continue
    f.fn.environment = { ...f.fn.environment, NODE_OPTIONS: options ? `${options} ${SOURCE_MAPS_FLAG}` : SOURCE_MAPS_FLAG }
  }
  return skipped
}
