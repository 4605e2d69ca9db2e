import { describe, expect, it } from 'vitest'
import {
  createClient,
  Election,
  InvalidArgumentError,
  NoLeaderError,
  NotLeaderError,
  Session,
  SessionExpiredError,
  type EtcdClient,
  type Leader,
} from '../../lib/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

// Go runs most election scenarios on 1 node and some on 3; here all run on a 3-node cluster,
// with sessions spread over clients pinned to different members where Go does so.
const etcd = useEtcd(3)

/** One client per member. */
function memberClients(): EtcdClient[] {
  return etcd.cluster.endpoints.map((e) => etcd.newClient([e]))
}

/** A tiny unbounded channel for coordinating concurrent tasks. */
function channel<T>() {
  const items: T[] = []
  const waiters: ((v: T) => void)[] = []
  return {
    send(v: T) {
      const w = waiters.shift()
      if (w) w(v)
      else items.push(v)
    },
    recv(): Promise<T> {
      if (items.length > 0) return Promise.resolve(items.shift()!)
      return new Promise((resolve) => waiters.push(resolve))
    },
  }
}

/** The first value of an observe stream (ends the stream). */
async function first(it: AsyncIterable<Leader>): Promise<Leader> {
  for await (const v of it) return v
  throw new Error('observe ended without a value')
}

/** Pulls values from an observe iterator one at a time. */
function puller(it: AsyncIterable<Leader>) {
  const iter = it[Symbol.asyncIterator]()
  return async () => {
    const r = await iter.next()
    if (r.done) throw new Error('observe ended')
    return r.value
  }
}

/** Polls until `cond` holds (bounded: fails the test after 5 s). */
async function until(cond: () => boolean) {
  for (let i = 0; i < 250 && !cond(); i++) await sleep(20)
  expect(cond()).toBe(true)
}

async function keyExists(client: EtcdClient, key: string) {
  return (await client.get(key).string()) !== null
}

describe('Election (Go v3_election_test.go)', () => {
  it('TestElectionWait: followers on fresh sessions observe each of 3 leaders in turn', async () => {
    const name = uniqueName('elect-wait')
    const clients = memberClients()
    const leaders = 3
    const followers = 3
    const electedc = channel<string>()
    const nextc = Array.from({ length: followers }, () => channel<void>())
    let leading = 0
    let maxLeading = 0

    const followerTasks = nextc.map(async (next, i) => {
      for (let j = 0; j < leaders; j++) {
        const session = await Session.create(clients[i], { ttl: 10 })
        const value = await first(new Election(session, name).observe())
        electedc.send(value.value)
        await next.recv()
        await session.close()
      }
    })
    const leaderTasks = Array.from({ length: leaders }, async (_, i) => {
      const session = await Session.create(clients[i], { ttl: 10 })
      const e = new Election(session, name)
      const ev = `electval-${i}-${process.hrtime.bigint()}`
      await e.campaign(ev)
      maxLeading = Math.max(maxLeading, ++leading)
      const acks: string[] = []
      for (let j = 0; j < followers; j++) acks.push(await electedc.recv())
      expect(acks).toEqual([ev, ev, ev])
      leading--
      await e.resign()
      for (const next of nextc) next.send()
      await session.close()
    })
    await Promise.all([...leaderTasks, ...followerTasks])
    expect(maxLeading).toBe(1)
  })

  it('TestElectionFailover: closing the leader session elects the waiting candidate', async () => {
    const name = uniqueName('elect-failover')
    const clients = memberClients()
    const ss = await Promise.all(clients.map((c) => Session.create(c, { ttl: 10 })))
    const e = new Election(ss[0], name)
    await e.campaign('foo')
    const watcher = new AbortController()
    const next = puller(new Election(ss[2], name).observe({ signal: watcher.signal }))
    expect((await next()).value).toBe('foo')
    expect((await first(e.observe())).value).toBe('foo')

    const ee = new Election(ss[1], name)
    const elected = ee.campaign('bar')
    await ss[0].close() // leader failover
    expect((await first(new Election(ss[2], name).observe())).value).toBe('bar')
    await elected
    expect(ee.leading).toBe(true)
    // The long-running observer saw the change too.
    const seen = await next()
    expect(seen.value).toBe('bar')
    expect(seen.key).toBe(`${name}/${ss[1].leaseHex}`)
    watcher.abort()
    await ss[1].close()
    await ss[2].close()
  })

  it('TestElectionSessionRecampaign: two objects on one session share the key and re-campaign proclaims', async () => {
    const name = uniqueName('elect-recampaign')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    await e.campaign('abc')
    const e2 = new Election(session, name)
    await e2.campaign('def')
    expect(e2.key).toBe(e.key)
    expect(e2.rev).toBe(e.rev)
    const seen = await first(e.observe())
    expect(seen.value).toBe('def')
    expect(seen.version).toBe(2n)
    // Re-campaigning on the same object is a proclaim too.
    await e2.campaign('ghi')
    expect((await e.leader()).value).toBe('ghi')
    await session.close()
  })

  it('TestElectionOnPrefixOfExistingKey: a key extending the name does not block the campaign', async () => {
    const name = uniqueName('elect-prefix')
    await etcd.client.put(`${name}a`).value('value')
    const s = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(s, name)
    await e.campaign('abc', { signal: AbortSignal.timeout(5000) })
    expect((await e.leader()).value).toBe('abc')
    await s.close()
  })

  it('TestElectionOnSessionRestart: a new session adopting the lease keeps the leadership', async () => {
    const name = uniqueName('elect-restart')
    const session = await Session.create(etcd.client, { ttl: 10 })
    const e = new Election(session, name)
    await e.campaign('abc')

    const waitSession = await Session.create(etcd.client, { ttl: 10 })
    const waiterAbort = new AbortController()
    const waiter = new Election(waitSession, name)
    const waiting = waiter.campaign('123', { signal: waiterAbort.signal })
    waiting.catch(() => {})

    // Simulate a restarted process: a new client adopts the old lease.
    const restarted = await Session.create(etcd.newClient(), { ttl: 10, leaseId: session.leaseId })
    const ne = new Election(restarted, name)
    await ne.campaign('def')
    expect(ne.key).toBe(e.key)
    expect(ne.rev).toBe(e.rev)
    expect((await first(ne.observe({ signal: AbortSignal.timeout(5000) }))).value).toBe('def')

    waiterAbort.abort(new Error('test over'))
    await expect(waiting).rejects.toThrow('test over')
    expect(await keyExists(etcd.client, `${name}/${waitSession.leaseHex}`)).toBe(false)
    session.orphan()
    await restarted.close()
    await waitSession.close()
  })

  it('TestElectionObserveCompacted: observe works when the leader key mod revision is compacted', async () => {
    const name = uniqueName('elect-compact')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    await e.campaign('abc')
    const put = await etcd.client.put(uniqueName('foo')).value('bar').exec()
    await etcd.client.kv.compact({ revision: put.header.revision, physical: true })
    expect((await first(e.observe())).value).toBe('abc')
    await session.close()
  })

  it('observe restarts its watch when compaction overtakes a slow consumer', async () => {
    const name = uniqueName('elect-compact-slow')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    await e.campaign('abc')
    const stop = new AbortController()
    const next = puller(e.observe({ signal: stop.signal }))
    expect((await next()).value).toBe('abc')
    // While the consumer holds 'abc', history it has not read yet is compacted away.
    await e.proclaim('def')
    await e.proclaim('ghi')
    const put = await etcd.client.put(uniqueName('foo')).value('bar').exec()
    await etcd.client.kv.compact({ revision: put.header.revision, physical: true })
    const after = await next()
    expect(after.value).toBe('ghi') // 'def' is gone with the compacted history; the latest is not
    stop.abort()
    await session.close()
  })

  it('TestElectionObserveFreshResponsesOnProclaim: each proclaim is a fresh emit with a new version', async () => {
    const name = uniqueName('elect-fresh')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    await e.campaign('abc')
    const stop = new AbortController()
    const next = puller(e.observe({ signal: stop.signal }))
    const got = [await next()]
    await e.proclaim('def')
    await e.proclaim('ghi')
    got.push(await next(), await next())
    expect(got.map((g) => g.value)).toEqual(['abc', 'def', 'ghi'])
    expect(got.map((g) => g.version)).toEqual([1n, 2n, 3n])
    expect(got[0].modRevision < got[1].modRevision && got[1].modRevision < got[2].modRevision).toBe(true)
    expect(got.every((g) => g.rev === e.rev && g.key === e.key)).toBe(true)
    expect(new Set(got).size).toBe(3)
    got[0].value = 'mutated'
    expect(got[1].value).toBe('def')
    stop.abort()
    await session.close()
  })

  it('TestResumeElection: a resumed election can resign, and the observer sees the next leader', async () => {
    const name = uniqueName('resume-election')
    const session = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(session, name)
    await e.campaign('candidate1')
    const leader = await e.leader()
    const resumed = Election.resume(session, name, leader.key, leader.rev)
    expect(resumed.key).toBe(e.key)
    expect(resumed.leading).toBe(true)

    const stop = new AbortController()
    const next = puller(resumed.observe({ signal: stop.signal }))
    expect((await next()).value).toBe('candidate1')
    await etcd.client.put(uniqueName('foo')).value('bar') // unrelated key: not reported
    await resumed.proclaim('still-me')
    await resumed.resign()
    expect(resumed.key).toBe('')
    const e2 = new Election(session, name)
    await e2.campaign('candidate2')
    expect((await next()).value).toBe('still-me')
    const v = await next()
    expect(v).toMatchObject({ value: 'candidate2', key: e2.key, rev: e2.rev, version: 1n })
    expect(v.key.startsWith(`${name}/`)).toBe(true)
    expect(v.rev > leader.rev).toBe(true)
    stop.abort()
    expect(() => Election.resume(session, name, `${name}/ffff`, 1n)).toThrow(InvalidArgumentError)
    expect(() => Election.resume(session, name, leader.key, 0n)).toThrow(InvalidArgumentError)
    await session.close()
  })

  it('ExampleElection_Campaign: e2 wins first, resigns, then e1 leads', async () => {
    const name = uniqueName('my-election')
    const [c1, c2] = memberClients()
    const s1 = await Session.create(c1, { ttl: 5 })
    const s2 = await Session.create(c2, { ttl: 5 })
    const e1 = new Election(s1, name)
    const e2 = new Election(s2, name)
    const stop = new AbortController()
    const next = puller(new Election(s1, name).observe({ signal: stop.signal }))
    await e2.campaign('e2')
    const e1Elected = e1.campaign('e1')
    expect((await next()).value).toBe('e2')
    await sleep(300)
    expect(e1.leading).toBe(false)
    await e2.resign()
    await e1Elected
    expect((await next()).value).toBe('e1')
    expect(e1.leading).toBe(true)
    stop.abort()
    await s1.close()
    await s2.close()
  })
})

describe('Election: beyond Go', () => {
  it('campaign fails with SessionExpiredError when its own session is closed while waiting', async () => {
    const name = uniqueName('elect-expired')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    await new Election(s1, name).campaign('leader')
    const e2 = new Election(s2, name)
    const waiting = e2.campaign('waiter')
    waiting.catch(() => {})
    await sleep(200)
    await s2.close()
    await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError)
    expect(e2.key).toBe('')
    await expect(e2.proclaim('x')).rejects.toBeInstanceOf(NotLeaderError)
    await s1.close()
  })

  it('campaign fails with SessionExpiredError at once when its lease is revoked elsewhere, before the leader leaves', async () => {
    const name = uniqueName('elect-revoked')
    const s1 = await Session.create(etcd.client, { ttl: 10 })
    const other = etcd.newClient()
    const s2 = await Session.create(other, { ttl: 10 })
    const leader = new Election(s1, name)
    await leader.campaign('leader')
    const waiting = new Election(s2, name).campaign('waiter')
    waiting.catch(() => {})
    await sleep(200)
    await etcd.client.leaseClient.leaseRevoke({ ID: s2.leaseId })
    await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError)
    expect((await leader.leader()).value).toBe('leader')
    await s1.close()
    await s2.close()
  })

  it('aborting a waiting campaign rejects with the reason and leaves no key', async () => {
    const name = uniqueName('elect-abort')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    await new Election(s1, name).campaign('leader')
    const ac = new AbortController()
    const e2 = new Election(s2, name)
    const waiting = e2.campaign('waiter', { signal: ac.signal })
    waiting.catch(() => {})
    await sleep(200)
    expect(await keyExists(etcd.client, `${name}/${s2.leaseHex}`)).toBe(true)
    const reason = new Error('caller gave up')
    ac.abort(reason)
    await expect(waiting).rejects.toBe(reason)
    expect(await keyExists(etcd.client, `${name}/${s2.leaseHex}`)).toBe(false)
    expect(e2.key).toBe('')
    // An already-aborted signal writes nothing.
    await expect(e2.campaign('again', { signal: ac.signal })).rejects.toBe(reason)
    expect(await keyExists(etcd.client, `${name}/${s2.leaseHex}`)).toBe(false)
    await s1.close()
    await s2.close()
  })

  it('resign() while campaign() waits ends the campaign with NotLeaderError', async () => {
    const name = uniqueName('elect-resign-wait')
    const s1 = await Session.create(etcd.client, { ttl: 5 })
    const s2 = await Session.create(etcd.client, { ttl: 5 })
    await new Election(s1, name).campaign('leader')
    const e2 = new Election(s2, name)
    const waiting = e2.campaign('waiter')
    waiting.catch(() => {})
    await sleep(200)
    await e2.resign()
    await expect(waiting).rejects.toBeInstanceOf(NotLeaderError)
    expect(await keyExists(etcd.client, `${name}/${s2.leaseHex}`)).toBe(false)
    await s1.close()
    await s2.close()
  })

  it('leader/proclaim/resign outside a candidacy', async () => {
    const name = uniqueName('elect-misc')
    const s = await Session.create(etcd.client, { ttl: 5 })
    const e = new Election(s, name)
    await expect(e.leader()).rejects.toBeInstanceOf(NoLeaderError)
    await expect(e.proclaim('x')).rejects.toBeInstanceOf(NotLeaderError)
    await e.resign() // no-op
    expect(e.key).toBe('')
    expect(e.rev).toBe(-1n)
    await e.campaign('v1')
    expect(e.key).toBe(`${name}/${s.leaseHex}`)
    const l = await e.leader()
    expect(l).toEqual({ key: e.key, value: 'v1', rev: e.rev, modRevision: e.rev, version: 1n })
    // The key deleted behind our back: proclaim is fenced and fails.
    await etcd.client.delete().key(e.key)
    await expect(e.proclaim('v2')).rejects.toBeInstanceOf(NotLeaderError)
    expect(e.leading).toBe(false)
    await expect(e.leader()).rejects.toBeInstanceOf(NoLeaderError)
    // A new campaign creates a new term with a higher revision.
    await e.campaign('v3')
    const again = await e.leader()
    expect(again.value).toBe('v3')
    expect(again.rev > l.rev).toBe(true)
    // The fencing compare guards writes to this term.
    const guarded = await etcd.client
      .if(e.key, 'Create', '==', e.rev.toString())
      .then(etcd.client.put(`${name}-data`).value('ok'))
      .commit()
    expect(guarded.succeeded).toBe(true)
    await e.resign()
    expect(e.leading).toBe(false)
    await expect(e.leader()).rejects.toBeInstanceOf(NoLeaderError)
    await s.close()
  })

  it('observe ends cleanly on abort, also while there is no leader', async () => {
    const name = uniqueName('elect-observe-abort')
    const s = await Session.create(etcd.client, { ttl: 5 })
    const ac = new AbortController()
    const values: string[] = []
    const done = (async () => {
      for await (const v of new Election(s, name).observe({ signal: ac.signal })) values.push(v.value)
    })()
    await sleep(200)
    const e = new Election(s, name)
    await e.campaign('one')
    await sleep(200)
    ac.abort()
    await done
    expect(values).toEqual(['one'])
    await s.close()
  })

  it('observe reports every new leader and never an earlier one afterwards', async () => {
    const name = uniqueName('elect-sequence')
    const sessions = await Promise.all([0, 1, 2].map(() => Session.create(etcd.client, { ttl: 5 })))
    const [a, b, c] = sessions.map((s) => new Election(s, name))
    const ac = new AbortController()
    const next = puller(new Election(sessions[0], name).observe({ signal: ac.signal }))
    const firstValue = next() // starts while leaderless
    await a.campaign('a0')
    expect((await firstValue).value).toBe('a0')
    const wb = b.campaign('b0')
    await until(() => b.key !== '') // b queues before c
    const wc = c.campaign('c0')
    await a.proclaim('a1')
    expect((await next()).value).toBe('a1')
    // a proclaims once more and resigns before the observer reads on: it sees a2, then b.
    await a.proclaim('a2')
    await a.resign()
    await wb
    expect((await next()).value).toBe('a2')
    const bLeader = await next()
    expect(bLeader).toMatchObject({ value: 'b0', key: b.key, rev: b.rev })
    await b.resign()
    await wc
    await c.proclaim('c1')
    // Lagging behind a leader change skips to the new leader's current value.
    expect(await next()).toMatchObject({ value: 'c1', key: c.key })
    await c.proclaim('c2')
    expect((await next()).value).toBe('c2')
    ac.abort()
    for (const s of sessions) await s.close()
  })

  it('works inside a client namespace: keys are relative to it', async () => {
    const ns = `${uniqueName('ns')}/`
    const client = createClient({ endpoints: etcd.cluster.endpoints, namespace: ns })
    try {
      const name = uniqueName('elect-ns')
      const s1 = await Session.create(client, { ttl: 5 })
      const s2 = await Session.create(client, { ttl: 5 })
      const e1 = new Election(s1, name)
      const e2 = new Election(s2, name)
      const stop = new AbortController()
      const next = puller(e1.observe({ signal: stop.signal }))
      await e1.campaign('one')
      expect(await next()).toMatchObject({ key: `${name}/${s1.leaseHex}`, value: 'one' })
      expect(await keyExists(etcd.client, `${ns}${name}/${s1.leaseHex}`)).toBe(true)
      const waiting = e2.campaign('two')
      await e1.resign()
      await waiting
      expect(await next()).toMatchObject({ key: `${name}/${s2.leaseHex}`, value: 'two' })
      expect((await e1.leader()).key).toBe(e2.key)
      stop.abort()
      await s1.close()
      await s2.close()
    } finally {
      client.close()
    }
  })

  it('rejects bad input before writing anything', async () => {
    const s = await Session.create(etcd.client, { ttl: 5 })
    expect(() => new Election(s, '')).toThrow(InvalidArgumentError)
    expect(() => new Election(s, 42 as unknown as string)).toThrow(InvalidArgumentError)
    expect(() => new Election(s, undefined as unknown as string)).toThrow(InvalidArgumentError)
    const name = uniqueName('elect-bad')
    const e = new Election(s, name)
    await expect(e.campaign(42 as unknown as string)).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(e.campaign(null as unknown as string)).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(e.campaign({ v: 1 } as unknown as string)).rejects.toBeInstanceOf(InvalidArgumentError)
    expect(await keyExists(etcd.client, `${name}/${s.leaseHex}`)).toBe(false)
    await e.campaign('ok')
    await expect(e.proclaim(7 as unknown as string)).rejects.toBeInstanceOf(InvalidArgumentError)
    expect((await e.leader()).value).toBe('ok')
    // Two concurrent campaigns on one object are a usage error.
    const other = await Session.create(etcd.client, { ttl: 5 })
    await new Election(other, `${name}-2`).campaign('holder')
    const busy = new Election(s, `${name}-2`)
    const ac = new AbortController()
    const pending = busy.campaign('a', { signal: ac.signal })
    pending.catch(() => {})
    await expect(busy.campaign('b')).rejects.toBeInstanceOf(InvalidArgumentError)
    ac.abort()
    await expect(pending).rejects.toBeDefined()
    await s.close()
    await other.close()
  })
})

describe('Election.campaignOnce', () => {
  it('wins when nobody leads, and withdraws leaving no key when someone does', async () => {
    const name = uniqueName('try-elect')
    const a = new Election(await Session.create(etcd.client, { ttl: 5 }), name)
    const b = new Election(await Session.create(etcd.client, { ttl: 5 }), name)
    expect((await a.campaignOnce('a')).elected).toBe(true)
    const lost = await b.campaignOnce('b')
    expect(lost).toMatchObject({ elected: false, leader: { key: a.key, value: 'a' } })
    expect(await etcd.keysUnder(`${name}/`)).toEqual([a.key])
    await a.resign()
    expect((await b.campaignOnce('b')).elected).toBe(true)
  })

  it('tryCampaign, its deprecated name, gives the same answers', async () => {
    const name = uniqueName('try-elect-old')
    const a = new Election(await Session.create(etcd.client, { ttl: 5 }), name)
    const b = new Election(await Session.create(etcd.client, { ttl: 5 }), name)
    expect((await a.tryCampaign('a')).elected).toBe(true)
    expect(await b.tryCampaign('b')).toMatchObject({ elected: false, leader: { key: a.key, value: 'a' } })
    expect(await etcd.keysUnder(`${name}/`)).toEqual([a.key])
  })
})
