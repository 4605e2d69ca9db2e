// Which etcd binary to run and which flags its release takes: the part of the launcher
// (etcd-process.ts) that knows about etcd versions. The releases we test on are pinned in
// etcd/releases.json; etcd/build.mjs builds 3.5-3.7 from their Go modules into a cache, 3.4 is
// Debian's package.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigurationError, InvalidArgumentError, MiddyEtcdError } from '../lib/errors.js'

/** An etcd release line this project is tested on. */
export type EtcdLine = '3.4' | '3.5' | '3.6' | '3.7'

const LINES: readonly EtcdLine[] = ['3.4', '3.5', '3.6', '3.7']

interface ReleasesFile {
  default: EtcdLine
  releases: Record<EtcdLine, { version: string; source: 'go' | 'debian'; package?: string }>
}

/** Thrown when no etcd binary can be found; says how to get one. */
export class EtcdNotFoundError extends MiddyEtcdError {
  override readonly code = 'ETCD_NOT_FOUND'

  constructor(what: string, remedy = RUN_OR_INSTALL) {
    super(`${what} not found. ${remedy}`)
  }
}

const RUN_OR_INSTALL =
  'Build the default etcd with `node node_modules/middy-etcd/etcd/build.mjs` (needs Go 1.26), install one (Debian: apt-get install -y etcd-server etcd-client), ' +
  'or set ETCD_BIN=/path/to/etcd.'

/** etcd/releases.json, found from this module in the sources (offline/) and in the package (dist/offline/). */
function releasesFile(): ReleasesFile {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let up = 0; up < 4; up++, dir = dirname(dir)) {
    const path = join(dir, 'etcd', 'releases.json')
    if (existsSync(path)) return JSON.parse(readFileSync(path, 'utf8')) as ReleasesFile
  }
  throw new ConfigurationError('etcd/releases.json', 'etcd/releases.json is missing from the middy-etcd package; reinstall it')
}

/** The default release line (the newest supported one) and the exact version pinned for each line. */
export function etcdReleases(): { default: EtcdLine; versions: Record<EtcdLine, string> } {
  const file = releasesFile()
  const versions = Object.fromEntries(LINES.map((l) => [l, file.releases[l].version])) as Record<EtcdLine, string>
  return { default: file.default, versions }
}

/** The release line of a version string ('3.7.4' → '3.7'); InvalidArgumentError for one we do not support. */
export function lineOf(version: string, what = 'etcd version'): EtcdLine {
  const line = /^v?(\d+\.\d+)/.exec(version)?.[1]
  if (!line || !(LINES as readonly string[]).includes(line)) {
    throw new InvalidArgumentError(
      `${what} ${JSON.stringify(version)} is not one this project runs on: use one of ${LINES.join(', ')} (3.7 is the default)`,
    )
  }
  return line as EtcdLine
}

const versionCache = new Map<string, string>()

/** Asks the binary at `bin` its version (`etcd --version` → '3.7.4'); cached per path. */
export function etcdVersionOf(bin: string): string {
  const known = versionCache.get(bin)
  if (known) return known
  const run = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 })
  const version = /etcd Version:\s*(\S+)/.exec(run.stdout ?? '')?.[1]
  if (!version)
    throw new ConfigurationError(
      'ETCD_BIN',
      `${bin} --version did not say which etcd it is (${(run.stderr || run.error?.message || run.stdout || '').trim().slice(0, 200)}); is ETCD_BIN an etcd server binary?`,
    )
  versionCache.set(bin, version)
  return version
}

/** Where etcd/build.mjs puts a built release (the same rule as its cacheRoot/releaseDir). */
function builtReleaseDir(version: string): string {
  const root = process.env.MIDDY_ETCD_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'middy-etcd')
  return join(root, 'etcd', `v${version}`)
}

/** Every `name` on PATH, in PATH order. */
function allOnPath(name: string): string[] {
  const dirs = (process.env.PATH ?? '').split(':').filter(Boolean)
  return [...new Set(dirs.map((d) => join(d, name)))].filter((p) => existsSync(p))
}

function onPath(name: string): string | undefined {
  return allOnPath(name)[0]
}

/** A resolved etcd: the server binary, its etcdctl, and the version the binary reported. */
export interface EtcdRelease {
  bin: string
  /** etcdctl beside the server binary, else the one on PATH (undefined: none). */
  etcdctl?: string
  /** As the binary reported it, e.g. '3.7.4'. */
  version: string
  line: EtcdLine
}

/** `bin` as a release; `remedy` says what to do when it is not of the line `wanted`. */
function described(bin: string, wanted: EtcdLine | undefined, remedy: string): EtcdRelease {
  const version = etcdVersionOf(bin)
  const line = lineOf(version, `${bin} is etcd`)
  if (wanted && line !== wanted) {
    throw new InvalidArgumentError(`etcd ${wanted} was asked for, but ${bin} is etcd ${version}: ${remedy}, or ask for version ${line}`)
  }
  const sibling = join(dirname(bin), 'etcdctl')
  return { bin, etcdctl: existsSync(sibling) ? sibling : onPath('etcdctl'), version, line }
}

/**
 * The etcd to run, in this order: `bin`; `ETCD_BIN`; release `version` (else `ETCD_VERSION`) as
 * built by etcd/build.mjs (3.5-3.7) or Debian's etcd on PATH (3.4); with no version asked, the
 * default release if it is built here, else `etcd` on PATH, whatever its version. Throws
 * EtcdNotFoundError saying how to get the one asked for.
 */
export function resolveEtcd(options: { bin?: string; version?: string } = {}): EtcdRelease {
  const asked = options.version ?? (process.env.ETCD_VERSION || undefined)
  const wanted = asked === undefined ? undefined : lineOf(asked, options.version !== undefined ? 'startEtcd version' : 'ETCD_VERSION')
  const explicit = options.bin ?? (process.env.ETCD_BIN || undefined)
  if (explicit) {
    const path = explicit.includes('/') ? explicit : onPath(explicit)
    if (!path || !existsSync(path))
      throw new EtcdNotFoundError(
        `etcd binary ${JSON.stringify(explicit)}`,
        `Point ETCD_BIN (or startEtcd's bin) at an etcd server binary, or unset it to run the default. ${RUN_OR_INSTALL}`,
      )
    return described(path, wanted, 'point ETCD_BIN at an etcd of that release or unset it')
  }
  const { default: defaultLine, versions } = etcdReleases()
  const line = wanted ?? defaultLine
  if (line !== '3.4') {
    const dir = builtReleaseDir(versions[line])
    if (existsSync(join(dir, 'etcd')))
      return described(join(dir, 'etcd'), line, `rebuild it (remove ${dir}, then node etcd/build.mjs ${line})`)
    if (wanted) {
      throw new EtcdNotFoundError(
        `etcd ${line} (${versions[line]}, built from Go modules)`,
        `Build it with \`node node_modules/middy-etcd/etcd/build.mjs ${line}\` (in this repository: node etcd/build.mjs ${line}; needs Go 1.26 and the Go module proxy), or set ETCD_BIN to an etcd ${line} binary.`,
      )
    }
  }
  // The first etcd on PATH of the line asked for (3.4: Debian's), else of any line.
  const candidates = allOnPath('etcd')
  const path = wanted ? (candidates.find((p) => /^v?(\d+\.\d+)/.exec(etcdVersionOf(p))?.[1] === wanted) ?? candidates[0]) : candidates[0]
  if (!path)
    throw new EtcdNotFoundError(
      line === '3.4' ? "etcd 3.4 (Debian's etcd-server)" : 'etcd',
      line === '3.4' ? 'Debian: apt-get install -y etcd-server etcd-client.' : RUN_OR_INSTALL,
    )
  return described(
    path,
    wanted,
    line === '3.4'
      ? "install Debian's etcd-server and etcd-client (apt-get install -y etcd-server etcd-client)"
      : `put an etcd ${line} first on PATH or set ETCD_BIN`,
  )
}

/** What a launcher may turn on besides the listen addresses (see {@link releaseFlags}). */
export interface ReleaseFlagOptions {
  /**
   * Lease checkpointing: the leader persists each lease's remaining TTL, so a leader change does
   * not reset it (without it, a lease renewed by nobody outlives every leader change). Default true.
   */
  leaseCheckpoint?: boolean
}

/**
 * The flags that release `line` takes for what every launcher of ours turns on: the zap logger
 * (3.4's default is capnslog) and lease checkpointing (3.4 and 3.5: `--experimental-enable-
 * lease-checkpoint*`; 3.6 deprecated those for `--feature-gates`, 3.7 removed them).
 */
export function releaseFlags(line: EtcdLine, options: ReleaseFlagOptions = {}): string[] {
  const flags = ['--logger=zap']
  if (options.leaseCheckpoint === false) return flags
  switch (line) {
    case '3.4':
      // 3.4 has the checkpoint but not its persistence (added in 3.5).
      return [...flags, '--experimental-enable-lease-checkpoint=true']
    case '3.5':
      return [...flags, '--experimental-enable-lease-checkpoint=true', '--experimental-enable-lease-checkpoint-persist=true']
    default:
      return [...flags, '--feature-gates=LeaseCheckpoint=true,LeaseCheckpointPersist=true']
  }
}

/**
 * Joins our flags with a caller's: a caller's `--feature-gates` is merged with ours (their gates
 * win), since etcd takes the flag once; every other flag of theirs is appended as given.
 */
export function mergeFlags(ours: string[], theirs: string[]): string[] {
  const gates = (flags: string[]) =>
    flags.filter((f) => f.startsWith('--feature-gates=')).flatMap((f) => f.slice('--feature-gates='.length).split(',').filter(Boolean))
  const merged = new Map<string, string>()
  for (const gate of [...gates(ours), ...gates(theirs)]) merged.set(gate.split('=')[0], gate)
  const rest = [...ours, ...theirs].filter((f) => !f.startsWith('--feature-gates='))
  return merged.size ? [...rest, `--feature-gates=${[...merged.values()].join(',')}`] : rest
}

/**
 * Why a member that exited at start-up did so, from the last lines it wrote: etcd's own message
 * plus what to do about the failures a user meets.
 */
export function startupFailureHint(line: EtcdLine, args: string[], output: string): string {
  const hints: string[] = []
  if (/unknown flag|flag provided but not defined/i.test(output)) {
    if (line >= '3.7' && args.some((a) => a.startsWith('--experimental-')))
      hints.push('etcd 3.7 removed every --experimental-* flag: pass --feature-gates=Name=true (etcd --help lists the gates) instead')
    else if (line >= '3.6' && args.some((a) => /^--(enable-v2|proxy)/.test(a)))
      hints.push('etcd 3.6 removed --enable-v2 and the proxy flags')
    else hints.push(`a flag is not one etcd ${line} takes (see etcd --help)`)
  }
  if (/address already in use/i.test(output)) hints.push('a port is taken')
  if (/storage version|cannot downgrade|downgrade/i.test(output)) {
    hints.push(
      'the data dir was written by a newer etcd: start on a fresh data dir, or downgrade it first with `etcdutl migrate --data-dir DIR --target-version ' +
        line +
        '`',
    )
  }
  return hints.join('; ')
}

/**
 * The environment for an etcd process: ours without ETCD_* variables. etcd reads every
 * ETCD_<FLAG> as a flag, so our ETCD_VERSION became `--version=3.4` (3.4 and 3.5 refuse to start:
 * "invalid value for ETCD_VERSION"), and ETCD_BIN, ETCD_ENDPOINTS and the like draw warnings.
 */
export function etcdProcessEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')))
}
