import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

/** The project's Go interop program (`interop/go/` in this repository). */
export function goPeerDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', 'interop', 'go')
}

/**
 * Hash of the program's sources, its build script and its module files (go.mod pins the etcd
 * client, go.sum its dependencies): a binary built from other sources or modules is never reused.
 */
function sourceHash(dir: string): string {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.go') || f === 'build.sh' || f === 'go.mod' || f === 'go.sum')
    .sort()
  const hash = createHash('sha256')
  for (const f of files)
    hash
      .update(f)
      .update('\0')
      .update(readFileSync(join(dir, f)))
  return hash.digest('hex').slice(0, 12)
}

/** How long the build may take: a bound for a hang, long enough for a cold module cache. */
export const GO_BUILD_TIMEOUT_MS = 600_000

/**
 * Builds the Go interop program with its build.sh into a cache directory keyed by the hash of
 * its sources and returns the binary's path; a binary already built from the same sources is
 * reused. Fails loudly, saying what is needed, when Go 1.26 is missing or the modules cannot be
 * downloaded: interop with Go is a feature, so its tests never skip.
 */
export async function buildGoPeer(): Promise<string> {
  const dir = goPeerDir()
  const cache = join(process.env.XDG_CACHE_HOME ?? tmpdir(), 'middy-etcd-interop-go')
  const bin = join(cache, `interop-go-${sourceHash(dir)}`)
  if (existsSync(bin)) return bin
  mkdirSync(cache, { recursive: true })
  // Test files build in parallel: each writes its own file and renames it into place (atomic).
  const partial = `${bin}.${process.pid}.partial`
  try {
    await promisify(execFile)('bash', [join(dir, 'build.sh'), partial], {
      // A cold module cache downloads the etcd client and its dependencies (grpc, protobuf,
      // otel, zap) and compiles them: minutes on a slow link or a busy 2-core machine.
      timeout: GO_BUILD_TIMEOUT_MS,
      env: { ...process.env, GOCACHE: process.env.GOCACHE ?? join(cache, 'gocache') },
    })
    renameSync(partial, bin)
  } catch (err) {
    rmSync(partial, { force: true })
    const e = err as Error & { stderr?: string }
    throw new Error(
      `building the Go interop program (interop/go/build.sh) failed; it needs Go 1.26 or newer on PATH (https://go.dev/dl/) ` +
        `and, until the module cache holds the etcd client pinned in interop/go/go.mod and its dependencies, the Go module proxy ` +
        `(GOPROXY, by default https://proxy.golang.org): ${e.stderr?.trim() || e.message}`,
    )
  }
  return bin
}

/** A running interop helper of the Go program: what it printed so far, and how it ended. */
export interface RunningGoPeer {
  proc: ChildProcess
  /** stdout lines so far (the helpers print one per step another client can observe). */
  lines: string[]
  stderr: () => string
  /** The exit code (null when killed by a signal). */
  exited: Promise<number | null>
  /** Waits up to `ms` for a line equal to (or matching) `line`; true when it came. */
  saw: (line: string | RegExp, ms?: number) => Promise<boolean>
}

const running = new Set<ChildProcess>()

/** Starts `bin -scenario scenario -prefix name -n n args...` against `endpoint` without waiting for it. */
export function startGoPeer(bin: string, endpoint: string, scenario: string, name: string, n: number, args: string[] = []): RunningGoPeer {
  const proc = spawn(bin, ['-endpoints', endpoint, '-scenario', scenario, '-prefix', name, '-n', String(n), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(proc)
  const lines: string[] = []
  let partial = ''
  let stderr = ''
  proc.stdout!.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split('\n')
    partial = parts.pop()!
    lines.push(...parts)
  })
  proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve)).finally(() => running.delete(proc))
  const matches = (line: string | RegExp) => lines.some((l) => (typeof line === 'string' ? l === line : line.test(l)))
  const saw = async (line: string | RegExp, ms = 10_000) => {
    for (const end = Date.now() + ms; !matches(line) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50))
    return matches(line)
  }
  return { proc, lines, stderr: () => stderr, exited, saw }
}

/** Kills the helpers still running (for afterEach), so a failed test leaves no process behind. */
export function killGoPeers(): void {
  for (const proc of running) if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  running.clear()
}
