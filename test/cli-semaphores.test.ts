/**
 * `middy-etcd semaphores` (issue 14): semaphores and rate limiters found by their config key,
 * with the permits in use and the calls queued, as an operator sees them.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { RateLimiter, Semaphore, Session } from '../lib/index.js'
import { sleep, uniqueName, useEtcd } from './helpers.js'

const etcd = useEtcd()
const root = fileURLToPath(new URL('..', import.meta.url))

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
    cwd: root,
    env: { ...process.env, ETCD_NAMESPACE: '', ETCD_CALL_TIMEOUT_MS: '', ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000) // a hung CLI fails the test
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(killer)
      resolve({ code, stdout, stderr })
    })
  })
}

describe('middy-etcd semaphores', () => {
  it('lists holders (slot, fence, lease TTL) and waiters in queue order, and rate limiter tokens', async () => {
    const prefix = uniqueName('cli-sem')
    const name = `${prefix}/db`
    const s1 = await Session.create(etcd.client, { ttl: 7 })
    const s2 = await Session.create(etcd.client, { ttl: 9 })
    const [a, b] = [new Semaphore(s1, name, 2), new Semaphore(s2, name, 2)]
    await a.acquire()
    await b.acquire()
    const waiters = [new Semaphore(s1, name, 2), new Semaphore(s2, name, 2)]
    const waiting = [waiters[0].acquire()]
    while ((await etcd.client.getAll().prefix(`${name}/waiters/`).keys()).length < 1) await sleep(20)
    waiting.push(waiters[1].acquire())
    while ((await etcd.client.getAll().prefix(`${name}/waiters/`).keys()).length < 2) await sleep(20)
    const limiter = new RateLimiter(etcd.client, `${prefix}/api`, { rate: 1, per: 60_000, burst: 1 })
    await limiter.acquire()

    const run = await cli(['semaphores', prefix, '--json'])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const report = JSON.parse(run.stdout)
    const [api, db] = report.semaphores
    expect(db).toMatchObject({ name, kind: 'semaphore', settings: 'permits=2', permits: 2 })
    expect(db.holders.map((h: any) => [h.key, h.revision, h.lease, h.grantedTtl])).toEqual(
      [a, b].sort((x, y) => (x.key < y.key ? -1 : 1)).map((h) => [h.key, Number(h.fence), h.session.leaseHex, h.session.ttl]),
    )
    expect(db.waiters.map((w: any) => [w.position, w.lease])).toEqual([
      [1, s1.leaseHex],
      [2, s2.leaseHex],
    ])
    expect(api).toMatchObject({ name: `${prefix}/api`, kind: 'rate limiter', settings: 'rate=1 per=60000 burst=1', permits: 2 })
    expect(api.holders).toHaveLength(1)

    const text = await cli(['semaphores', prefix])
    expect(text.code).toBe(0)
    const lines = text.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^NAME\s+KIND\s+SETTINGS\s+ROLE\s+PLACE\s+REV\s+KEY\s+LEASE\s+TTL$/)
    expect(lines.filter((l) => l.startsWith(name) && /\bholder\b/.test(l))).toHaveLength(2)
    expect(lines.some((l) => /\bwaiter\s+#1\b/.test(l) && l.includes(s1.leaseHex))).toBe(true)
    expect(lines.some((l) => l.startsWith(name) && /in use\s+2\/2/.test(l))).toBe(true)

    await a.release()
    await b.release()
    await Promise.all(waiting)
    for (const w of waiters) await w.release()
    await Promise.all([s1.close(), s2.close(), limiter.close()])
    expect((await cli(['semaphores', uniqueName('none')])).stdout).toMatch(/^no semaphores or rate limiters under/)
  })

  it('is in the help, and rejects extra arguments with exit 2', async () => {
    const help = await cli(['--help'])
    expect(help.stdout).toMatch(/semaphores \[prefix\]/)
    const bad = await cli(['semaphores', 'a', 'b'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/unexpected argument "b"/)
  })
})
