// The watchdog of an offline session (offline/local-etcd.ts): when the CLI is killed with
// kill -9 its etcd goes within a second, with its data, pid file and offline build. The CLI here
// is a child whose parent never reaps it (a `sleep` that exec'd over the shell that started it),
// so the dead CLI stays a zombie — whose pid still answers kill(0) — for as long as the test
// wants: the watchdog must notice the death itself, not a pid that disappears.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { until } from './helpers.js'

const root = resolve(fileURLToPath(new URL('..', import.meta.url)))

/** Running and not a zombie (a killed process whose parent has not reaped it yet is gone for our purpose). */
function running(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z'
  } catch {
    return false
  }
}

const CLI = `
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
const { startLocalEtcd } = await import('./offline/local-etcd.ts')
const stateDir = process.env.STATE_DIR
// Where offline-build.ts builds this CLI's bundles.
const build = join(stateDir, 'build', String(process.pid))
mkdirSync(join(build, 'handlers'), { recursive: true })
writeFileSync(join(build, 'handlers', 'a.js'), '')
const local = await startLocalEtcd({ stateDir, nodes: 1, alsoRemove: [build], rmdirs: [dirname(build)] })
console.log(JSON.stringify({ pid: process.pid, etcd: local.cluster.pids()[0], dataDir: local.cluster.dataDir, pidFile: local.pidFile, build }))
setInterval(() => {}, 1000)
`

describe('the offline watchdog', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'middy-etcd-watchdog-'))
  let parent: ReturnType<typeof spawn> | undefined
  let etcdPid: number | undefined
  afterAll(() => {
    if (parent?.pid && parent.exitCode === null) process.kill(parent.pid, 'SIGKILL')
    if (etcdPid && running(etcdPid)) process.kill(etcdPid, 'SIGKILL')
    rmSync(stateDir, { recursive: true, force: true })
  })

  it('kill -9 of the CLI: its etcd is gone within a second, with its data, pid file and build', async () => {
    parent = spawn('sh', ['-c', '"$0" --import tsx --input-type=module -e "$1" & exec sleep 120', process.execPath, CLI], {
      cwd: root,
      env: { ...process.env, STATE_DIR: stateDir },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    parent.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    const session = await until('the CLI to start etcd', 30_000, () => {
      const line = out.split('\n').find((l) => l.startsWith('{'))
      return line !== undefined && (JSON.parse(line) as { pid: number; etcd: number; dataDir: string; pidFile: string; build: string })
    })
    etcdPid = session.etcd
    for (const path of [session.dataDir, session.pidFile, session.build]) expect(existsSync(path)).toBe(true)
    expect(running(session.etcd)).toBe(true)

    const killed = performance.now()
    process.kill(session.pid, 'SIGKILL')
    await until('etcd to go', 5_000, () => !running(session.etcd), 10)
    const goneMs = performance.now() - killed
    console.log(`watchdog: etcd gone ${goneMs.toFixed(0)} ms after kill -9 of the CLI`)
    expect(goneMs).toBeLessThan(1_000)
    // Its CLI is still a zombie (nobody reaped it), so the pid alone would have said "alive".
    expect(existsSync(`/proc/${session.pid}`)).toBe(true)
    // The shared build/ folder goes last (removed only once empty), so it is waited for too: a
    // check right after the session's own leftovers went raced the watchdog's last step.
    const leftovers = [session.dataDir, session.pidFile, session.build, join(stateDir, 'build')]
    await until('the leftovers to be removed', 2_000, () => !leftovers.some(existsSync))
    expect(leftovers.filter(existsSync)).toEqual([])
  }, 60_000)
})
