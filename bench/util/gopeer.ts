import { execFile, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { goPeerDir } from '../../test/gopeer.js'

/** One JSON line printed by the Go peer. */
export interface GoResult {
  scenario: string
  ops: number
  seconds: number
  ops_per_s: number
  p50_ms?: number
  p99_ms?: number
  extra?: Record<string, number>
}

/** The Go reference peer (`GOPEER_DIR`, else `shared/peer-go` beside the repository), built on demand. */
export interface GoPeer {
  /** Null when it can be run; otherwise why not (no Go, build failed, ...). */
  unavailable: string | null
  run(args: string[]): Promise<GoResult>
}

/**
 * Builds the Go peer into a cache directory keyed by the hash of its source (so a rebuild
 * happens only when main.go changes), using its own build.sh (Debian GOPATH build).
 */
export function buildGoPeer(endpoints: string[], log: (m: string) => void): GoPeer {
  const dir = goPeerDir()
  const unavailable = (why: string): GoPeer => ({ unavailable: why, run: () => Promise.reject(new Error(why)) })
  const src = join(dir, 'main.go')
  if (!existsSync(src) || !existsSync(join(dir, 'build.sh'))) return unavailable(`Go peer sources not found in ${dir} (set GOPEER_DIR)`)
  if (spawnSync('sh', ['-c', 'command -v go'], { stdio: 'ignore' }).status !== 0) {
    return unavailable('Go is not installed (apt-get install -y golang-go golang-etcd-server-dev); Go peer columns are not measured')
  }
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 12)
  const cache = join(process.env.XDG_CACHE_HOME ?? tmpdir(), 'middy-etcd-bench')
  mkdirSync(cache, { recursive: true })
  const bin = join(cache, `gopeer-${hash}`)
  if (!existsSync(bin)) {
    log(`building Go peer into ${bin}`)
    const r = spawnSync('bash', [join(dir, 'build.sh'), bin], {
      encoding: 'utf8',
      env: { ...process.env, GOCACHE: process.env.GOCACHE ?? join(cache, 'gocache') },
    })
    if (r.status !== 0 || !existsSync(bin)) {
      return unavailable(`Go peer build failed (needs golang-etcd-server-dev): ${(r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' | ')}`)
    }
  }
  return {
    unavailable: null,
    run(args) {
      return new Promise((resolve, reject) => {
        execFile(bin, ['-endpoints', endpoints.join(','), ...args], { timeout: 180_000 }, (err, stdout, stderr) => {
          if (err) return reject(new Error(`gopeer ${args.join(' ')} failed: ${err.message} ${stderr}`))
          const line = stdout.trim().split('\n').pop() ?? ''
          try {
            resolve(JSON.parse(line) as GoResult)
          } catch {
            reject(new Error(`gopeer ${args.join(' ')} printed no JSON: ${stdout} ${stderr}`))
          }
        })
      })
    },
  }
}
