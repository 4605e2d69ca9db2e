// `serverless package` for the functions middy-etcd builds (see functions.ts): each gets an
// artifact of its own making — bundled handlers (etcd3's protos built in), and the files
// `package.patterns` select — set as its `package.artifact`, so osls packages only the other
// functions (other runtimes, plain JavaScript that does not use etcd) as it always does.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { bundleHandlers, loadEsbuild, PACKAGE_JSON, usingEtcd } from './bundle.js'
import type { PluginLog, ServerlessLike } from './config.js'
import { buildTarget, enableSourceMaps, hasOwnBundler, nodeFunctions, SOURCE_MAPS_FLAG, type NodeFunction } from './functions.js'
import { selectFiles, serviceFiles } from './patterns.js'
import { writeZip, type ZipEntry } from './zip.js'

/** Options of {@link packageFunctions}. */
export interface PackageOptions {
  /** Where artifacts go: the service's `.serverless/` (osls moves them to `--package <dir>` later). */
  packagePath: string
  /** Ship linked source maps beside the bundles. */
  sourcemap?: boolean
  /** Only this function (`osls package function` / `osls deploy function`): packaged on its own. */
  only?: string
}

/** What {@link packageFunctions} built. */
export interface Packaged {
  /** Function key → artifact path. */
  artifacts: Map<string, string>
  /** Node functions left to the framework (they do not use etcd). */
  leftToFramework: string[]
}

const KIB = 1024

/** Builds the artifacts of the functions that use middy-etcd and points osls at them. */
export async function packageFunctions(serverless: ServerlessLike, log: PluginLog, options: PackageOptions): Promise<Packaged | undefined> {
  const own = hasOwnBundler(serverless)
  if (own) {
    log.notice(
      `middy-etcd: ${own} packages the functions; middy-etcd leaves packaging to it (keep etcd3 external and installed so its .proto files ship with it: see the README)`,
    )
    return undefined
  }
  const { service, serviceDir } = serverless
  const candidates = nodeFunctions(serverless).filter((f) => options.only === undefined || f.key === options.only)
  if (candidates.length === 0) return { artifacts: new Map(), leftToFramework: [] }
  const esbuild = await loadEsbuild(serviceDir)
  const ours = await usingEtcd(esbuild, serviceDir, candidates)
  const leftToFramework = candidates.filter((c) => !ours.includes(c)).map((c) => c.key)
  for (const key of leftToFramework) log.info(`middy-etcd: function ${key} does not use middy-etcd; the framework packages it`)
  if (ours.length === 0) return { artifacts: new Map(), leftToFramework }

  const buildDir = mkdtempSync(join(tmpdir(), 'middy-etcd-build-'))
  try {
    await bundleHandlers(esbuild, serviceDir, ours, {
      outdir: buildDir,
      target: buildTarget(serverless, ours),
      sourcemap: options.sourcemap,
    })
    if (options.sourcemap) {
      // Lambda uses the maps only when Node is told to.
      const skipped = enableSourceMaps(serverless, ours)
      if (skipped.length > 0)
        log.warning(
          `middy-etcd: ${skipped.join(', ')}: NODE_OPTIONS is not a string, so ${SOURCE_MAPS_FLAG} was not added; add it yourself for the source maps to be used`,
        )
    }
    const built = new Set(serviceFiles(buildDir))
    const extras = (patterns: string[] | undefined) => patternFiles(serviceDir, patterns ?? [], built, log)
    const serviceExtras = extras(service.package?.patterns)
    const artifacts = new Map<string, string>()
    const individually = (f: NodeFunction) => Boolean(options.only || f.fn.package?.individually || service.package?.individually)

    for (const f of ours.filter(individually)) {
      const path = join(options.packagePath, `${f.key}.zip`)
      const size = writeArtifact(path, buildDir, [f], built, [...serviceExtras, ...extras(f.fn.package?.patterns)], serviceDir)
      setFunctionArtifact(f, path)
      artifacts.set(f.key, path)
      log.notice(`middy-etcd: packaged function ${f.key} into ${relative(serviceDir, path)} (${(size / KIB).toFixed(0)} KiB)`)
    }
    const shared = ours.filter((f) => !individually(f))
    if (shared.length > 0) {
      // Alone, the shared artifact takes the service artifact's name (where `deploy --package`
      // looks for it); beside functions the framework packages, a name of its own.
      const alone = leftToFramework.length === 0 && ours.every((f) => !individually(f))
      const path = join(options.packagePath, alone ? `${service.service}.zip` : `${service.service}-middy-etcd.zip`)
      const size = writeArtifact(path, buildDir, shared, built, serviceExtras, serviceDir)
      for (const f of shared) setFunctionArtifact(f, path)
      for (const f of shared) artifacts.set(f.key, path)
      log.notice(
        `middy-etcd: packaged ${shared.length} function${shared.length === 1 ? '' : 's'} (${shared.map((f) => f.key).join(', ')}) into ${relative(serviceDir, path)} (${(size / KIB).toFixed(0)} KiB)`,
      )
    }
    return { artifacts, leftToFramework }
  } finally {
    rmSync(buildDir, { recursive: true, force: true })
  }
}

function setFunctionArtifact(f: NodeFunction, path: string): void {
  f.fn.package = { ...f.fn.package, artifact: path }
}

/**
 * The service files `patterns` select, except those that would replace a file we built (a
 * bundle, the package.json that makes the bundles CommonJS): warned and left out.
 */
export function patternFiles(serviceDir: string, patterns: string[], built: Set<string>, log: PluginLog): string[] {
  const selected = selectFiles(serviceDir, patterns)
  const clashes = selected.filter((f) => built.has(f))
  if (clashes.length > 0)
    log.warning(
      `middy-etcd: package.patterns selects ${clashes.join(', ')}, which the artifact already holds (bundles, ${PACKAGE_JSON}); those are left out`,
    )
  return selected.filter((f) => !clashes.includes(f))
}

/** Zips the bundles of `functions`, the support files and `extras` (service-relative paths). */
function writeArtifact(
  path: string,
  buildDir: string,
  functions: NodeFunction[],
  built: Set<string>,
  extras: string[],
  serviceDir: string,
): number {
  const bundles = functions.flatMap((f) => [`${f.module}.js`, `${f.module}.js.map`]).filter((f) => built.has(f))
  const support = [...built].filter((f) => f === PACKAGE_JSON)
  const entries: ZipEntry[] = [
    ...[...new Set([...bundles, ...support])].map((name) => ({ name, data: readFileSync(join(buildDir, name)) })),
    ...[...new Set(extras)].map((name) => ({
      name,
      data: readFileSync(join(serviceDir, name)),
      mode: executable(join(serviceDir, name)) ? 0o755 : 0o644,
    })),
  ].sort((a, b) => (a.name < b.name ? -1 : 1))
  mkdirSync(dirname(path), { recursive: true })
  return writeZip(path, entries)
}

function executable(path: string): boolean {
  return (statSync(path).mode & 0o100) !== 0
}
