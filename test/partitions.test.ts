/**
 * Real network partitions: a 3-member etcd, client processes and a PostgreSQL
 * server, each in a network namespace made by this test, links cut with nftables. In every
 * scenario a victim client (c1) holds a lock (writing to Postgres with its fence), leadership
 * (leaderGuard) and a claimed queue batch when the cut comes, while majority clients run lock,
 * leader, consumer, producer and STM loops. Checked: no overlapping holds, fences in order, FIFO,
 * the victim's session signal before anyone else's grant, its stale etcd and Postgres writes
 * refused, every message acked exactly once, the STM counter within its bounds. Needs root; fails (never
 * skips) without it. Flapping partitions run in the soak: `npm run soak -- --partitions`.
 */
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildSync } from 'esbuild'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  clientCutOff,
  leaderIsolated,
  leaderReceiveOnly,
  leaderSendOnly,
  minorityMember,
  startLab,
  type Arrangement,
  type Lab,
  type Scenario,
} from './support/netns-lab.js'
import { formatReport, type ScenarioReport } from './support/netns-report.js'
import { runScenario } from './support/netns-scenario.js'
import { staleReadProbe, type StaleProbe } from './support/netns-stale.js'
import { listOurNamespaces, Network, reapStale, requireNetns } from './support/netns.js'

const root = fileURLToPath(new URL('..', import.meta.url))
let lab: Lab

beforeAll(async () => {
  requireNetns()
  lab = await startLab({ clients: 3, postgres: true })
}, 180_000)

afterAll(async () => {
  await lab?.stop()
}, 60_000)

/** Whether a TCP connection from `host` to `ip:port` opens within 1 s (run inside the host's namespace). */
async function connects(net: Network, host: string, ip: string, port: number): Promise<boolean> {
  const script = `const s=require('net').connect(${port},'${ip}');s.setTimeout(1000,()=>process.exit(1));s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1))`
  return net.exec(host, process.execPath, ['-e', script]).then(
    () => true,
    () => false,
  )
}

describe('the partition harness', () => {
  it('cuts one direction of a link at a time, heals it, and keeps the network inside its namespaces', async () => {
    const { net, etcd } = lab
    const e1 = net.ip('e1')
    expect(await connects(net, 'c2', e1, 2379)).toBe(true)
    await net.block('c2', 'e1') // c2's SYN never reaches e1
    expect(net.cuts()).toEqual(['c2>e1'])
    expect(await connects(net, 'c2', e1, 2379)).toBe(false)
    expect(await connects(net, 'c3', e1, 2379)).toBe(true)
    await net.heal()
    await net.block('e1', 'c2') // e1's SYN-ACK never reaches c2
    expect(await connects(net, 'c2', e1, 2379)).toBe(false)
    await net.heal()
    expect(net.cuts()).toEqual([])
    expect(await connects(net, 'c2', e1, 2379)).toBe(true)
    // The addresses exist only inside the namespaces: none on this process's own interfaces.
    // (Never probe them from here: this namespace's default route would carry that elsewhere.)
    const own = spawnSync('ip', ['-o', 'addr', 'show'], { encoding: 'utf8' }).stdout
    expect(own).not.toContain(`${net.subnet}.`)
    expect(await etcd.leader()).toBeDefined()
  })

  it('removes its namespaces on destroy(), and the reaper removes those of a dead process', async () => {
    const net = await Network.create(['a', 'b'])
    const made = net.namespaces()
    expect(listOurNamespaces()).toEqual(expect.arrayContaining(made))
    await net.destroy()
    expect(listOurNamespaces().filter((ns) => made.includes(ns))).toEqual([])
    // A namespace left by a process that is gone (a killed run): found by its pid and removed.
    const dead = spawnSync('true').pid!
    const stale = `mep-${dead}-1-left`
    expect(spawnSync('ip', ['netns', 'add', stale]).status).toBe(0)
    expect(reapStale()).toContain(stale)
    expect(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout).not.toContain(stale)
  })

  it('a SIGKILLed test process leaves nothing behind: its watchdog removes the namespaces and what runs in them', async () => {
    const script = [
      "const { Network } = await import('./test/support/netns.ts')",
      "const net = await Network.create(['x', 'y'])",
      "net.spawn('x', 'sleep', ['600'])",
      'console.log(JSON.stringify(net.namespaces()))',
    ].join(';')
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `${script}; setInterval(() => {}, 1000)`], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const made = await new Promise<string[]>((resolve, reject) => {
      child.stdout!.once('data', (d: Buffer) => resolve(JSON.parse(d.toString())))
      child.once('exit', (code) => reject(new Error(`child exited early (${code})`)))
    })
    expect(listOurNamespaces(child.pid)).toEqual(expect.arrayContaining(made))
    const sleeper = spawnSync('ip', ['netns', 'pids', made[1]], { encoding: 'utf8' }).stdout.trim()
    expect(sleeper).not.toBe('')
    child.kill('SIGKILL') // no exit hook runs
    const deadline = Date.now() + 15_000
    while (listOurNamespaces(child.pid).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
    expect(listOurNamespaces(child.pid)).toEqual([])
    // The process inside was killed too (gone, or a zombie waiting for its new parent to reap it).
    const state = () => (existsSync(`/proc/${sleeper}/stat`) ? readFileSync(`/proc/${sleeper}/stat`, 'utf8').split(') ')[1]?.[0] : 'gone')
    while (!['gone', 'Z'].includes(state()!) && Date.now() < deadline + 5000) await new Promise((r) => setTimeout(r, 100))
    expect(['gone', 'Z']).toContain(state())
  }, 60_000)

  it('without root, says what it needs instead of skipping', () => {
    // The check runs as `nobody`, who may not be able to read this checkout (a clone under a
    // private folder, as root's home is): it gets the check bundled into a world-readable
    // folder of its own, with nothing to resolve from the checkout's node_modules, and a copy
    // of this Node (CI's Node 22 lives in the checkout's node_modules/.cache).
    const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-nobody-'))
    try {
      chmodSync(dir, 0o755)
      const node = join(dir, 'node')
      copyFileSync(process.execPath, node)
      chmodSync(node, 0o755)
      const script = join(dir, 'require-netns.mjs')
      buildSync({
        stdin: { contents: "import { requireNetns } from './test/support/netns.ts'; requireNetns()", resolveDir: root, loader: 'ts' },
        bundle: true,
        platform: 'node',
        format: 'esm',
        outfile: script,
        logLevel: 'silent',
      })
      chmodSync(script, 0o644)
      const nobody = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', node, script], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, HOME: dir },
      })
      expect(nobody.status).not.toBe(0)
      expect(nobody.stderr).toContain('not running as root')
      expect(nobody.stderr).toContain('they fail rather than skip')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

/** The checks every scenario must pass; returns the report for scenario-specific ones. */
async function check(label: string, scenario: Scenario, duringCut?: (plan: Arrangement) => Promise<unknown>) {
  const report = await runScenario(lab, label, scenario, { duringCut })
  console.log(formatReport(report))
  expect(report.violations).toEqual([])
  // The victim learnt it lost the lock, and nobody else got it while it still believed it held it.
  expect(report.victimLost).toBe(true)
  expect(report.firstMajorityGrantMs).toBeGreaterThan(report.victimSignalMs!)
  expect(report.grantsWhilePartitioned).toBeGreaterThan(0)
  // Its stale writes: refused by etcd after healing, and by Postgres while cut off and after.
  expect(report.fencing.staleEtcdRejected).toBe(1)
  expect(report.fencing.latePgWrites).toBe(2)
  expect(report.fencing.latePgRejected).toBe(2)
  expect(report.fencing.pgApplied).toBeGreaterThan(0) // the holders' own writes (a refused one would be a violation)
  // Its claimed batch came back to the majority; nothing lost.
  expect(report.messages.lost).toBe(0)
  expect(report.messages.redelivered).toBeGreaterThanOrEqual(10)
  expect(report.stm.committed).toBeGreaterThan(0)
  return report
}

describe('partitions on a 3-member cluster', () => {
  it('1. the raft leader and its client cut off from both followers: a new leader, the old holder fenced out', async () => {
    const r = await check('p1-leader-isolated', leaderIsolated)
    expect(r.raft.leaderAfter).toBeDefined()
    expect(r.raft.leaderAfter).not.toBe(r.raft.leaderBefore)
  }, 120_000)

  it('2. a client cut off from every member: its signal fires before anyone else is granted; its late writes are refused', async () => {
    await check('p2-client-cut-off', clientCutOff)
  }, 120_000)

  it('3a. one-way: the leader can send but not receive', async () => {
    const r = await check('p3a-leader-send-only', leaderSendOnly)
    expect(r.raft.leaderAfter).toBeDefined()
  }, 120_000)

  it('3b. one-way: the leader can receive but not send', async () => {
    const r = await check('p3b-leader-receive-only', leaderReceiveOnly)
    expect(r.raft.leaderAfter).toBeDefined()
  }, 120_000)

  it('4. a minority member with a client attached: stale serializable reads never decide a validated STM commit', async () => {
    let minority = ''
    const r = await check('p4-minority-member', minorityMember, async (plan) => {
      minority = lab.etcd.members.find((m) => !plan.majority.includes(m))!
      return staleReadProbe(lab, minority, plan.majority, 'p4-minority-member/stale-probe')
    })
    const probe = (r as ScenarioReport & { probe: StaleProbe }).probe
    console.log(`[partitions] stale-read probe via ${minority}: ${JSON.stringify(probe)}`)
    // The cut-off member really serves stale data...
    expect(probe.fresh).toBe('5')
    expect(probe.stale).toBeUndefined()
    const run = (isolation: string) => probe.runs.find((x) => x.isolation === isolation)!
    // ...yet the snapshot levels read at a linearizable revision first, and commit on fresh data;
    expect(run('SerializableSnapshot')).toMatchObject({ committed: true, after: '6' })
    expect(run('SerializableSnapshot').reads.at(-1)).toBe('5')
    expect(run('Serializable')).toMatchObject({ committed: true, after: '7' })
    expect(run('Serializable').reads.at(-1)).toBe('6')
    // RepeatableReads reads member-locally, but its commit compares every read: the stale read never commits.
    expect(run('RepeatableReads')).toMatchObject({ committed: false, error: 'ConflictError', after: '7' })
    expect(run('RepeatableReads').reads).toEqual(['0', '0', '0'])
    // ReadCommitted checks nothing at commit (Go's definition): it DOES write from the stale read.
    expect(run('ReadCommitted')).toMatchObject({ committed: true, reads: ['0'], after: '1' })
  }, 120_000)
})

describe('serializable (member-local) reads in lib/', () => {
  it('are made by runSTM only: no lock, election, queue or barrier decides on one', () => {
    const users: string[] = []
    for (const file of readdirSync(`${root}lib`, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'))) {
      readFileSync(`${root}lib/${file}`, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/serializable\s*:\s*true/.test(line)) users.push(`${file}:${i + 1}`)
        })
    }
    // If this list grows, extend scenario 4's probe to the new reader before changing it.
    expect([...new Set(users.map((u) => u.split(':')[0]))]).toEqual(['stm/attempt.ts'])
  })
})
