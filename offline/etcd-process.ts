// Starts and stops real etcd processes on free loopback ports with temporary data directories:
// the local etcd of `serverless offline` (offline/local-etcd.ts) and, re-exported by
// `middy-etcd/testing`, the etcd of tests and benchmarks.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError } from '../lib/errors.js'
import {
  etcdProcessEnv,
  mergeFlags,
  releaseFlags,
  resolveEtcd,
  startupFailureHint,
  type EtcdLine,
  type EtcdRelease,
} from './etcd-release.js'

export { EtcdNotFoundError, etcdReleases, resolveEtcd, type EtcdLine, type EtcdRelease } from './etcd-release.js'

/** Options of {@link startEtcd}. */
export interface StartEtcdOptions {
  /** 1 (default) or 3 members. */
  nodes?: 1 | 3
  /** Client port of member 0 (the rest are free ports). Default: a free port. */
  port?: number
  /** Path of the etcd binary; default `ETCD_BIN`, then the release `version` asks for. */
  bin?: string
  /**
   * Release line to run ('3.7', '3.6', '3.5' or '3.4'); default `ETCD_VERSION`, else 3.7 when it
   * is built here (etcd/build.mjs), else `etcd` on PATH. The launcher asks the binary its version
   * and passes the flags that release takes.
   */
  version?: EtcdLine
  /**
   * Lease checkpointing (default true): a leader change keeps each lease's remaining TTL instead
   * of resetting it to the full TTL. `false` runs etcd as its defaults do.
   */
  leaseCheckpoint?: boolean
  /**
   * Extra flags for every member, e.g. `['--auto-compaction-retention=1']`; a `--feature-gates`
   * here is merged with the launcher's.
   */
  args?: string[]
  /** Called with each line etcd writes (default: discarded). */
  log?: (member: number, line: string) => void
  /** How long to wait for the cluster to become healthy, ms (default 20000). */
  readyTimeoutMs?: number
}

/** A running local etcd cluster. */
export interface EtcdCluster {
  /** Client URLs, one per member (`http://127.0.0.1:PORT`). */
  endpoints: string[]
  /** The data directory root (removed by stop()). */
  dataDir: string
  /** The etcd that runs: its binary, etcdctl, and the version it reported ('3.7.4'). */
  release: EtcdRelease
  /** Process ids of the running members (undefined for a stopped one). */
  pids(): (number | undefined)[]
  /** Stops every member and removes the data directory. Safe to call twice. */
  stop(): Promise<void>
  /** Stops member `i` (SIGTERM, then SIGKILL), keeping its data. */
  stopMember(i: number): Promise<void>
  /** Restarts a stopped member `i` with its data; resolves when it serves again. */
  startMember(i: number): Promise<void>
}

/** Finds a free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** The etcd binary to run (see {@link resolveEtcd}); `EtcdNotFoundError` if there is none. */
export function resolveEtcdBin(bin?: string, version?: EtcdLine): string {
  return resolveEtcd({ bin, version }).bin
}

interface Member {
  name: string
  clientPort: number
  peerPort: number
  dir: string
  proc?: ChildProcess
  args: string[]
  output: string[]
}

const running = new Set<ChildProcess>()
let exitHookInstalled = false
function killAllOnExit() {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Last line of defence: never leave an etcd behind when the parent exits.
  process.once('exit', () => {
    for (const proc of running) proc.kill('SIGKILL')
  })
}

/**
 * Starts real etcd processes on free 127.0.0.1 ports with a temporary data directory, and waits
 * until every member answers. Used by the offline plugin, the tests and the benchmarks.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdCluster> {
  const nodes = options.nodes ?? 1
  if (nodes !== 1 && nodes !== 3) throw new InvalidArgumentError(`startEtcd: nodes must be 1 or 3, got ${String(nodes)}`)
  const release = resolveEtcd({ bin: options.bin, version: options.version })
  killAllOnExit()
  // A free port can be taken by someone else between our probe and etcd's bind (several test
  // processes start clusters at once): start over on fresh ports, unless the port was given.
  const attempts = options.port ? 1 : 3
  for (let attempt = 1; ; attempt++) {
    try {
      return await launchCluster(release, nodes, options)
    } catch (err) {
      if (attempt >= attempts || !(err instanceof MemberExitedError) || !err.portTaken) throw err
    }
  }
}

/** A member exited while the cluster was starting; its message carries etcd's own last words. */
class MemberExitedError extends Error {
  constructor(
    message: string,
    readonly portTaken: boolean,
  ) {
    super(message)
  }
}

async function launchCluster(release: EtcdRelease, nodes: number, options: StartEtcdOptions): Promise<EtcdCluster> {
  const dataDir = mkdtempSync(join(tmpdir(), 'middy-etcd-'))
  const members: Member[] = []
  for (let i = 0; i < nodes; i++) {
    const clientPort = i === 0 && options.port ? options.port : await freePort()
    members.push({ name: `m${i}`, clientPort, peerPort: await freePort(), dir: join(dataDir, `m${i}`), args: [], output: [] })
  }
  const initialCluster = members.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(',')
  const token = `middy-etcd-${process.pid}-${Date.now()}`

  const launch = (m: Member, i: number) => {
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dir}`,
      `--listen-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--advertise-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-token=${token}`,
      '--initial-cluster-state=new',
      // Small tick and election timeouts: fault tests see leader changes in well under a second.
      '--heartbeat-interval=50',
      '--election-timeout=500',
      '--log-level=error',
      ...mergeFlags(releaseFlags(release.line, { leaseCheckpoint: options.leaseCheckpoint }), options.args ?? []),
    ]
    const proc = spawn(release.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: etcdProcessEnv() })
    m.proc = proc
    m.args = args
    m.output = []
    running.add(proc)
    proc.on('exit', () => running.delete(proc))
    const log = options.log
    for (const stream of [proc.stdout!, proc.stderr!]) {
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        for (const line of chunk.split('\n')) {
          if (!line) continue
          log?.(i, line)
          // Kept for the error of a member that exits during start-up (etcd prints its reason
          // first, then its usage), up to a bound so a long-running member keeps no log.
          if (m.output.length < 400) m.output.push(line)
        }
      })
    }
  }

  const stopMember = async (i: number, signal: NodeJS.Signals = 'SIGTERM') => {
    const proc = members[i].proc
    members[i].proc = undefined
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
    proc.kill(signal)
    const timer = setTimeout(() => proc.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
  }

  let stopped = false
  const cluster: EtcdCluster = {
    endpoints: members.map((m) => `http://127.0.0.1:${m.clientPort}`),
    dataDir,
    release,
    pids: () => members.map((m) => m.proc?.pid),
    stopMember: (i) => stopMember(i),
    async startMember(i) {
      if (stopped) throw new Error('startMember: the cluster was stopped and its data removed; start a new one')
      if (members[i].proc) return
      launch(members[i], i)
      await waitHealthy([members[i]], release.line, options.readyTimeoutMs ?? 20_000)
    },
    async stop() {
      if (stopped) return
      stopped = true
      // The data goes too, so there is nothing to shut down gracefully; SIGTERM to every member
      // at once would make the leader spend seconds trying to hand over leadership.
      await Promise.all(members.map((_, i) => stopMember(i, 'SIGKILL')))
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
  try {
    members.forEach(launch)
    await waitHealthy(members, release.line, options.readyTimeoutMs ?? 20_000)
    for (const m of members) m.output = []
  } catch (err) {
    await cluster.stop()
    throw err
  }
  return cluster
}

/** Polls each member's /health until it reports healthy (it needs a leader to). */
async function waitHealthy(members: Member[], line: EtcdLine, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (const m of members) {
    for (;;) {
      const proc = m.proc
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
        // Give the pipes a moment to deliver etcd's last lines (its reason) before reading them.
        await new Promise((r) => setTimeout(r, 50))
        const output = m.output.join('\n')
        const hint = startupFailureHint(line, m.args, output)
        const reason =
          m.output
            .filter((l) => /flag provided|unknown flag|error|fatal|panic|invalid/i.test(l))
            .slice(0, 3)
            .join(' | ') || m.output.slice(-5).join(' | ')
        throw new MemberExitedError(
          `etcd ${line} member ${m.name} exited during start-up (code ${proc?.exitCode ?? proc?.signalCode})${hint ? `: ${hint}` : ''}; etcd said: ${reason.slice(0, 600) || '(nothing)'}`,
          /address already in use/i.test(output),
        )
      }
      try {
        const res = await fetch(`http://127.0.0.1:${m.clientPort}/health`, { signal: AbortSignal.timeout(1000) })
        const body = (await res.json()) as { health?: string }
        if (body.health === 'true') break
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`etcd member ${m.name} not healthy after ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}
