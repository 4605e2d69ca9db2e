// `serverless offline` runs the same bundles `serverless package` ships: the functions that use
// middy-etcd (and TypeScript handlers) are bundled into `.etcd-offline/build/<cli pid>/` with the
// `package.patterns` files, and their `handler` is pointed there. So offline
// loads plain CommonJS — no TypeScript loader of serverless-offline's (tsx) is involved — and
// esbuild rebuilds on every source change. The bundles carry source maps, and Node is told to
// use them, so stack traces point at the sources (`custom.etcd.sourcemap: false` turns it off).
import { cpSync, existsSync, mkdirSync, readdirSync, rmdirSync, rmSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { bundleOptions, loadEsbuild, usingEtcd, writeSupportFiles } from './bundle.js'
import type { PluginLog, ServerlessLike } from './config.js'
import { isAlive } from './local-etcd.js'
import { buildTarget, enableSourceMaps, hasOwnBundler, nodeFunctions, SOURCE_MAPS_FLAG } from './functions.js'
import { patternFiles } from './package.js'
import { serviceFiles } from './patterns.js'

/** A running offline build: where it is and how to stop watching and remove it. */
export interface OfflineBuild {
  dir: string
  /** Stops the watcher and removes the build. */
  stop(): Promise<void>
  /** The same without waiting (process exit): removes the build. */
  stopSync(): void
}

/** Options of {@link buildForOffline}. */
export interface OfflineBuildOptions {
  stateDir: string
  /** `custom.etcd.sourcemap`: offline, source maps are on unless it is `false`. */
  sourcemap?: boolean
  /** serverless-offline runs with `--reloadHandler`: a rebuilt bundle is loaded by the next invocation. */
  reloadHandler?: boolean
}

/** Where this CLI process builds its offline bundles (its watchdog removes it if the CLI is killed). */
export function offlineBuildDir(stateDir: string): string {
  return join(stateDir, 'build', String(process.pid))
}

/** Removes the offline builds of CLI processes that are gone (killed sessions). */
export function reapStaleBuilds(stateDir: string): void {
  const builds = join(stateDir, 'build')
  if (!existsSync(builds)) return
  for (const name of readdirSync(builds)) {
    const pid = Number(name)
    if (pid !== process.pid && Number.isInteger(pid) && isAlive(pid)) continue
    rmSync(join(builds, name), { recursive: true, force: true })
  }
}

/**
 * Bundles the functions that use middy-etcd for offline and rewrites their handlers to the
 * bundles. Returns undefined when another bundler (serverless-esbuild) owns the handlers or no
 * function needs it.
 */
export async function buildForOffline(
  serverless: ServerlessLike,
  log: PluginLog,
  options: OfflineBuildOptions,
): Promise<OfflineBuild | undefined> {
  const own = hasOwnBundler(serverless)
  if (own) {
    log.info(`etcd: ${own} builds the handlers; middy-etcd does not bundle them offline`)
    return undefined
  }
  const { serviceDir, service } = serverless
  const candidates = nodeFunctions(serverless)
  if (candidates.length === 0) return undefined
  const esbuild = await loadEsbuild(serviceDir)
  const ours = await usingEtcd(esbuild, serviceDir, candidates)
  if (ours.length === 0) return undefined

  reapStaleBuilds(options.stateDir)
  const dir = offlineBuildDir(options.stateDir)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  // Offline is where stack traces are read: maps unless they were turned off.
  const sourcemap = options.sourcemap !== false
  const base = bundleOptions(serviceDir, ours, { outdir: dir, target: buildTarget(serverless, ours), sourcemap })
  // watch() builds once, then again on every change: the first result gates the start.
  let builds = 0
  let firstBuild!: (result: { errors: unknown[] }) => void
  const built = new Promise<{ errors: unknown[] }>((resolve) => (firstBuild = resolve))
  const context = await esbuild.context({
    ...base,
    plugins: [
      ...(base.plugins ?? []),
      {
        name: 'middy-etcd-offline-rebuild',
        setup(build) {
          build.onEnd((result) => {
            if (builds++ === 0) return firstBuild(result)
            if (result.errors.length > 0) return
            const rebuilt = `etcd: rebuilt ${ours.length} handler bundle${ours.length === 1 ? '' : 's'}`
            // Without --reloadHandler serverless-offline keeps the modules it loaded: say how to get the new ones.
            log.notice(
              options.reloadHandler
                ? `${rebuilt} (the next invocation loads them)`
                : `${rebuilt} (restart, or start with --reloadHandler to load them without a restart)`,
            )
          })
        },
      },
    ],
  })
  let stopped = false
  const stopSync = () => {
    stopped = true
    rmSync(dir, { recursive: true, force: true })
    // The build/ folder itself, unless another session's build is in it.
    try {
      rmdirSync(dirname(dir))
    } catch {
      // not empty, or gone
    }
  }
  try {
    await context.watch()
    const first = await built
    if (first.errors.length > 0)
      throw new Error(
        `middy-etcd: bundling the handlers for offline failed (${first.errors.length} error${first.errors.length === 1 ? '' : 's'} above)`,
      )
    writeSupportFiles(dir)
    for (const file of patternFiles(serviceDir, service.package?.patterns ?? [], new Set(serviceFiles(dir)), log)) {
      mkdirSync(dirname(join(dir, file)), { recursive: true })
      cpSync(join(serviceDir, file), join(dir, file))
    }
  } catch (err) {
    await context.dispose()
    stopSync()
    throw err
  }
  const prefix = relative(serviceDir, dir).split('\\').join('/')
  for (const f of ours) f.fn.handler = `${prefix}/${f.fn.handler}`
  log.notice(`etcd: bundled ${ours.map((f) => f.key).join(', ')} into ${prefix} (as \`package\` ships them)`)
  if (sourcemap) {
    // Handlers run in worker threads, which take NODE_OPTIONS from the function's environment;
    // with --useInProcess they run here, in the CLI's own thread.
    process.setSourceMapsEnabled(true)
    const skipped = enableSourceMaps(serverless, ours)
    if (skipped.length > 0)
      log.warning(
        `etcd: ${skipped.join(', ')}: NODE_OPTIONS is not a string, so ${SOURCE_MAPS_FLAG} was not added; their stack traces point at the bundles`,
      )
    log.info(
      `etcd: source maps on (${SOURCE_MAPS_FLAG} in NODE_OPTIONS of the bundled functions): stack traces point at the sources; custom.etcd.sourcemap: false turns them off`,
    )
  }
  return {
    dir,
    stopSync,
    async stop() {
      if (stopped) return
      await context.dispose()
      stopSync()
    },
  }
}
