import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import { Barrier, DoubleBarrier, Election, LockedError, Mutex, Queue, Session, TooManyClientsError } from '../lib/index.js'
import { buildGoPeer as buildBenchPeer } from '../bench/util/gopeer.js'
import { buildGoPeer, goPeerDir, killGoPeers, startGoPeer } from './gopeer.js'
import { sleep, uniqueName, useEtcd } from './helpers.js'

/**
 * The Go interop program (interop/go): its helper scenarios against our primitives on one etcd
 * (Barrier and DoubleBarrier have no etcdctl counterpart, so only here do they meet Go), the JSON
 * the benchmark reads from its timing scenarios, and the errors its command line and build give.
 */

const etcd = useEtcd(1)
const run = promisify(execFile)
let bin: string

beforeAll(async () => {
  bin = await buildGoPeer()
}, 250_000)
afterEach(killGoPeers)

const go = (scenario: string, name: string, n = 0, args: string[] = []) =>
  startGoPeer(bin, etcd.cluster.endpoints[0], scenario, name, n, args)

/** Whether `p` settles within `ms` (it keeps running either way). */
async function settledWithin(p: Promise<unknown>, ms: number) {
  let settled = false
  p.then(
    () => (settled = true),
    () => (settled = true),
  )
  await sleep(ms)
  return settled
}

/** The ids of the leases etcd holds now. */
const leaseIds = async () => (await etcd.client.leaseClient.leaseLeases({})).leases.map((l) => String(l.ID)).sort()

/** Every key under `name/` or equal to `name`. */
const keysOf = async (name: string) => (await etcd.client.getAll().prefix(name).keys()).sort()

describe('Go TryLock and ErrSessionExpired (client/v3 3.5+) against our Mutex', () => {
  it('our Mutex holds: Go TryLock says busy and leaves no key; once we unlock, Go TryLock takes it', async () => {
    const name = uniqueName('gotry')
    const session = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(session, name)
    await ours.lock()
    const busy = go('trylock', name, 0)
    expect(await busy.exited).toBe(0)
    expect(busy.lines).toEqual(['busy'])
    expect(await keysOf(`${name}/`)).toEqual([`${name}/${session.leaseHex}`])
    await ours.unlock()
    const free = go('trylock', name, 200)
    expect(await free.saw(new RegExp(`^locked ${name}/[0-9a-f]+ \\d+$`))).toBe(true)
    expect(await free.exited).toBe(0)
    expect(free.lines.at(-1)).toBe('unlocked')
    await session.close()
  })

  it('Go holds: our tryLock fails with LockedError and leaves no key; after Go unlocks our tryLock takes it', async () => {
    const name = uniqueName('gotry2')
    const peer = go('hold-lock', name, 1500)
    expect(await peer.saw(new RegExp(`^locked ${name}/`))).toBe(true)
    const session = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(session, name)
    await expect(ours.tryLock()).rejects.toBeInstanceOf(LockedError)
    const left = await keysOf(`${name}/`)
    expect(left).toHaveLength(1)
    expect(left[0]).not.toBe(`${name}/${session.leaseHex}`)
    expect(await peer.exited).toBe(0)
    await ours.tryLock()
    expect(await keysOf(`${name}/`)).toEqual([`${name}/${session.leaseHex}`])
    await ours.unlock()
    await session.close()
  })

  it('a Go Lock whose lease is revoked while it waits behind ours returns ErrSessionExpired (3.4 reported the lock as taken)', async () => {
    const name = uniqueName('goexpire')
    const session = await Session.create(etcd.client, { ttl: 10 })
    const ours = new Mutex(session, name)
    await ours.lock()
    const peer = go('lock-wait', name, 0)
    expect(await peer.saw(new RegExp(`^waiting ${name}/[0-9a-f]+ [0-9a-f]+$`))).toBe(true)
    const leaseHex = peer.lines.find((l) => l.startsWith('waiting '))!.split(' ')[2]
    await etcd.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${leaseHex}`).toString() })
    // Go's Lock returns only once every older key is gone: release ours.
    await ours.unlock()
    expect(await peer.exited).toBe(0)
    expect(peer.lines.at(-1)).toBe('session-expired')
    expect(await keysOf(`${name}/`)).toEqual([])
    await session.close()
  })
})

describe('Go helpers against our primitives', () => {
  it('hold-lock (concurrency.Mutex) holds back our Mutex on the same name until Go unlocks', async () => {
    const name = uniqueName('gomutex')
    const peer = go('hold-lock', name, 800)
    expect(await peer.saw(new RegExp(`^locked ${name}/[0-9a-f]+ \\d+$`))).toBe(true)
    const session = await Session.create(etcd.client, { ttl: 10 })
    const locking = new Mutex(session, name).lock()
    expect(await settledWithin(locking, 300)).toBe(false)
    await locking
    expect(await peer.exited).toBe(0)
    expect(peer.lines.at(-1)).toBe('unlocked')
    await session.close()
  })

  it('campaign (concurrency.Election) leads with its value; our campaign wins once Go resigns', async () => {
    const name = uniqueName('goelect')
    const peer = go('campaign', name, 800, ['go-value'])
    expect(await peer.saw(new RegExp(`^leader ${name}/[0-9a-f]+$`))).toBe(true)
    const session = await Session.create(etcd.client, { ttl: 10 })
    const election = new Election(session, name)
    expect((await election.leader()).value).toBe('go-value')
    const campaigning = election.campaign('ts-value')
    expect(await settledWithin(campaigning, 300)).toBe(false)
    await campaigning
    expect(await peer.exited).toBe(0)
    expect(peer.lines.at(-1)).toBe('resigned')
    expect((await election.leader()).value).toBe('ts-value')
    await election.resign()
    await session.close()
  })

  it('barrier-hold / barrier-wait (recipe.Barrier) and our Barrier wait on each other', async () => {
    const name = uniqueName('gobarrier')
    const holder = go('barrier-hold', name, 800)
    expect(await holder.saw('held')).toBe(true)
    const waiting = new Barrier(etcd.client, name).wait()
    expect(await settledWithin(waiting, 300)).toBe(false)
    await waiting
    expect(await holder.exited).toBe(0)
    expect(holder.lines).toEqual(['held', 'released'])

    const ours = new Barrier(etcd.client, name)
    await ours.hold()
    const waiter = go('barrier-wait', name)
    await sleep(500)
    expect(waiter.lines).toEqual([])
    await ours.release()
    expect(await waiter.saw('passed')).toBe(true)
    expect(await waiter.exited).toBe(0)
    expect(await keysOf(name)).toEqual([])
  })

  it("Go's Barrier.Wait after its fixes (3.6+): a sibling key <name>0 does not block it, and writes after the hold do not hang it", async () => {
    const name = uniqueName('gobarrierfix')
    // 3.4's Wait read the prefix, so <name>0 alone looked like a held barrier and it waited forever.
    await etcd.client.put(`${name}0`).value('unrelated')
    const free = go('barrier-wait', name)
    expect(await free.saw('passed', 5_000)).toBe(true)
    expect(await free.exited).toBe(0)
    // 3.4's Wait watched from its read's revision for a PUT, then a DELETE: any write between
    // the hold and its read moved that revision past the hold's PUT, so it hung on the release.
    const ours = new Barrier(etcd.client, name)
    await ours.hold()
    for (let i = 0; i < 5; i++) await etcd.client.put(`${name}-other`).value(String(i))
    const waiter = go('barrier-wait', name)
    await sleep(500)
    expect(waiter.lines).toEqual([])
    await ours.release()
    expect(await waiter.saw('passed', 5_000)).toBe(true)
    expect(await waiter.exited).toBe(0)
    await etcd.client.delete().key(`${name}0`)
    await etcd.client.delete().key(`${name}-other`)
  })

  it('double-barrier (recipe.DoubleBarrier) and our DoubleBarrier of 2 enter together and leave together', async () => {
    const name = uniqueName('godouble')
    // Flags may follow -n: Go's flag parsing stops only at the first positional argument.
    const goMember = go('double-barrier', name, 0, ['-c', '2'])
    await sleep(300)
    expect(goMember.lines).toEqual([])
    const session = await Session.create(etcd.client, { ttl: 10 })
    const ours = new DoubleBarrier(session, name, 2)
    await ours.enter()
    expect(await goMember.saw('entered')).toBe(true)
    await ours.leave()
    expect(await goMember.exited).toBe(0)
    expect(goMember.lines).toEqual(['entered', 'left'])
    expect(await keysOf(name)).toEqual([])
    await session.close()
  })

  it('the redesigned Go DoubleBarrier (3.5.6+): a Go participant too many gets ErrTooManyClients and leaves no key; so does one of ours', async () => {
    const name = uniqueName('gotoomany')
    const session = await Session.create(etcd.client, { ttl: 10 })
    const ours = new DoubleBarrier(session, name, 2)
    const entering = ours.enter()
    // The Go member holds for 1 s once in, so the barrier stays full while the extras try.
    const goMember = go('double-barrier', name, 1000, ['-c', '2'])
    await entering
    expect(await goMember.saw('entered')).toBe(true)
    const full = await keysOf(`${name}/waiters/`)
    expect(full).toHaveLength(2)
    const extraGo = go('double-barrier', name, 0, ['-c', '2'])
    expect(await extraGo.exited).toBe(0)
    expect(extraGo.lines).toEqual(['too-many'])
    const other = await Session.create(etcd.client, { ttl: 10 })
    await expect(new DoubleBarrier(other, name, 2).enter()).rejects.toBeInstanceOf(TooManyClientsError)
    expect(await keysOf(`${name}/waiters/`)).toEqual(full)
    await ours.leave()
    expect(await goMember.exited).toBe(0)
    expect(goMember.lines).toEqual(['entered', 'left'])
    expect(await keysOf(name)).toEqual([])
    await other.close()
    await session.close()
  })
})

describe('a Go Dequeue of messages we received or grouped leaves none of our keys behind', () => {
  /** Every key in etcd that mentions `name`. */
  const mentioning = async (name: string) => (await etcd.client.getAll().keys()).filter((k) => k.includes(name)).sort()

  /**
   * Puts queue `name` in every state that has bookkeeping keys beside the item, then lets a Go
   * consumer take every item: one claimed (marker on a lease, receive counter), one received and
   * given back (counter), one delayed and moved in (metadata: its id), a group's current message
   * (metadata, the group's head) with a second one waiting behind it.
   */
  async function leftBehind(name: string) {
    const q = new Queue(etcd.client, name)
    await q.enqueue('claimed')
    await q.enqueue('returned')
    await q.enqueue('delayed', { delayMs: 1 })
    await sleep(1600) // its timer lease (1 s) has expired
    // One receive moves the delayed one in and claims all three; two are given back at once.
    const [claimed, ...back] = await q.receive({ max: 3, visibilityTimeout: 60, wait: false })
    expect([claimed, ...back].map((m) => m.value)).toEqual(['claimed', 'returned', 'delayed'])
    for (const m of back) await q.nack(m, { delay: 0 })
    await q.enqueue('head of g', { group: 'g' })
    await q.enqueue('next of g', { group: 'g' })
    const peer = go('dequeue', name, 4)
    expect(await peer.exited).toBe(0)
    expect(peer.lines.sort()).toEqual(['claimed', 'delayed', 'head of g', 'returned'])
    const left = await mentioning(name)
    // What a Go Dequeue leaves: the claim marker, receive counters, metadata and the group head.
    expect(left.filter((k) => k.startsWith('__claims/'))).toHaveLength(1)
    expect(left.filter((k) => k.startsWith('__receives/'))).toHaveLength(3)
    expect(left.filter((k) => k.startsWith('__meta/'))).toHaveLength(2)
    expect(left.filter((k) => k.startsWith('__group-heads/'))).toEqual([`__group-heads/${name}/g`])
    return { q, claimed }
  }

  it('a receive sweeps them as it goes: the group moves on, and once its last message is acked nothing of ours is left', async () => {
    const name = uniqueName('gosweep')
    const { q, claimed } = await leftBehind(name)
    // A consumer that finds nothing to receive sweeps a step (and passes the headless group on).
    const consumer = new Queue(etcd.client, name)
    expect(await consumer.receive({ wait: false })).toEqual([])
    const [next] = await consumer.receive({ wait: false })
    expect(next).toMatchObject({ value: 'next of g', group: 'g' })
    await consumer.ack(next)
    await expect(q.ack(claimed)).rejects.toMatchObject({ reason: 'gone' })
    expect(await mentioning(name)).toEqual([])
  })

  it('middy-etcd queue sweep removes them at once and says what went', async () => {
    const name = uniqueName('goclisweep')
    await leftBehind(name)
    const root = fileURLToPath(new URL('..', import.meta.url))
    const { stdout } = await run(process.execPath, ['--import', 'tsx', join(root, 'cli', 'main.ts'), 'queue', 'sweep', name, '--json'], {
      cwd: root,
      env: { ...process.env, ETCD_NAMESPACE: '', ETCD_CALL_TIMEOUT_MS: '', ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') },
    })
    expect(JSON.parse(stdout)).toEqual({ queue: name, counters: 3, metadata: 2, markers: 1, groups: 1 })
    // The group's next message is its head now: its item, metadata and head are all that is left.
    const left = await mentioning(name)
    expect(left.filter((k) => k.startsWith(`${name}/`))).toHaveLength(1)
    expect(left.filter((k) => !k.startsWith(`${name}/`))).toEqual([
      `__group-heads/${name}/g`,
      `__meta/${left.find((k) => k.startsWith(`${name}/`))}`,
    ])
    const q = new Queue(etcd.client, name)
    const [m] = await q.receive({ wait: false })
    await q.ack(m)
    expect(await mentioning(name)).toEqual([])
  }, 60_000)
})

describe('timing scenarios, run the way the benchmark runs them (bench/util/gopeer.ts)', () => {
  it('print one JSON line whose correctness counts the benchmark checks', async () => {
    const peer = await buildBenchPeer(etcd.cluster.endpoints, () => {})
    expect(peer.unavailable).toBeNull()
    const prefix = uniqueName('gobench')
    const leasesBefore = await leaseIds()

    const put = await peer.run(['-scenario', 'put', '-n', '20', '-prefix', prefix])
    expect(put).toMatchObject({ scenario: 'put', ops: 20 })
    expect(put.p50_ms).toBeGreaterThan(0)
    expect(put.p99_ms).toBeGreaterThanOrEqual(put.p50_ms!)
    expect(put.ops_per_s).toBeCloseTo(put.ops / put.seconds, 6)

    const contended = await peer.run(['-scenario', 'lock-contended', '-c', '3', '-n', '4', '-prefix', prefix])
    expect(contended).toMatchObject({ scenario: 'lock-contended', ops: 12, extra: { counter: 12, expected: 12 } })

    const queue = await peer.run(['-scenario', 'queue', '-c', '2', '-n', '5', '-prefix', prefix])
    expect(queue).toMatchObject({ scenario: 'queue', ops: 10, extra: { distinct: 10, duplicates: 0 } })

    const stm = await peer.run(['-scenario', 'stm', '-c', '2', '-n', '5', '-prefix', prefix])
    expect(stm).toMatchObject({ scenario: 'stm', ops: 10, extra: { sum: 500 } })
    expect(stm.extra!.applies).toBeGreaterThanOrEqual(10)

    const failover = await peer.run(['-scenario', 'election-failover', '-n', '2', '-prefix', prefix])
    expect(failover).toMatchObject({ scenario: 'election-failover', ops: 2, seconds: 0 })
    expect(failover.p50_ms).toBeGreaterThan(0)

    for (const scenario of ['lock-invocation', 'lock-uncontended']) {
      expect(await peer.run(['-scenario', scenario, '-n', '5', '-prefix', prefix])).toMatchObject({ scenario, ops: 5 })
    }
    // Every session the scenarios opened was closed: no lease is left behind.
    expect(await leaseIds()).toEqual(leasesBefore)
  }, 60_000)
})

describe('bad command lines and a missing toolchain fail loudly', () => {
  it('an unknown scenario exits 2 and lists the known ones', async () => {
    const err = await run(bin, ['-endpoints', etcd.cluster.endpoints[0], '-scenario', 'no-such']).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown -scenario "no-such": use one of .*lock-contended/) })
  })

  it('penqueue refuses an odd argument list and a priority outside 0..65535, enqueuing nothing', async () => {
    const name = uniqueName('gopq')
    const odd = go('penqueue', name, 0, ['a', '1', 'b'])
    expect(await odd.exited).toBe(1)
    expect(odd.stderr()).toMatch(/value\/priority pairs, got 3 arguments/)
    const big = go('penqueue', name, 0, ['a', '70000'])
    expect(await big.exited).toBe(1)
    expect(big.stderr()).toMatch(/priority "70000" of "a" is not an integer in 0\.\.65535/)
    expect(await keysOf(name)).toEqual([])
  })

  it('build.sh without Go on PATH says which Go to install', async () => {
    const err = await run('/bin/bash', [join(goPeerDir(), 'build.sh'), '/tmp/never-built'], { env: { PATH: '/nonexistent' } }).catch(
      (e: unknown) => e,
    )
    expect(err).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('the Go toolchain (go) is not on PATH; install Go 1.26 or newer'),
    })
  })
})
