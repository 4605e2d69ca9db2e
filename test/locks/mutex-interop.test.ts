import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { Mutex, Session } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

/**
 * Our Mutex and `etcdctl lock` (etcd 3.4.23) contend on the same keys: `<name>/<leaseHex>`.
 */

const etcd = useEtcd()
const children = new Set<ChildProcess>()

afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  children.clear()
})

/** etcdctl must be there: the interop tests fail loudly without it. */
function etcdctlEnv() {
  const found = spawnSync('sh', ['-c', 'command -v etcdctl'], { encoding: 'utf8' })
  if (found.status !== 0) throw new Error('etcdctl not found: apt-get install -y etcd-client')
  const env: Record<string, string | undefined> = { ...process.env, ETCDCTL_API: '3' }
  delete env.ETCDCTL_ENDPOINTS
  return env
}

/** A running etcdctl with its output so far. */
function etcdctl(...args: string[]) {
  const child = spawn('etcdctl', [`--endpoints=${etcd.cluster.endpoints.join(',')}`, ...args], {
    env: etcdctlEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  const out = { stdout: '', stderr: '' }
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out.stdout += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out.stderr += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, out, exited }
}

/** Polls until `test()` holds; fails (instead of hanging) after `ms`. */
async function until(what: string, test: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = performance.now() + ms
  while (!(await test())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

async function keysOf(name: string) {
  const res = await keyspace(etcd.client).range(`${name}/`, { prefix: true, sort: ['Create', 'Ascend'] })
  return res.kvs.map((kv) => kv.key)
}

describe('Mutex interop with etcdctl lock', () => {
  it('etcdctl lock waits while we hold; we wait while etcdctl holds; SIGINT releases', async () => {
    const name = uniqueName('ctl')
    const s = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(s, name)
    await ours.lock()

    const ctl = etcdctl('lock', name)
    await until('etcdctl to queue', async () => (await keysOf(name)).length === 2)
    await sleep(700)
    expect(ctl.out.stdout).toBe('') // still waiting behind us

    await ours.unlock()
    await until('etcdctl to print its key', () => ctl.out.stdout.includes('\n'))
    const ctlKey = ctl.out.stdout.split('\n')[0]
    expect(ctlKey).toMatch(new RegExp(`^${name}/[0-9a-f]+$`))
    expect(ctl.out.stdout).toBe(`${ctlKey}\n\n`) // etcdctl prints the key, then its empty value
    expect(await keysOf(name)).toEqual([ctlKey])

    // Now we wait behind etcdctl.
    let acquired = false
    const waiting = ours.lock().then(() => (acquired = true))
    await until('our waiter to queue', async () => (await keysOf(name)).length === 2)
    await sleep(700)
    expect(acquired).toBe(false)

    ctl.child.kill('SIGINT')
    expect(await ctl.exited).toBe(0)
    await waiting
    expect(ours.held).toBe(true)
    expect(await keysOf(name)).toEqual([ours.key])
    await ours.unlock()
    await s.close()
  })

  it('etcdctl lock L -- cmd runs the command only after we unlock, with ETCD_LOCK_KEY set', async () => {
    const name = uniqueName('ctl-cmd')
    const s = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(s, name)
    await ours.lock()
    const ctl = etcdctl('lock', name, '--', 'sh', '-c', 'echo $ETCD_LOCK_KEY')
    await until('etcdctl to queue', async () => (await keysOf(name)).length === 2)
    const ctlKey = (await keysOf(name))[1]
    await sleep(700)
    expect(ctl.out.stdout).toBe('')
    expect(ctl.child.exitCode).toBe(null)
    await ours.unlock()
    expect(await ctl.exited).toBe(0)
    expect(ctl.out.stdout).toBe(`${ctlKey}\n`)
    expect(await keysOf(name)).toEqual([]) // etcdctl unlocked after the command
    await s.close()
  })

  it("revoking etcdctl's lease unblocks our waiter", async () => {
    const name = uniqueName('ctl-revoke')
    const ctl = etcdctl('lock', name)
    await until('etcdctl to hold the lock', () => ctl.out.stdout.includes('\n'))
    const ctlKey = ctl.out.stdout.split('\n')[0]
    const s = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(s, name)
    let acquired = false
    const waiting = ours.lock().then(() => (acquired = true))
    await until('our waiter to queue', async () => (await keysOf(name)).length === 2)
    await sleep(500)
    expect(acquired).toBe(false)

    const revoke = etcdctl('lease', 'revoke', ctlKey.split('/').pop()!)
    expect(await revoke.exited).toBe(0)
    await waiting
    expect(ours.held).toBe(true)
    expect(await keysOf(name)).toEqual([ours.key])
    // etcdctl notices its session is gone and exits 1.
    expect(await ctl.exited).toBe(1)
    expect(ctl.out.stderr).toContain('session expired')
    await ours.unlock()
    await s.close()
  })

  it('one FIFO queue across both: we, then etcdctl, then our second waiter', async () => {
    const name = uniqueName('ctl-fifo')
    const [s1, s2] = await Promise.all([Session.create(etcd.client, { ttl: 10 }), Session.create(etcd.client, { ttl: 10 })])
    const first = new Mutex(s1, name)
    await first.lock()
    const ctl = etcdctl('lock', name)
    await until('etcdctl to queue', async () => (await keysOf(name)).length === 2)
    const second = new Mutex(s2, name)
    let acquired = false
    const waiting = second.lock().then(() => (acquired = true))
    await until('our second waiter to queue', async () => (await keysOf(name)).length === 3)

    await first.unlock()
    await until('etcdctl to get the lock', () => ctl.out.stdout.includes('\n'))
    await sleep(500)
    expect(acquired).toBe(false)
    ctl.child.kill('SIGINT')
    expect(await ctl.exited).toBe(0)
    await waiting
    expect(second.held).toBe(true)
    await second.unlock()
    await Promise.all([s1.close(), s2.close()])
  })

  it("etcdctl get shows our lock key in Go's layout with an empty value", async () => {
    const name = uniqueName('ctl-get')
    const s = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(s, name)
    await ours.lock()
    const get = etcdctl('get', '--prefix', `${name}/`)
    expect(await get.exited).toBe(0)
    expect(get.out.stdout).toBe(`${name}/${s.leaseHex}\n\n`)
    await ours.unlock()
    await s.close()
  })
})
