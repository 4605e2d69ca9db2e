#!/usr/bin/env node
// Builds the etcd servers (and etcdctl) that middy-etcd is tested on from their Go modules, once
// per machine: `node etcd/build.mjs [3.7 3.6 … | all]` (default: the default release of
// releases.json). A built release is reused, so a second run is a no-op.
//
// Why a main module of our own: go.etcd.io/etcd/server/v3's go.mod has `replace` directives, so
// `go install go.etcd.io/etcd/server/v3@vX` refuses it (etcd #18501). A module that requires the
// server and etcdctl at one version and calls etcdmain.Main / ctlv3.MustStart (all that etcd's
// own server/main.go and etcdctl/main.go do) builds with the plain go command; the requirement
// graph below those two is fixed by their own go.mod files, so the build is the same everywhere.
//
// Plain Node built-ins only: scripts/setup.mjs runs it before node_modules exists.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** releases.json: `{ default, releases: { '3.7': { version, source }, … } }`. */
export function etcdReleases() {
  return JSON.parse(readFileSync(join(here, 'releases.json'), 'utf8'))
}

/** Where built releases live: `$MIDDY_ETCD_CACHE`, else `$XDG_CACHE_HOME/middy-etcd`, else `~/.cache/middy-etcd`. */
export function cacheRoot() {
  return process.env.MIDDY_ETCD_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'middy-etcd')
}

/** The directory a built release's `etcd` and `etcdctl` are in. */
export function releaseDir(version) {
  return join(cacheRoot(), 'etcd', `v${version}`)
}

/** The built binaries of release line `line` ('3.7'), or undefined when it is not built here. */
export function builtRelease(line) {
  const release = etcdReleases().releases[line]
  if (release?.source !== 'go') return undefined
  const dir = releaseDir(release.version)
  const etcd = join(dir, 'etcd')
  const etcdctl = join(dir, 'etcdctl')
  return existsSync(etcd) && existsSync(etcdctl) ? { version: release.version, etcd, etcdctl } : undefined
}

/** The Go toolchain on PATH: `{ version: '1.26.8' }`, or `{ missing: reason }`. */
export function goToolchain() {
  const run = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' })
  if (run.error || run.status !== 0) return { missing: 'the go command is not on PATH' }
  return { version: run.stdout.trim().replace(/^go/, '') }
}

/** Does Go `version` (1.26.8) reach `floor` (1.26 or 1.26.0)? */
export function goAtLeast(version, floor) {
  const a = version.split(/[.a-z]/).map(Number)
  const b = floor.split('.').map(Number)
  for (let i = 0; i < b.length; i++) {
    if ((a[i] ?? 0) !== b[i]) return (a[i] ?? 0) > b[i]
  }
  return true
}

/** The Go release a line needs: the server module's own `go` line (3.5.36, 3.6.17 and 3.7.4 say 1.26.0). */
export const GO_FLOOR = '1.26'

const MAIN_SERVER = `package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

// etcd's own server/main.go, in a module of ours.
func main() { etcdmain.Main(os.Args) }
`

const MAIN_ETCDCTL = `package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

// etcd's own etcdctl/main.go for API v3, in a module of ours.
func main() { ctlv3.MustStart() }
`

/**
 * Builds release line `line` into releaseDir(version) unless it is there already, and returns
 * its binaries. Throws an Error whose message says what is missing (Go, the module proxy) and
 * what to do instead. `log` gets one line per step.
 */
export function buildRelease(line, log = (msg) => process.stderr.write(`[etcd] ${msg}\n`)) {
  const releases = etcdReleases().releases
  const release = releases[line]
  if (!release) throw new Error(`unknown etcd release ${JSON.stringify(line)}: releases.json has ${Object.keys(releases).join(', ')}`)
  if (release.source !== 'go') throw new Error(`etcd ${line} is not built from Go modules here (it comes from Debian's ${release.package})`)
  const built = builtRelease(line)
  if (built) return built

  const go = goToolchain()
  if (go.missing) throw new Error(`cannot build etcd ${release.version}: ${go.missing}; it needs Go ${GO_FLOOR}+`)
  if (!goAtLeast(go.version, GO_FLOOR))
    throw new Error(`cannot build etcd ${release.version}: it needs Go ${GO_FLOOR}+ and this machine has Go ${go.version}`)

  const dir = releaseDir(release.version)
  // Several processes may build at once (parallel test files, two terminals): each builds in a
  // folder of its own and renames it into place; the first rename wins, the rest are discarded.
  const work = `${dir}.${process.pid}.partial`
  rmSync(work, { recursive: true, force: true })
  mkdirSync(join(work, 'src', 'etcd'), { recursive: true })
  mkdirSync(join(work, 'src', 'etcdctl'), { recursive: true })
  const src = join(work, 'src')
  writeFileSync(join(src, 'go.mod'), `module middy-etcd.local/etcd-${release.version}\n\ngo ${GO_FLOOR}\n`)
  writeFileSync(join(src, 'etcd', 'main.go'), MAIN_SERVER)
  writeFileSync(join(src, 'etcdctl', 'main.go'), MAIN_ETCDCTL)

  const started = Date.now()
  log(`building etcd ${release.version} and etcdctl from Go modules with Go ${go.version} (once per machine; 1-4 min on 2 cores)…`)
  // GOTOOLCHAIN=local: use this Go, never download another; GOFLAGS cleared so a user's
  // -mod=vendor or the like does not apply to a module that has no vendor folder.
  const env = { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-buildvcs=false', GO111MODULE: 'on' }
  const go_ = (args) => execFileSync('go', args, { cwd: src, env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  try {
    go_(['get', `go.etcd.io/etcd/server/v3@v${release.version}`, `go.etcd.io/etcd/etcdctl/v3@v${release.version}`])
    go_(['mod', 'tidy'])
    go_(['build', '-trimpath', '-o', `${work}/`, './etcd', './etcdctl'])
  } catch (err) {
    rmSync(work, { recursive: true, force: true })
    const stderr = String(err.stderr ?? err.message)
      .trim()
      .split('\n')
      .slice(-6)
      .join('\n  ')
    throw new Error(`building etcd ${release.version} failed (the Go module proxy must be reachable the first time):\n  ${stderr}`)
  }
  // Keep go.mod and go.sum beside the binaries: they record exactly what was built.
  renameSync(join(src, 'go.mod'), join(work, 'go.mod'))
  renameSync(join(src, 'go.sum'), join(work, 'go.sum'))
  rmSync(src, { recursive: true, force: true })
  mkdirSync(dirname(dir), { recursive: true })
  try {
    renameSync(work, dir)
  } catch {
    rmSync(work, { recursive: true, force: true }) // another process finished first
  }
  const result = builtRelease(line)
  if (!result) throw new Error(`building etcd ${release.version}: ${dir} has no etcd and etcdctl after the build`)
  log(`etcd ${release.version} built in ${Math.round((Date.now() - started) / 1000)} s: ${dir}`)
  return result
}

const isMain = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]
if (isMain) {
  const { default: defaultLine, releases } = etcdReleases()
  const asked = process.argv.slice(2)
  const lines = asked.includes('all')
    ? Object.keys(releases).filter((l) => releases[l].source === 'go')
    : asked.length
      ? asked
      : [defaultLine]
  try {
    for (const line of lines) {
      const built = buildRelease(line)
      process.stdout.write(`${line}\t${built.version}\t${built.etcd}\n`)
    }
  } catch (err) {
    process.stderr.write(`[etcd] ${err.message}\n`)
    process.exit(1)
  }
}
