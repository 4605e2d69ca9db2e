import { afterEach, describe, expect, it } from 'vitest'
import { DoubleBarrier } from '../../lib/barriers/double-barrier.js'
import { InvalidArgumentError, SessionExpiredError, TooManyClientsError } from '../../lib/errors.js'
import { keyspace } from '../../lib/core/kv.js'
import { Session } from '../../lib/session/session.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

const etcd = useEtcd(3)

/** A client talking to member `i` only. */

const sessions: Session[] = []
async function session(i = 0): Promise<Session> {
  const s = await Session.create(etcd.memberClient(i), { ttl: 10 })
  sessions.push(s)
  return s
}
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((s) => s.close().catch(() => {})))
})

/** Rejects if `p` has not settled within `ms` (a "does not hang" bound, not a timing claim). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

/** Runs `p`, recording in `done[i]` when it fulfils. */
function track(done: boolean[], i: number, p: Promise<void>) {
  return p.then(() => {
    done[i] = true
  })
}

const waiterKeys = async (name: string) => (await keyspace(etcd.client).range(`${name}/waiters/`, { prefix: true })).kvs

describe('DoubleBarrier', () => {
  it('releases all on the count-th enter and all on the last leave (TestDoubleBarrier)', async () => {
    const name = uniqueName('dbar')
    const count = 10
    const barriers = await Promise.all(Array.from({ length: count }, async (_, i) => new DoubleBarrier(await session(i), name, count)))
    const entered: boolean[] = []
    const enters = barriers.slice(0, 9).map((b, i) => track(entered, i, b.enter()))
    await sleep(500)
    expect(entered.filter(Boolean)).toHaveLength(0)
    expect(await waiterKeys(name)).toHaveLength(9)

    await barriers[9].enter()
    await within(Promise.all(enters), 5000, 'enters after the 10th')
    expect(entered.filter(Boolean)).toHaveLength(9)
    const keys = await waiterKeys(name)
    expect(keys.map((kv) => kv.key).sort()).toEqual(barriers.map((b) => b.key).sort())
    for (const kv of keys) expect(kv.key).toMatch(new RegExp(`^${name}/waiters/\\d{19}$`))
    expect((await keyspace(etcd.client).range(`${name}/ready`)).kvs).toHaveLength(1)

    const left: boolean[] = []
    const leaves = barriers.slice(0, 9).map((b, i) => track(left, i, b.leave()))
    await sleep(500)
    expect(left.filter(Boolean)).toHaveLength(0)
    await barriers[9].leave()
    await within(Promise.all(leaves), 5000, 'leaves after the 10th')
    expect(left.filter(Boolean)).toHaveLength(9)
    // The last one out cleaned up everything, /ready included.
    expect((await keyspace(etcd.client).range(`${name}/`, { prefix: true })).kvs).toHaveLength(0)
    for (const b of barriers) expect(b.entered).toBe(false)
  })

  it('refuses an 11th participant without leaving a key (TestDoubleBarrierTooManyClients)', async () => {
    const name = uniqueName('dbar')
    const s = await session(0)
    const barriers = Array.from({ length: 10 }, () => new DoubleBarrier(s, name, 10))
    await within(Promise.all(barriers.map((b) => b.enter())), 10_000, '10 enters')
    const extra = new DoubleBarrier(await session(1), name, 10)
    await expect(extra.enter()).rejects.toBeInstanceOf(TooManyClientsError)
    expect(extra.key).toBe('')
    expect(await waiterKeys(name)).toHaveLength(10)
    await within(Promise.all(barriers.map((b) => b.leave())), 10_000, '10 leaves')
  })

  it('lets exactly count of many racing participants in; the losers leave no key', async () => {
    const name = uniqueName('dbar')
    const barriers = await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => new DoubleBarrier(await session(i), name, 3)))
    const results = await within(Promise.allSettled(barriers.map((b) => b.enter())), 10_000, 'racing enters')
    const ok = results.filter((r) => r.status === 'fulfilled')
    const refused = results.filter((r) => r.status === 'rejected')
    expect(ok).toHaveLength(3)
    for (const r of refused) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(TooManyClientsError)
    expect((await waiterKeys(name)).map((kv) => kv.key).sort()).toEqual(
      barriers
        .filter((b) => b.entered)
        .map((b) => b.key)
        .sort(),
    )
    await within(Promise.all(barriers.filter((b) => b.entered).map((b) => b.leave())), 10_000, 'leaves')
  })

  it('does not let a dead participant block the others leaving (TestDoubleBarrierFailover)', async () => {
    const name = uniqueName('dbar')
    const s0 = await session(0)
    const s1 = await session(1)
    const b0 = new DoubleBarrier(s0, name, 10)
    const others = Array.from({ length: 9 }, () => new DoubleBarrier(s1, name, 10))
    // b0 enters first, so it is the oldest participant: the one everybody else's leave waits on.
    const e0 = b0.enter()
    await sleep(200)
    expect(await waiterKeys(name)).toHaveLength(1)
    await within(Promise.all([e0, ...others.map((b) => b.enter())]), 10_000, 'enters')
    const left: boolean[] = []
    const leaves = others.map((b, i) => track(left, i, b.leave()))
    await sleep(500)
    expect(left.filter(Boolean)).toHaveLength(0)
    await s0.close() // revokes the lease: b0's key goes without b0 leaving
    await within(Promise.all(leaves), 10_000, 'leaves with a dead participant')
    expect(await waiterKeys(name)).toHaveLength(0)
  })

  it('releases a barrier of 3 only when the third enters', async () => {
    const name = uniqueName('dbar')
    const [a, b, c] = await Promise.all([0, 1, 2].map(async (i) => new DoubleBarrier(await session(i), name, 3)))
    const entered: boolean[] = []
    const first = [track(entered, 0, a.enter()), track(entered, 1, b.enter())]
    await sleep(500)
    expect(entered.filter(Boolean)).toHaveLength(0)
    await c.enter()
    await within(Promise.all(first), 5000, 'enters after the third')
    await within(Promise.all([a.leave(), b.leave(), c.leave()]), 5000, 'leaves')
  })

  it('ignores a stale /ready left by an earlier round', async () => {
    const name = uniqueName('dbar')
    // An earlier round whose last participant died before cleaning up.
    await etcd.client.put(`${name}/ready`).value('')
    const [a, b] = await Promise.all([0, 1].map(async (i) => new DoubleBarrier(await session(i), name, 2)))
    let entered = false
    const first = a.enter().then(() => {
      entered = true
    })
    await sleep(500)
    expect(entered).toBe(false)
    await b.enter()
    await within(first, 5000, 'enter after the second participant')
    await within(Promise.all([a.leave(), b.leave()]), 5000, 'leaves')
    expect((await keyspace(etcd.client).range(`${name}/`, { prefix: true })).kvs).toHaveLength(0)
  })

  it('removes the waiter key when enter is aborted', async () => {
    const name = uniqueName('dbar')
    const b = new DoubleBarrier(await session(0), name, 3)
    const controller = new AbortController()
    const p = b.enter({ signal: controller.signal })
    await sleep(200)
    expect(await waiterKeys(name)).toHaveLength(1)
    const reason = new Error('stop')
    controller.abort(reason)
    await expect(p).rejects.toBe(reason)
    expect(await waiterKeys(name)).toHaveLength(0)
    expect(b.entered).toBe(false)
    // An already aborted signal writes nothing.
    await expect(b.enter({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    expect(await waiterKeys(name)).toHaveLength(0)
  })

  it('removes the waiter key when leave is aborted, unblocking the others', async () => {
    const name = uniqueName('dbar')
    const [a, b] = await Promise.all([0, 1].map(async (i) => new DoubleBarrier(await session(i), name, 2)))
    await within(Promise.all([a.enter(), b.enter()]), 5000, 'enters')
    const controller = new AbortController()
    // a entered first, so it is the lowest: its leave waits for b.
    const p = a.leave({ signal: controller.signal })
    await sleep(200)
    const reason = new Error('stop')
    controller.abort(reason)
    await expect(p).rejects.toBe(reason)
    expect(a.entered).toBe(false)
    await within(b.leave(), 5000, 'leave of the remaining participant')
    expect(await waiterKeys(name)).toHaveLength(0)
  })

  it('fails enter with SessionExpiredError when the lease is revoked while waiting', async () => {
    const name = uniqueName('dbar')
    const s = await session(0)
    const b = new DoubleBarrier(s, name, 2)
    const p = b.enter()
    // The rejection may come while the revoke is still being answered: observe it from now on.
    const outcome = within(p, 10_000, 'enter after revoke').catch((err: unknown) => err)
    await sleep(200)
    await etcd.client.leaseClient.leaseRevoke({ ID: s.leaseId })
    expect(await outcome).toBeInstanceOf(SessionExpiredError)
    expect(await waiterKeys(name)).toHaveLength(0)
  })

  it('rejects bad input and leave without enter', async () => {
    const s = await session(0)
    for (const count of [0, -1, 1.5, NaN, Infinity, '3' as unknown as number]) {
      expect(() => new DoubleBarrier(s, 'x', count)).toThrow(InvalidArgumentError)
    }
    expect(() => new DoubleBarrier(s, '', 2)).toThrow(InvalidArgumentError)
    await expect(new DoubleBarrier(s, uniqueName('dbar'), 2).leave()).rejects.toBeInstanceOf(InvalidArgumentError)
  })

  it('with count 1, enter returns at once and leave cleans up', async () => {
    const name = uniqueName('dbar')
    const b = new DoubleBarrier(await session(0), name, 1)
    await within(b.enter(), 5000, 'enter')
    await expect(b.enter()).rejects.toBeInstanceOf(InvalidArgumentError)
    await within(b.leave(), 5000, 'leave')
    expect((await keyspace(etcd.client).range(`${name}/`, { prefix: true })).kvs).toHaveLength(0)
  })
})
