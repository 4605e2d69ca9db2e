import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { createClient, Election, Session } from '../../lib/index.js'
import { leaderGuard } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'
import { tcpProxy } from '../support/tcp-proxy.js'

const etcd = useEtcd()

describe('leaderGuard', () => {
  it('of 5 concurrent invocations exactly one runs the handler; the others get the follower response', async () => {
    const election = uniqueName('guard')
    let ran = 0
    const handler = middy(async (_e: unknown, context: any) => {
      ran++
      await sleep(200)
      return { leader: true, key: context.etcd.leader.key }
    }).use(leaderGuard({ election, client: etcd.client }))
    const results = await Promise.all(Array.from({ length: 5 }, () => handler({}, lambdaContext())))
    expect(ran).toBe(1)
    expect(results.filter((r: any) => r.leader === true)).toHaveLength(1)
    const followers = results.filter((r: any) => r.leader === false)
    expect(followers).toHaveLength(4)
    for (const f of followers as any[]) expect(f.leaderValue).toMatch(/^fn:/)
    // Leadership lasts one invocation without `term`: nothing is left behind.
    expect(await etcd.keysUnder(`${election}/`)).toEqual([])
  })

  it('with term, the next invocation of the same instance stays leader without a new campaign', async () => {
    const election = uniqueName('term')
    const revs: bigint[] = []
    const handler = middy(async (_e: unknown, context: any) => {
      revs.push(context.etcd.leader.rev)
    }).use(leaderGuard({ election, term: 3, client: etcd.client }))
    await handler({}, lambdaContext())
    await sleep(300)
    await handler({}, lambdaContext())
    expect(revs).toHaveLength(2)
    expect(revs[1]).toBe(revs[0])
    // Another instance (another client, another factory) is a follower meanwhile.
    const other = createClient({ endpoints: etcd.cluster.endpoints })
    try {
      const otherHandler = middy(async () => 'ran').use(leaderGuard({ election, term: 3, client: other, onFollower: () => 'follower' }))
      expect(await otherHandler({}, lambdaContext())).toBe('follower')
      // When the leading instance stops invoking, its term lapses and the other takes over.
      let result = 'follower'
      for (let i = 0; i < 40 && result === 'follower'; i++) {
        await sleep(250)
        result = await otherHandler({}, lambdaContext())
      }
      expect(result).toBe('ran')
    } finally {
      other.close()
    }
  })

  it('with term, a transient error while renewing keeps the term: the next invocation leads again instead of following its own key', async () => {
    const election = uniqueName('term-transient')
    const proxy = await tcpProxy(etcd.cluster.endpoints[0])
    const client = createClient({ endpoints: [proxy.endpoint], callTimeoutMs: 1000 })
    try {
      const handler = middy(async (_e: unknown, context: any) => ({ leader: true, key: context.etcd.leader.key })).use(
        leaderGuard({ election, term: 20, client }),
      )
      const first = (await handler({}, lambdaContext())) as { leader: boolean; key: string }
      expect(first.leader).toBe(true)
      proxy.cut()
      await expect(handler({}, lambdaContext())).rejects.toThrow()
      proxy.heal()
      // Right after the outage the client may still be reconnecting: calls fail fast until it is back.
      let next: any
      for (let i = 0; i < 50 && next === undefined; i++)
        next = await handler({}, lambdaContext()).catch(() => sleep(100).then(() => undefined))
      expect(next).toEqual({ leader: true, key: first.key })
    } finally {
      client.close()
      await proxy.close()
    }
  })

  it('a follower short-circuit releases an outer lock', async () => {
    const election = uniqueName('guard-outer')
    const holder = new Election(await Session.create(etcd.client, { ttl: 5 }), election)
    await holder.campaign('someone-else')
    const { etcdLock } = await import('../../middleware/index.js')
    const lockName = uniqueName('outer-lock')
    const handler = middy(async () => 'ran')
      .use(etcdLock({ name: lockName, client: etcd.client }))
      .use(leaderGuard({ election, client: etcd.client }))
    expect(await handler({}, lambdaContext())).toEqual({ leader: false, leaderValue: 'someone-else' })
    expect(await etcd.keysUnder(`${lockName}/`)).toEqual([])
    await holder.resign()
  })

  it('rejects bad options', () => {
    expect(() => leaderGuard({} as any)).toThrow(/`election` is required/)
    expect(() => leaderGuard({ election: 'e', term: 0 })).toThrow(/`term`/)
  })
})
