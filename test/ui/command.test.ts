// `middy-etcd ui` as an operator runs it: from source, against the test etcd; it prints its
// address on the first line, serves the page and its snapshot, and stops on Ctrl-C with exit 0.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { until, useEtcd } from '../helpers.js'

const etcd = useEtcd(1)
const root = fileURLToPath(new URL('../..', import.meta.url))

function ui(args: string[]) {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(root, 'cli', 'main.ts'), 'ui', ...args], {
    env: { ...process.env, ETCD_NAMESPACE: '', ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') },
  })
  const out = { stdout: '', stderr: '' }
  child.stdout.on('data', (d) => (out.stdout += d))
  child.stderr.on('data', (d) => (out.stderr += d))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  void exited.then(() => clearTimeout(killer))
  return { child, out, exited }
}

describe('middy-etcd ui', () => {
  it('prints its 127.0.0.1 address, serves the page and a snapshot, and stops on SIGINT', async () => {
    const run = ui([])
    const line = await until('the address line', 20_000, () => /^middy-etcd ui: (http:\/\/127\.0\.0\.1:\d+\/)\n/.exec(run.out.stdout))
    const url = line![1]
    const page = await fetch(url)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'")
    expect(await (await fetch(`${url}app.js`)).text()).toContain('EventSource')
    const snapshot = await until(
      'a snapshot',
      10_000,
      async () => (await (await fetch(`${url}api/snapshot`)).json()) as { actions: boolean } | null,
    )
    expect(snapshot!.actions).toBe(false)
    run.child.kill('SIGINT')
    expect(await run.exited).toBe(0)
    expect(run.out.stdout).toContain('middy-etcd ui: stopped')
  })

  it('on another host generates a token and prints it in the address; refuses a short --token', async () => {
    const run = ui(['--host', '0.0.0.0', '--allow-actions'])
    const line = await until('the address line', 20_000, () =>
      /^middy-etcd ui: http:\/\/0\.0\.0\.0:(\d+)\/\?token=([\w-]+) \(token generated/.exec(run.out.stdout),
    )
    const base = `http://127.0.0.1:${line![1]}/`
    expect((await fetch(base)).status).toBe(401)
    const withToken = await fetch(`${base}?token=${line![2]}`)
    expect(withToken.status).toBe(200)
    expect(withToken.headers.get('set-cookie')).toMatch(/HttpOnly; SameSite=Strict/)
    run.child.kill('SIGINT')
    expect(await run.exited).toBe(0)

    const bad = ui(['--token', 'short'])
    expect(await bad.exited).toBe(2)
    expect(bad.out.stderr).toContain('--token must be at least 8 characters')
  })
})
