#!/usr/bin/env node
// Set-up run before `npm test` / `npm start` / `npm run bench`, so each works on a fresh machine:
// installs the npm dependencies when they are missing and makes sure an etcd binary is there
// (Debian's etcd-server + etcd-client when we are root with apt-get), or says how to get one.
// Uses only Node built-ins: it runs before node_modules exists.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

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

function installEtcd() {
  if (process.env.ETCD_BIN) {
    if (existsSync(process.env.ETCD_BIN)) return
    fail(`ETCD_BIN=${process.env.ETCD_BIN} does not exist. Point ETCD_BIN at an etcd binary or unset it.`)
  }
  if (onPath('etcd') && onPath('etcdctl')) return
  log('etcd not found: installing Debian packages etcd-server and etcd-client…')
  // Debian may start a packaged etcd on :2379; our tests start their own on free ports.
  if (aptInstall(['etcd-server', 'etcd-client']) && onPath('etcd') && onPath('etcdctl')) return
  fail(
    'etcd and etcdctl are needed but were not found on PATH.\n' +
      '  Debian/Ubuntu: sudo apt-get install -y etcd-server etcd-client\n' +
      '  elsewhere: download etcd 3.4+ and set ETCD_BIN=/path/to/etcd (etcdctl next to it or on PATH).',
  )
}

/** The Go peer (interop tests, benchmarks) builds from Debian's packaged etcd 3.4 sources. */
function installGo() {
  if (onPath('go') && existsSync('/usr/share/gocode/src/go.etcd.io/etcd')) return
  log('Go toolchain or etcd Go sources not found: installing golang-go and golang-etcd-server-dev…')
  if (aptInstall(['golang-go', 'golang-etcd-server-dev'])) return
  fail(
    'The Go interop tests need Go and the etcd 3.4 Go sources.\n' +
      '  Debian/Ubuntu: sudo apt-get install -y golang-go golang-etcd-server-dev',
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
  log(`the partition and fencing tests need ${missing.join(' and ')} (Debian: sudo apt-get install -y ${missing.join(' ')}) and root; they will fail until then.`)
}

function fail(message) {
  log(message)
  process.exit(1)
}

installNodeModules()
if (!process.argv.includes('--no-etcd')) installEtcd()
if (process.argv.includes('--go')) installGo()
if (process.argv.includes('--partitions')) installPartitionTools()
