/**
 * A real PostgreSQL server for the downstream-fencing tests: `initdb` on a temporary data dir,
 * `postgres` on a free port of 127.0.0.1 — or on a host of a {@link Network}, inside its
 * namespace — stopped and removed afterwards. As root it runs as the `postgres` system user
 * (PostgreSQL refuses to run as root). The test process itself always reaches the server through
 * its Unix socket in the data dir, which no network partition touches.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { appendFileSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort } from '../../testing/etcd.js'
import type { Network } from './netns.js'

/** PostgreSQL is not installed (or cannot run here); says how to fix it. */
export class PostgresNotFoundError extends Error {
  constructor(detail: string) {
    super(
      `${detail}\nThe downstream-fencing tests need a real PostgreSQL server: apt-get install -y postgresql (npm test's set-up installs it when run as root), or put initdb and postgres on PATH. They fail rather than skip without it.`,
    )
    this.name = 'PostgresNotFoundError'
  }
}

/** A running server, its address and an admin pool on its Unix socket. */
export interface PgServer {
  /** Where clients connect over TCP (127.0.0.1, or the network host's address). */
  host: string
  port: number
  user: string
  database: string
  /** The Unix socket directory (the test process's own way in). */
  socketDir: string
  /** A pool on the Unix socket, for the test's set-up and checks (ended by stop()). */
  admin: pg.Pool
  stop(): Promise<void>
}

/** The directory holding `initdb` and `postgres`: Debian's newest /usr/lib/postgresql/N/bin, else PATH. */
export function postgresBinDir(): string {
  const debian = '/usr/lib/postgresql'
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
    for (const v of versions) if (existsSync(join(debian, v, 'bin', 'postgres'))) return join(debian, v, 'bin')
  }
  const found = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' })
  if (found.status === 0) return join(found.stdout.trim(), '..')
  throw new PostgresNotFoundError('PostgreSQL binaries (initdb, postgres) were not found under /usr/lib/postgresql/*/bin or on PATH.')
}

const USER = 'mep'
const DATABASE = 'postgres'

/** The uid/gid to run as: the `postgres` user when we are root, ourselves otherwise. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' })
  const uid = id('-u')
  if (uid.status !== 0)
    throw new PostgresNotFoundError(
      'running as root, and there is no "postgres" system user to run PostgreSQL as (PostgreSQL refuses root); the Debian package creates it.',
    )
  return { uid: Number(uid.stdout.trim()), gid: Number(id('-g').stdout.trim()) }
}

/**
 * Starts a server: on 127.0.0.1 and a free port, or with `on: { net, host }` inside that host's
 * namespace on its address, port 5432. Resolves once it accepts connections.
 */
export async function startPostgres(options: { on?: { net: Network; host: string } } = {}): Promise<PgServer> {
  const bin = postgresBinDir()
  const user = runAs()
  const base = options.on ? join(options.on.net.dir, 'pg') : mkdtempSync(join(tmpdir(), `mep-${process.pid}-pg-`))
  mkdirSync(base, { recursive: true })
  const dataDir = join(base, 'data')
  if (user) chownSync(base, user.uid, user.gid)
  const asUser = user ? { uid: user.uid, gid: user.gid } : {}
  try {
    execFileSync(join(bin, 'initdb'), ['-D', dataDir, '-U', USER, '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], {
      stdio: 'pipe',
      ...asUser,
      cwd: base,
    })
  } catch (err) {
    rmSync(base, { recursive: true, force: true })
    throw new PostgresNotFoundError(
      `initdb failed: ${String((err as { stderr?: Buffer }).stderr ?? err)
        .trim()
        .slice(-500)}`,
    )
  }
  // Trust the network's own subnet: its addresses exist only inside the test's namespaces.
  if (options.on) appendFileSync(join(dataDir, 'pg_hba.conf'), `host all all ${options.on.net.subnet}.0/24 trust\n`)
  const host = options.on ? options.on.net.ip(options.on.host) : '127.0.0.1'
  const port = options.on ? 5432 : await freePort()
  // Durability is not under test: skip fsyncs so the server costs the shared machine little.
  const args = [
    '-D',
    dataDir,
    '-k',
    base,
    '-h',
    host,
    '-p',
    String(port),
    '-c',
    'fsync=off',
    '-c',
    'synchronous_commit=off',
    '-c',
    'full_page_writes=off',
    '-c',
    'shared_buffers=16MB',
    '-c',
    'max_connections=40',
  ]
  let proc: ChildProcess
  if (options.on) {
    // setpriv execs postgres directly (no fork), so the pid we hold is the postmaster's.
    const drop = user ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--'] : []
    const [command, ...rest] = [...drop, join(bin, 'postgres'), ...args]
    proc = options.on.net.spawn(options.on.host, command, rest, { stdio: ['ignore', 'ignore', 'pipe'], cwd: base })
  } else {
    proc = spawn(join(bin, 'postgres'), args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: base, ...asUser })
  }
  let log = ''
  proc.stderr!.setEncoding('utf8')
  proc.stderr!.on('data', (d: string) => (log = (log + d).slice(-4000)))
  const killOnExit = () => proc.kill('SIGKILL')
  process.once('exit', killOnExit)

  const admin = new pg.Pool({ host: base, port, user: USER, database: DATABASE, max: 4 })
  admin.on('error', () => {}) // a pooled idle connection dropped at shutdown is no test failure
  const stop = async () => {
    process.removeListener('exit', killOnExit)
    await admin.end().catch(() => {})
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r))
      proc.kill('SIGQUIT') // immediate shutdown: nothing to keep
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    if (!options.on) rmSync(base, { recursive: true, force: true })
  }
  const deadline = Date.now() + 30_000
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await stop()
      throw new PostgresNotFoundError(`postgres exited during start-up: ${log.trim().slice(-800)}`)
    }
    try {
      await admin.query('SELECT 1')
      break
    } catch {
      if (Date.now() > deadline) {
        await stop()
        throw new Error(`postgres did not accept connections within 30 s: ${log.trim().slice(-800)}`)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  return { host, port, user: USER, database: DATABASE, socketDir: base, admin, stop }
}
