import { describe, expect, it } from 'vitest'
import { Barrier } from '../../lib/barriers/barrier.js'
import { InvalidArgumentError, KeyExistsError } from '../../lib/errors.js'
import { keyspace } from '../../lib/core/kv.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'

// Go runs TestBarrierMultiNode on 3 members; every test here does.
const etcd = useEtcd(3)

/** A client talking to member `i` only. */

/** Rejects if `p` has not settled within `ms` (a "does not hang" bound, not a timing claim). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

describe('Barrier', () => {
  it('holds waiters until release, even after unrelated writes (TestBarrierSingleNode/MultiNode)', async () => {
    const name = uniqueName('barrier')
    const b = new Barrier(etcd.client, name)
    expect(await b.hold()).toBeGreaterThan(0n)
    await expect(new Barrier(etcd.memberClient(1), name).hold()).rejects.toBeInstanceOf(KeyExistsError)
    expect(await b.isHeld()).toBe(true)
    // An unrelated write after hold(): Go 3.4's Wait then waited for a PUT that never came.
    await etcd.client.put(`x-${name}`).value('y')

    const done: boolean[] = []
    const waiters = [0, 1, 2, 3, 4].map((i) =>
      new Barrier(etcd.memberClient(i), name).wait().then(() => {
        done[i] = true
      }),
    )
    await sleep(500)
    expect(done.filter(Boolean)).toHaveLength(0)

    expect(await new Barrier(etcd.memberClient(2), name).release()).toBe(true)
    await within(Promise.all(waiters), 5000, 'waiters after release')
    expect(done.filter(Boolean)).toHaveLength(5)
    expect(await b.isHeld()).toBe(false)
    expect(await b.release()).toBe(false)
  })

  it('does not wait on a key that only shares the prefix (TestBarrierWaitNonexistentKey)', async () => {
    const name = uniqueName('barrier')
    await etcd.client.put(`${name}-0`).value('')
    const b = new Barrier(etcd.client, name)
    expect(await b.isHeld()).toBe(false)
    await within(
      Promise.all([0, 1, 2, 3, 4].map((i) => new Barrier(etcd.memberClient(i), name).wait())),
      5000,
      'waits on an absent barrier',
    )
  })

  it('can be held again after release, and a new wait blocks on the new hold', async () => {
    const name = uniqueName('barrier')
    const b = new Barrier(etcd.client, name)
    const first = await b.hold()
    await b.release()
    const second = await b.hold()
    expect(second).toBeGreaterThan(first)
    let done = false
    const w = b.wait().then(() => {
      done = true
    })
    await sleep(300)
    expect(done).toBe(false)
    await b.release()
    await within(w, 5000, 'wait after the second release')
  })

  it('stops waiting on abort, rejecting with the reason and leaving the barrier up', async () => {
    const name = uniqueName('barrier')
    const b = new Barrier(etcd.client, name)
    await b.hold()
    const controller = new AbortController()
    const w = b.wait({ signal: controller.signal })
    await sleep(200)
    const reason = new Error('gave up')
    controller.abort(reason)
    await expect(w).rejects.toBe(reason)
    expect(await b.isHeld()).toBe(true)
    // An already aborted signal rejects at once.
    await expect(b.wait({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason)
    await b.release()
  })

  it('uses the exact key layout, inside a namespace', async () => {
    const ns = `${uniqueName('ns')}/`
    const name = uniqueName('barrier')
    const b = new Barrier(etcd.client.namespace(ns), name)
    await b.hold()
    const raw = await keyspace(etcd.client).range(`${ns}${name}`)
    expect(raw.kvs).toHaveLength(1)
    expect(raw.kvs[0].value.toString()).toBe('')
    expect(raw.kvs[0].lease).toBe('0') // no lease: the barrier outlives its holder
    const w = b.wait()
    await etcd.client.delete().key(`${ns}${name}`)
    await within(w, 5000, 'namespaced wait')
  })

  it('rejects bad names before any write', () => {
    expect(() => new Barrier(etcd.client, '')).toThrow(InvalidArgumentError)
    expect(() => new Barrier(etcd.client, undefined as unknown as string)).toThrow(InvalidArgumentError)
  })
})
