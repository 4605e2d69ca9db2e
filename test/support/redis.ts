/**
 * A real Redis server for the "what survives" tests and the Redis side of the benchmarks:
 * `redis-server` on a free port of 127.0.0.1 in a temporary directory, no RDB snapshots and no
 * AOF unless asked (`appendonly`), stopped and removed afterwards. `restart()` SIGKILLs it and
 * starts it again on the same port and directory, as a crashed store comes back.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../testing/etcd.js'

/** redis-server is not installed; says how to fix it. */
export class RedisNotFoundError extends Error {
  constructor(detail: string) {
    super(
      `${detail}\nThe Redis comparison tests and benchmarks need a real Redis server: apt-get install -y redis-server (npm test's set-up installs it when run as root with --redis), or put redis-server on PATH or in REDIS_SERVER. They fail rather than skip without it.`,
    )
    this.name = 'RedisNotFoundError'
  }
}

export interface RedisServer {
  host: string
  port: number
  /** redis://127.0.0.1:port */
  url: string
  /** The server's version, e.g. "7.0.15". */
  version: string
  /** SIGKILL the server and start it again on the same port and data directory. */
  restart(): Promise<void>
  stop(): Promise<void>
}

/** The redis-server binary: REDIS_SERVER, else PATH. */
export function redisServerBin(): string {
  if (process.env.REDIS_SERVER) return process.env.REDIS_SERVER
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' })
  if (found.status === 0 && found.stdout.trim()) return found.stdout.trim()
  throw new RedisNotFoundError('redis-server was not found on PATH (nor REDIS_SERVER set).')
}

/** Sends one inline command and returns the raw reply (enough for PING and a readiness check). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port })
    let data = ''
    const done = (ok: boolean) => {
      sock.destroy()
      resolve(ok)
    }
    sock.setTimeout(1000, () => done(false))
    sock.on('error', () => done(false))
    sock.on('connect', () => sock.write('PING\r\n'))
    sock.on('data', (d) => {
      data += d.toString()
      if (data.includes('\r\n')) done(data.startsWith('+PONG'))
    })
  })
}

/** Starts a server on 127.0.0.1 and a free port; resolves once it answers PING. */
export async function startRedis(options: { appendonly?: boolean } = {}): Promise<RedisServer> {
  const bin = redisServerBin()
  const versionRun = spawnSync(bin, ['--version'], { encoding: 'utf8' })
  if (versionRun.status !== 0) throw new RedisNotFoundError(`${bin} --version failed: ${versionRun.stderr || versionRun.error}`)
  const version = /v=(\S+)/.exec(versionRun.stdout)?.[1] ?? 'unknown'
  const dir = mkdtempSync(join(tmpdir(), `mep-${process.pid}-redis-`))
  const port = await freePort()
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    options.appendonly ? 'yes' : 'no',
    '--daemonize',
    'no',
    '--protected-mode',
    'no',
  ]
  let proc: ChildProcess | undefined
  let log = ''
  const killOnExit = () => proc?.kill('SIGKILL')
  process.once('exit', killOnExit)

  const launch = async () => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir })
    proc = p
    p.stdout!.setEncoding('utf8')
    p.stdout!.on('data', (d: string) => (log = (log + d).slice(-4000)))
    p.stderr!.setEncoding('utf8')
    p.stderr!.on('data', (d: string) => (log = (log + d).slice(-4000)))
    const deadline = Date.now() + 15_000
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null)
        throw new RedisNotFoundError(`redis-server exited during start-up: ${log.trim().slice(-800)}`)
      if (await ping(port)) return
      if (Date.now() > deadline) throw new Error(`redis-server did not answer PING within 15 s: ${log.trim().slice(-800)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const kill = async (signal: NodeJS.Signals) => {
    const p = proc
    if (!p || p.exitCode !== null || p.signalCode !== null) return
    const exited = new Promise((r) => p.once('exit', r))
    p.kill(signal)
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
  try {
    await launch()
  } catch (err) {
    await kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  return {
    host: '127.0.0.1',
    port,
    url: `redis://127.0.0.1:${port}`,
    version,
    async restart() {
      await kill('SIGKILL')
      await launch()
    },
    async stop() {
      process.removeListener('exit', killOnExit)
      await kill('SIGTERM')
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
