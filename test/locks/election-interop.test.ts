import { spawn, type ChildProcess } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { Election, Session } from '../../lib/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

// Interop with etcdctl 3.4 (`etcdctl elect`): same names, same keys, one queue.
const etcd = useEtcd(1)
const spawned: ChildProcess[] = []

afterEach(() => {
  for (const p of spawned.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
})

/** Runs `etcdctl <args>` against the test cluster, collecting stdout lines. */
function etcdctl(...args: string[]) {
  const proc = spawn('etcdctl', ['--endpoints', etcd.cluster.endpoints.join(','), ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  spawned.push(proc)
  const lines: string[] = []
  let partial = ''
  let stderr = ''
  proc.stdout!.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split('\n')
    partial = parts.pop()!
    lines.push(...parts)
  })
  proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<number | null>((resolve, reject) => {
    proc.on('error', (err) => reject(new Error(`cannot run etcdctl (install etcd-client): ${err.message}`)))
    proc.on('exit', (code) => resolve(code))
  })
  exited.catch(() => {})
  return {
    proc,
    lines,
    exited,
    stderr: () => stderr,
    /** Waits until at least `n` lines were printed (fails after a generous 10 s). */
    async waitLines(n: number) {
      for (let i = 0; i < 200 && lines.length < n; i++) {
        if (proc.exitCode !== null) break
        await sleep(50)
      }
      if (lines.length < n) throw new Error(`etcdctl ${args.join(' ')} printed ${JSON.stringify(lines)}; stderr ${JSON.stringify(stderr)}`)
      return lines.slice(0, n)
    },
  }
}

describe('Election interop with etcdctl elect', () => {
  it('etcdctl elect leads: leader() sees its key and proposal; our campaign waits until it is interrupted', async () => {
    const name = uniqueName('interop-elect')
    const ctl = etcdctl('elect', name, 'p1')
    const [keyLine, valueLine] = await ctl.waitLines(2)
    expect(keyLine).toMatch(new RegExp(`^${name}/[0-9a-f]+$`))
    expect(valueLine).toBe('p1')

    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    expect(await e.leader()).toMatchObject({ key: keyLine, value: 'p1' })
    // The key carries etcdctl's lease, whose hex is the key's last segment.
    const stored = await etcd.client.kv.range({ key: Buffer.from(keyLine) })
    expect(BigInt(stored.kvs[0].lease).toString(16)).toBe(keyLine.split('/').pop())

    const campaign = e.campaign('ts')
    let elected = false
    campaign.then(
      () => (elected = true),
      () => {},
    )
    await sleep(500)
    expect(elected).toBe(false)
    ctl.proc.kill('SIGINT')
    expect(await ctl.exited).toBe(0)
    await campaign
    expect(await e.leader()).toMatchObject({ key: `${name}/${session.leaseHex}`, value: 'ts' })
    await e.resign()
    await session.close()
  })

  it('etcdctl elect -l observes our campaign and proclamations, then the next leader', async () => {
    const name = uniqueName('interop-observe')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    await e.campaign('a')
    const listener = etcdctl('elect', '-l', name)
    const myKey = `${name}/${session.leaseHex}`
    expect(await listener.waitLines(2)).toEqual([myKey, 'a'])
    await e.proclaim('b')
    expect(await listener.waitLines(4)).toEqual([myKey, 'a', myKey, 'b'])

    await e.resign()
    const p2 = etcdctl('elect', name, 'p2')
    const [p2Key] = await p2.waitLines(2)
    expect((await listener.waitLines(6)).slice(4)).toEqual([p2Key, 'p2'])
    p2.proc.kill('SIGINT')
    expect(await p2.exited).toBe(0)
    listener.proc.kill('SIGINT')
    expect(await listener.exited).toBe(0)
    await session.close()
  })

  it('our observe follows an etcdctl leader, and revoking its lease unblocks our campaign', async () => {
    const name = uniqueName('interop-revoke')
    const ctl = etcdctl('elect', name, 'p1')
    const [keyLine] = await ctl.waitLines(2)
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    const stop = new AbortController()
    const iter = e.observe({ signal: stop.signal })[Symbol.asyncIterator]()
    expect((await iter.next()).value).toMatchObject({ key: keyLine, value: 'p1' })

    const campaign = e.campaign('ts')
    await sleep(200)
    const revoke = etcdctl('lease', 'revoke', keyLine.split('/').pop()!)
    expect(await revoke.exited).toBe(0)
    await campaign
    expect((await iter.next()).value).toMatchObject({ key: `${name}/${session.leaseHex}`, value: 'ts' })
    stop.abort()
    expect((await iter.next()).done).toBe(true)
    ctl.proc.kill('SIGINT')
    await ctl.exited
    await e.resign()
    await session.close()
  })
})
