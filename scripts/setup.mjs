#!/usr/bin/env node
// Set-up run before `npm test` / `npm start` / `npm run bench`, so each works on a fresh machine:
// installs the npm dependencies when they are missing and makes sure the etcd that will run is
// there (etcd/build.mjs builds 3.5-3.7 from Go modules; 3.4 is Debian's etcd-server and
// etcd-client, installed when we are root with apt-get), or says how to get one.
// Uses only Node built-ins: it runs before node_modules exists.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildRelease, etcdReleases, goAtLeast, goToolchain, GO_FLOOR } from '../etcd/build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const log = (msg) => process.stderr.write(`[setup] ${msg}\n`)

function onPath(bin) {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0
}

function installNodeModules() {
  const marker = join(root, 'node_modules', '.package-lock.json')
  if (existsSync(marker) && existsSync(join(root, 'node_modules', 'etcd3'))) return
  log('installing npm dependencies (npm ci)…')
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' })
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
let aptUpdated = false

/** Installs Debian packages when we are root with apt-get; returns whether it tried. */
function aptInstall(packages) {
  if (!isRoot || !onPath('apt-get')) return false
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  if (!aptUpdated) execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
  aptUpdated = true
  execFileSync('apt-get', ['install', '-y', '-qq', ...packages], { stdio: 'inherit', env })
  return true
}

/** What an etcd binary says it is ('3.7.4'), or undefined. */
function versionOf(bin) {
  const run = spawnSync(bin, ['--version'], { encoding: 'utf8' })
  return /etcd Version:\s*(\S+)/.exec(run.stdout ?? '')?.[1]
}

function installDebianEtcd() {
  if (onPath('etcd') && onPath('etcdctl') && versionOf('etcd')?.startsWith('3.4.')) return
  log('etcd 3.4 not found: installing Debian packages etcd-server and etcd-client…')
  // Debian may start a packaged etcd on :2379; our tests start their own on free ports.
  if (aptInstall(['etcd-server', 'etcd-client']) && onPath('etcd') && onPath('etcdctl')) return
  fail("etcd 3.4 is Debian's package: sudo apt-get install -y etcd-server etcd-client (or set ETCD_BIN to an etcd 3.4 binary).")
}

/**
 * Makes sure the etcd that the tests, `npm start` and the benchmarks will run is here: ETCD_BIN
 * when set; else release ETCD_VERSION (default: releases.json's newest line), built from Go
 * modules by etcd/build.mjs (3.5-3.7, once per machine) or Debian's package (3.4). Without Go
 * 1.26 the default falls back to an etcd on PATH (or Debian's, as root), saying which.
 */
function installEtcd(lines) {
  if (process.env.ETCD_BIN) {
    if (!existsSync(process.env.ETCD_BIN))
      fail(`ETCD_BIN=${process.env.ETCD_BIN} does not exist. Point ETCD_BIN at an etcd binary or unset it.`)
    log(`etcd: ETCD_BIN=${process.env.ETCD_BIN} (etcd ${versionOf(process.env.ETCD_BIN) ?? 'of unknown version'})`)
    return
  }
  const { default: newest, releases } = etcdReleases()
  const asked = process.env.ETCD_VERSION
  if (asked && !releases[asked])
    fail(`ETCD_VERSION=${asked} is not a release we test on: use one of ${Object.keys(releases).join(', ')} (default ${newest}).`)
  for (const line of lines ?? [asked || newest]) {
    if (releases[line].source === 'debian') {
      installDebianEtcd()
      continue
    }
    try {
      buildRelease(line, log)
    } catch (err) {
      // Only the default may fall back: a release asked for by name must be the one that runs.
      if (asked || lines) fail(`${err.message}\n  Or set ETCD_BIN=/path/to/etcd-${line}.`)
      const hint = `the default is etcd ${releases[line].version}: install Go 1.26+ and run node etcd/build.mjs (or set ETCD_BIN)`
      if (onPath('etcd') || aptInstall(['etcd-server', 'etcd-client'])) {
        log(`etcd: ${err.message}`)
        log(`etcd: using etcd ${versionOf('etcd') ?? '(unknown version)'} from PATH instead; ${hint}`)
        continue
      }
      fail(
        `${err.message}\n  and no etcd is on PATH. Either ${hint}, or install an etcd 3.4+ (Debian: apt-get install -y etcd-server etcd-client).`,
      )
    }
  }
}

/** The Go peer (interop tests, benchmarks) is a Go module (interop/go) that needs Go 1.26. */
function checkGo() {
  const go = goToolchain()
  if (!go.missing && goAtLeast(go.version, GO_FLOOR)) return
  log(
    `the Go interop tests and the Go column of the benchmarks need Go ${GO_FLOOR}+ (${go.missing ?? `this machine has Go ${go.version}`}); they will fail until then.`,
  )
}

/**
 * The partition tests cut links with nftables (as root); the downstream-fencing tests start a
 * PostgreSQL server. Without root or apt, only say what is missing: those tests then fail with
 * the same advice themselves (they never skip), and the rest of the suite still runs.
 */
function installPartitionTools() {
  const missing = []
  if (!onPath('nft')) missing.push('nftables')
  if (!existsSync('/usr/lib/postgresql') && !onPath('initdb')) missing.push('postgresql')
  if (missing.length === 0) return
  log(`${missing.join(' and ')} not found: installing…`)
  if (aptInstall(missing)) return
  log(
    `the partition and fencing tests need ${missing.join(' and ')} (Debian: sudo apt-get install -y ${missing.join(' ')}) and root; they will fail until then.`,
  )
}

/**
 * The operations page's browser tests (test/ui) drive Debian's Chromium through playwright-core
 * (which downloads no browser). Without root or apt, only say what is missing: those tests then
 * fail naming /usr/bin/chromium (they never skip).
 */
function installChromium() {
  if (existsSync(process.env.CHROMIUM_BIN ?? '/usr/bin/chromium')) return
  log('chromium not found: installing…')
  if (aptInstall(['chromium'])) return
  log(
    'the browser tests of the operations page need Chromium (Debian: sudo apt-get install -y chromium; or set CHROMIUM_BIN); they will fail until then.',
  )
}

/**
 * The Redis comparison (test/survives/, bench/scenarios/redis.ts) starts its own redis-server on a
 * free loopback port: Debian's redis-server (Redis 7), installed when we are root with apt-get.
 * Debian may start a packaged Redis on :6379; ours never uses that port.
 */
function installRedis() {
  if (process.env.REDIS_SERVER || onPath('redis-server')) return
  log('redis-server not found: installing Debian package redis-server…')
  if (aptInstall(['redis-server']) && onPath('redis-server')) return
  log(
    'the Redis comparison tests and benchmarks need redis-server (Debian: sudo apt-get install -y redis-server, or set REDIS_SERVER); they will fail until then.',
  )
}

function fail(message) {
  log(message)
  process.exit(1)
}

installNodeModules()
// --all-releases: every release of releases.json (the CI matrix), not only the one that runs.
if (!process.argv.includes('--no-etcd'))
  installEtcd(process.argv.includes('--all-releases') ? Object.keys(etcdReleases().releases) : undefined)
if (process.argv.includes('--go')) checkGo()
if (process.argv.includes('--partitions')) installPartitionTools()
if (process.argv.includes('--browser')) installChromium()
if (process.argv.includes('--redis')) installRedis()
