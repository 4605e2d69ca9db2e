// Starts and stops real etcd processes on free loopback ports with temporary data directories:
// the local etcd of `serverless offline` (offline/local-etcd.ts) and, re-exported by
// `middy-etcd/testing`, the etcd of tests and benchmarks.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError, MiddyEtcdError } from '../lib/errors.js'

/** Options of {@link startEtcd}. */
export interface StartEtcdOptions {
  /** 1 (default) or 3 members. */
  nodes?: 1 | 3
  /** Client port of member 0 (the rest are free ports). Default: a free port. */
  port?: number
  /** Path of the etcd binary; default `ETCD_BIN`, then `etcd` on PATH. */
  bin?: string
  /** Extra flags for every member, e.g. `['--auto-compaction-retention=1']`. */
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
  /** Process ids of the running members (undefined for a stopped one). */
  pids(): (number | undefined)[]
  /** Stops every member and removes the data directory. Safe to call twice. */
  stop(): Promise<void>
  /** Stops member `i` (SIGTERM, then SIGKILL), keeping its data. */
  stopMember(i: number): Promise<void>
  /** Restarts a stopped member `i` with its data; resolves when it serves again. */
  startMember(i: number): Promise<void>
}

/** Thrown when no etcd binary can be found; says how to install one. */
export class EtcdNotFoundError extends MiddyEtcdError {
  override readonly code = 'ETCD_NOT_FOUND'

  constructor(bin: string) {
    super(
      `etcd binary ${JSON.stringify(bin)} not found. Install etcd 3.4+ (Debian: apt-get install -y etcd-server etcd-client) ` +
        'or set ETCD_BIN=/path/to/etcd.',
    )
  }
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

/** The etcd binary to run: `bin`, else `ETCD_BIN`, else `etcd` on the PATH; `EtcdNotFoundError` if there is none. */
export function resolveEtcdBin(bin?: string): string {
  const chosen = bin ?? process.env.ETCD_BIN ?? 'etcd'
  if (chosen.includes('/')) {
    if (!existsSync(chosen)) throw new EtcdNotFoundError(chosen)
    return chosen
  }
  const found = spawnSync('sh', ['-c', `command -v ${chosen}`], { encoding: 'utf8' })
  if (found.status !== 0) throw new EtcdNotFoundError(chosen)
  return found.stdout.trim()
}

interface Member {
  name: string
  clientPort: number
  peerPort: number
  dir: string
  proc?: ChildProcess
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
  const bin = resolveEtcdBin(options.bin)
  killAllOnExit()
  // A free port can be taken by someone else between our probe and etcd's bind (several test
  // processes start clusters at once): start over on fresh ports, unless the port was given.
  const attempts = options.port ? 1 : 3
  for (let attempt = 1; ; attempt++) {
    try {
      return await launchCluster(bin, nodes, options)
    } catch (err) {
      if (attempt >= attempts || !(err instanceof MemberExitedError)) throw err
    }
  }
}

/** A member exited while the cluster was starting (usually: a port was taken). */
class MemberExitedError extends Error {}

async function launchCluster(bin: string, nodes: number, options: StartEtcdOptions): Promise<EtcdCluster> {
  const dataDir = mkdtempSync(join(tmpdir(), 'middy-etcd-'))
  const members: Member[] = []
  for (let i = 0; i < nodes; i++) {
    const clientPort = i === 0 && options.port ? options.port : await freePort()
    members.push({ name: `m${i}`, clientPort, peerPort: await freePort(), dir: join(dataDir, `m${i}`) })
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
      '--logger=zap',
      '--log-level=error',
      ...(options.args ?? []),
    ]
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    m.proc = proc
    running.add(proc)
    proc.on('exit', () => running.delete(proc))
    const log = options.log
    for (const stream of [proc.stdout!, proc.stderr!]) {
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        if (log) for (const line of chunk.split('\n')) if (line) log(i, line)
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
    pids: () => members.map((m) => m.proc?.pid),
    stopMember: (i) => stopMember(i),
    async startMember(i) {
      if (stopped) throw new Error('startMember: the cluster was stopped and its data removed; start a new one')
      if (members[i].proc) return
      launch(members[i], i)
      await waitHealthy([members[i]], options.readyTimeoutMs ?? 20_000)
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
    await waitHealthy(members, options.readyTimeoutMs ?? 20_000)
  } catch (err) {
    await cluster.stop()
    throw err
  }
  return cluster
}

/** Polls each member's /health until it reports healthy (it needs a leader to). */
async function waitHealthy(members: Member[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (const m of members) {
    for (;;) {
      const proc = m.proc
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
        throw new MemberExitedError(`etcd member ${m.name} exited during start-up (code ${proc?.exitCode ?? proc?.signalCode}); is port ${m.clientPort} or ${m.peerPort} taken?`)
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
