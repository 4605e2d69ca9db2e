// The local etcd of `serverless offline`: started by etcd-process.ts, recorded in a pid
// file so that an etcd left behind by a killed CLI is found and replaced on the next start, and
// watched by a detached watchdog that stops it, and removes the session's offline build, if the
// CLI dies without running any exit code (kill -9).
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startEtcd, type EtcdCluster, type EtcdLine } from './etcd-process.js'

/** Where pid files of running offline sessions live, under the service directory. */
export const STATE_DIR = '.etcd-offline'

/** What the pid file of one running offline session holds. */
export interface PidRecord {
  /** The CLI process that started the etcd. */
  cliPid: number
  etcdPids: number[]
  dataDir: string
  endpoints: string[]
}

/** A started local etcd and how to stop it. */
export interface LocalEtcd {
  endpoints: string[]
  cluster: EtcdCluster
  pidFile: string
  /** Stops etcd, removes its data and the pid file. Safe to call twice. */
  stop(): Promise<void>
  /** The same, synchronously (for `process.on('exit')`): SIGKILL, then remove the files. */
  stopSync(): void
}

/** Is `pid` alive (and, when `name` is given, is its command line about `name`)? */
export function isAlive(pid: number, name?: string): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    // EPERM: it exists but is not ours; treat as alive and leave it alone.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  if (!name) return true
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(name)
  } catch {
    return true // no /proc (macOS): trust the pid
  }
}

/**
 * The offline sessions recorded in `dir` whose CLI still runs, newest first: how the operator
 * CLI finds the local etcd `npm start` started. Reads only; cleans nothing up.
 */
export function liveSessions(dir: string): PidRecord[] {
  if (!existsSync(dir)) return []
  const records: { record: PidRecord; at: number }[] = []
  for (const file of readdirSync(dir)) {
    if (!file.endsWith('.json')) continue
    try {
      const record = JSON.parse(readFileSync(join(dir, file), 'utf8')) as PidRecord
      if (Number.isInteger(record.cliPid) && Array.isArray(record.endpoints) && isAlive(record.cliPid))
        records.push({ record, at: statSync(join(dir, file)).mtimeMs })
    } catch {
      // unreadable or half-written: not a session to use
    }
  }
  return records.sort((a, b) => b.at - a.at).map((r) => r.record)
}

/**
 * Removes what killed offline sessions left in `dir`: for each pid file whose CLI is gone,
 * kills its etcd processes (when they still run etcd) and deletes their data. Returns the
 * records it cleaned up.
 */
export function reapStale(dir: string): PidRecord[] {
  if (!existsSync(dir)) return []
  const reaped: PidRecord[] = []
  for (const file of readdirSync(dir)) {
    if (!file.endsWith('.json')) continue
    const path = join(dir, file)
    let record: PidRecord
    try {
      record = JSON.parse(readFileSync(path, 'utf8')) as PidRecord
    } catch {
      rmSync(path, { force: true })
      continue
    }
    if (record.cliPid !== process.pid && isAlive(record.cliPid)) continue // another live session
    for (const pid of record.etcdPids ?? []) {
      if (isAlive(pid, 'etcd')) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // gone meanwhile
        }
      }
    }
    if (record.dataDir) rmSync(record.dataDir, { recursive: true, force: true })
    rmSync(path, { force: true })
    reaped.push(record)
  }
  return reaped
}

/** Options of {@link startLocalEtcd}. */
export interface LocalEtcdOptions {
  stateDir: string
  nodes: 1 | 3
  port?: number
  version?: EtcdLine
  leaseCheckpoint?: boolean
  /** What else the watchdog removes if the CLI is killed (the offline build). */
  alsoRemove?: string[]
  /** Folders it removes then if they are empty. */
  rmdirs?: string[]
}

/** Starts a local etcd for this CLI process and records it under `stateDir`; a watchdog stops it if the CLI is killed. */
export async function startLocalEtcd(options: LocalEtcdOptions): Promise<LocalEtcd> {
  const cluster = await startEtcd({
    nodes: options.nodes,
    port: options.port,
    version: options.version,
    leaseCheckpoint: options.leaseCheckpoint,
  })
  mkdirSync(options.stateDir, { recursive: true })
  const pidFile = join(options.stateDir, `${process.pid}.json`)
  const etcdPids = cluster.pids().filter((p): p is number => p !== undefined)
  const record: PidRecord = { cliPid: process.pid, etcdPids, dataDir: cluster.dataDir, endpoints: cluster.endpoints }
  writeFileSync(pidFile, JSON.stringify(record, null, 2))
  watchSession({ etcdPids, remove: [cluster.dataDir, pidFile, ...(options.alsoRemove ?? [])], rmdirs: options.rmdirs })

  let stopped = false
  const stopSync = () => {
    if (stopped) return
    stopped = true
    for (const pid of cluster.pids()) {
      if (pid === undefined) continue
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    rmSync(cluster.dataDir, { recursive: true, force: true })
    rmSync(pidFile, { force: true })
  }
  return {
    endpoints: cluster.endpoints,
    cluster,
    pidFile,
    async stop() {
      if (stopped) return
      stopped = true
      await cluster.stop()
      rmSync(pidFile, { force: true })
    },
    stopSync,
  }
}

// Runs in a detached `node -e`. The CLI holds the other end of its stdin, which the kernel
// closes when the CLI ends, however it ends: end-of-file is the signal, at once (a poll of the
// CLI's pid backs it up — a pid that has died but not been reaped still answers kill(0)). Then
// it kills etcd and removes the session's data, pid file and offline build.
const WATCHDOG = `
const { cliPid, etcd, remove, rmdirs } = JSON.parse(process.argv[1]);
const fs = require('node:fs');
const alive = (p) => { try { process.kill(p, 0); return true } catch (e) { return e.code === 'EPERM' } };
const isEtcd = (p) => { try { return fs.readFileSync('/proc/' + p + '/cmdline', 'utf8').includes('etcd') } catch { return alive(p) } };
const cleanUp = () => {
  for (const p of etcd) { if (isEtcd(p)) { try { process.kill(p, 'SIGKILL') } catch {} } }
  for (const path of remove) { try { fs.rmSync(path, { recursive: true, force: true }) } catch {} }
  for (const dir of rmdirs) { try { fs.rmdirSync(dir) } catch {} }
  process.exit(0);
};
process.stdin.on('end', cleanUp);
process.stdin.on('error', cleanUp);
process.stdin.resume();
setInterval(() => { if (!alive(cliPid)) cleanUp() }, 500);
`

/** What the watchdog of an offline session removes once its CLI is gone. */
export interface SessionLeftovers {
  etcdPids: number[]
  /** Files and folders to remove. */
  remove: string[]
  /** Folders to remove only when empty (e.g. `build/`, which other sessions may share). */
  rmdirs?: string[]
}

/**
 * Starts the detached watchdog of this CLI process (see WATCHDOG): when the CLI ends without
 * cleaning up (kill -9), it kills `etcdPids` and removes the rest within milliseconds. Harmless
 * after a clean stop: what it would remove is gone already.
 */
export function watchSession(leftovers: SessionLeftovers): void {
  const spec = JSON.stringify({ cliPid: process.pid, etcd: leftovers.etcdPids, remove: leftovers.remove, rmdirs: leftovers.rmdirs ?? [] })
  const child = spawn(process.execPath, ['-e', WATCHDOG, spec], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] })
  child.unref()
  // The pipe stays open for as long as this process lives, without keeping it alive.
  ;(child.stdin as unknown as { unref(): void }).unref()
}
