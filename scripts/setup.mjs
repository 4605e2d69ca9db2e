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

function installEtcd() {
  if (process.env.ETCD_BIN) {
    if (existsSync(process.env.ETCD_BIN)) return
    fail(`ETCD_BIN=${process.env.ETCD_BIN} does not exist. Point ETCD_BIN at an etcd binary or unset it.`)
  }
  if (onPath('etcd') && onPath('etcdctl')) return
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  if (isRoot && onPath('apt-get')) {
    log('etcd not found: installing Debian packages etcd-server and etcd-client…')
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
    execFileSync('apt-get', ['install', '-y', '-qq', 'etcd-server', 'etcd-client'], { stdio: 'inherit', env })
    // Debian may start a packaged etcd on :2379; our tests start their own on free ports.
    if (onPath('etcd') && onPath('etcdctl')) return
  }
  fail(
    'etcd and etcdctl are needed but were not found on PATH.\n' +
      '  Debian/Ubuntu: sudo apt-get install -y etcd-server etcd-client\n' +
      '  elsewhere: download etcd 3.4+ and set ETCD_BIN=/path/to/etcd (etcdctl next to it or on PATH).',
  )
}

function fail(message) {
  log(message)
  process.exit(1)
}

installNodeModules()
if (!process.argv.includes('--no-etcd')) installEtcd()
