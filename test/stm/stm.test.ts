import type { Namespace } from 'etcd3'
import { describe, expect, it } from 'vitest'
import { ConflictError, InvalidArgumentError } from '../../lib/errors.js'
import { keyspace } from '../../lib/core/kv.js'
import { Isolation, runSTM, type STM } from '../../lib/stm/stm.js'
import { uniqueName, useEtcd } from '../helpers.js'

// Go runs TestSTMConflict and TestSTMSerialize on 3 members, the rest on 1: so do we.
const etcd = useEtcd(3)
const single = useEtcd(1)

/** A client talking to member `i` of the 3-member cluster only. */

const read = (client: Namespace, key: string) => client.get(key).string()
const version = async (client: Namespace, key: string) => (await keyspace(client).range(key)).kvs[0]?.version

async function seedAccounts(client: Namespace, prefix: string, n = 5, balance = 100) {
  const keys = Array.from({ length: n }, (_, i) => `${prefix}/accts/${i}`)
  for (const k of keys) await client.put(k).value(String(balance))
  return keys
}

async function total(client: Namespace, keys: string[]) {
  let sum = 0
  for (const k of keys) {
    const v = await read(client, k)
    expect(v).toMatch(/^\d+$/)
    sum += Number(v)
  }
  return sum
}

const randInt = (n: number) => Math.floor(Math.random() * n)

/** Go's ExampleSTM_apply: move half of a random account's balance to another random account. */
async function halfTransfer(stm: STM, keys: string[]) {
  const from = randInt(keys.length)
  const to = randInt(keys.length)
  if (from === to) return
  const fromV = Number(await stm.get(keys[from]))
  const toV = Number(await stm.get(keys[to]))
  const xfer = Math.floor(fromV / 2)
  stm.put(keys[from], String(fromV - xfer))
  stm.put(keys[to], String(toV + xfer))
}

/** `workers` concurrent loops of `perWorker` transfers, spread over the members; returns total attempts. */
async function runTransfers(keys: string[], isolation: Isolation, workers: number, perWorker: number) {
  const clients = [0, 1, 2].map((i) => etcd.memberClient(i))
  let attempts = 0
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; i < perWorker; i++) {
        const r = await runSTM(clients[w % 3], (stm) => halfTransfer(stm, keys), { isolation })
        attempts += r.attempts
      }
    }),
  )
  return attempts
}

describe('runSTM: Go peer tests', () => {
  it('keeps the sum under 5 concurrent RepeatableReads transfers (TestSTMConflict)', async () => {
    const keys = await seedAccounts(etcd.client, uniqueName('stm'))
    await Promise.all(
      keys.map((own, i) =>
        runSTM(
          etcd.memberClient(i),
          async (stm) => {
            let to = randInt(keys.length)
            if (keys[to] === own) to = (to + 1) % keys.length
            const ownV = Number(await stm.get(own))
            const toV = Number(await stm.get(keys[to]))
            const amount = randInt(ownV + 1)
            stm.put(own, String(ownV - amount))
            stm.put(keys[to], String(toV + amount))
          },
          { isolation: Isolation.RepeatableReads },
        ),
      ),
    )
    expect(await total(etcd.client, keys)).toBe(500)
  })

  it('puts a new key (TestSTMPutNewKey)', async () => {
    const key = `${uniqueName('stm')}/foo`
    const r = await runSTM(single.client, (stm) => stm.put(key, 'bar'), { isolation: Isolation.RepeatableReads })
    expect(r.attempts).toBe(1)
    expect(await read(single.client, key)).toBe('bar')
    expect(r.revision).toBe((await keyspace(single.client).range(key)).kvs[0].modRevision)
  })

  it('writes nothing when its signal is aborted inside apply (TestSTMAbort)', async () => {
    const key = `${uniqueName('stm')}/foo`
    const controller = new AbortController()
    const reason = new Error('abort')
    const p = runSTM(
      single.client,
      async (stm) => {
        await stm.get(key)
        stm.put(key, 'baz')
        controller.abort(reason)
      },
      { isolation: Isolation.RepeatableReads, signal: controller.signal },
    )
    await expect(p).rejects.toBe(reason)
    expect(await read(single.client, key)).toBeNull()
  })

  it('serializable reads see one snapshot while a writer updates all keys in one Txn (TestSTMSerialize)', async () => {
    const prefix = uniqueName('stm')
    const keys = Array.from({ length: 5 }, (_, i) => `${prefix}/foo-${i}`)
    const ks = keyspace(etcd.client)
    await ks.txn(
      [],
      keys.map((k) => ks.put(k, '-1')),
    )
    let writing = true
    let runs = 0
    const seen = new Set<string>()
    const readers = [0, 1, 2].map(async (m) => {
      const client = etcd.memberClient(m)
      do {
        await runSTM(
          client,
          async (stm) => {
            const vs: string[] = []
            for (const k of keys) vs.push(await stm.get(k))
            for (const v of vs) if (v !== vs[0]) throw new Error(`torn read: ${vs.join(',')}`)
            seen.add(vs[0])
          },
          { isolation: Isolation.Serializable },
        )
        runs++
      } while (writing)
    })
    for (let i = 0; i < 5; i++)
      await ks.txn(
        [],
        keys.map((k) => ks.put(k, String(i))),
      )
    writing = false
    await Promise.all(readers)
    expect(runs).toBeGreaterThanOrEqual(3)
    expect(seen.has('4')).toBe(true)
  })

  it('re-runs apply exactly once after a concurrent deletion (TestSTMApplyOnConcurrentDeletion)', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/foo`).value('bar')
    let tries = 0
    const r = await runSTM(
      single.client,
      async (stm) => {
        tries++
        await stm.get(`${prefix}/foo`)
        if (tries === 1) await single.client.delete().key(`${prefix}/foo`)
        stm.put(`${prefix}/foo2`, 'bar2')
      },
      { isolation: Isolation.RepeatableReads },
    )
    expect(tries).toBe(2)
    expect(r.attempts).toBe(2)
    expect(await read(single.client, `${prefix}/foo2`)).toBe('bar2')
  })

  it('commits a read-then-put at once, with no spurious retries (TestSTMSerializableSnapshotPut)', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/a`).value('0')
    let calls = 0
    const apply = async (stm: STM) => {
      if (++calls > 3) throw new Error('too many calls')
      await stm.get(`${prefix}/a`)
      stm.put(`${prefix}/b`, '1')
    }
    const first = await runSTM(single.client, apply)
    const second = await runSTM(single.client, apply)
    expect([first.attempts, second.attempts]).toEqual([1, 1])
    expect(calls).toBe(2)
    expect(await version(single.client, `${prefix}/b`)).toBe(2n)
  })
})

describe('runSTM: bank transfers (Go ExampleSTM_apply, scaled up)', () => {
  // 5 accounts of 100; 10 concurrent workers x 100 transfers of half the source balance.
  for (const isolation of [Isolation.SerializableSnapshot, Isolation.Serializable, Isolation.RepeatableReads]) {
    it(`keeps the sum at 500 under ${isolation}`, async () => {
      const keys = await seedAccounts(etcd.client, uniqueName('bank'))
      const started = performance.now()
      const attempts = await runTransfers(keys, isolation, 10, 100)
      const ms = Math.round(performance.now() - started)
      console.log(`[stm bank] ${isolation}: 10x100 transfers, ${attempts} attempts, ${ms} ms`)
      expect(attempts).toBeGreaterThanOrEqual(1000)
      expect(await total(etcd.client, keys)).toBe(500)
    })
  }

  it('ReadCommitted never retries (and promises no invariant: updates can be lost)', async () => {
    // No compares at all, so concurrent read-modify-writes may overwrite each other: the sum is
    // not conserved and is deliberately not asserted.
    const keys = await seedAccounts(etcd.client, uniqueName('bank'))
    const clients = [0, 1, 2].map((i) => etcd.memberClient(i))
    const attempts: number[] = []
    await Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let i = 0; i < 20; i++) {
          attempts.push((await runSTM(clients[w % 3], (stm) => halfTransfer(stm, keys), { isolation: Isolation.ReadCommitted })).attempts)
        }
      }),
    )
    expect(attempts).toHaveLength(200)
    expect(new Set(attempts)).toEqual(new Set([1]))
  })
})

describe('runSTM: semantics', () => {
  it('SerializableSnapshot rejects a blind write to a key changed after the snapshot; Serializable does not', async () => {
    for (const [isolation, expected] of [
      [Isolation.SerializableSnapshot, 2],
      [Isolation.Serializable, 1],
    ] as const) {
      const prefix = uniqueName('stm')
      await single.client.put(`${prefix}/a`).value('1')
      let tries = 0
      const r = await runSTM(
        single.client,
        async (stm) => {
          tries++
          await stm.get(`${prefix}/a`)
          if (tries === 1) await single.client.put(`${prefix}/b`).value('other')
          stm.put(`${prefix}/b`, 'mine')
        },
        { isolation },
      )
      expect(r.attempts).toBe(expected)
      expect(tries).toBe(expected)
      expect(await read(single.client, `${prefix}/b`)).toBe('mine')
    }
  })

  it('serializable reads after the first are served at the first read’s revision', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/a`).value('a0')
    await single.client.put(`${prefix}/b`).value('b0')
    const seen: string[][] = []
    const r = await runSTM(
      single.client,
      async (stm) => {
        const a = await stm.get(`${prefix}/a`)
        if (seen.length === 0) {
          await single.client.put(`${prefix}/a`).value('a1')
          await single.client.put(`${prefix}/b`).value('b1')
        }
        const b = await stm.get(`${prefix}/b`)
        seen.push([a, b])
        stm.put(`${prefix}/c`, a + b)
      },
      { isolation: Isolation.Serializable },
    )
    // First attempt: the snapshot (a0, b0), then a conflict on a; the retry sees the new values.
    expect(seen).toEqual([
      ['a0', 'b0'],
      ['a1', 'b1'],
    ])
    expect(r.attempts).toBe(2)
    expect(await read(single.client, `${prefix}/c`)).toBe('a1b1')
  })

  it('restarts an attempt whose snapshot was compacted away', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/a`).value('a0')
    await single.client.put(`${prefix}/b`).value('b0')
    const seen: string[][] = []
    let tries = 0
    const r = await runSTM(
      single.client,
      async (stm) => {
        const a = await stm.get(`${prefix}/a`)
        if (++tries === 1) {
          await single.client.put(`${prefix}/b`).value('b1')
          const now = (await keyspace(single.client).range(`${prefix}/b`)).revision
          await single.client.kv.compact({ revision: String(now), physical: true })
        }
        const b = await stm.get(`${prefix}/b`) // the first attempt's snapshot read fails: compacted
        seen.push([a, b])
        stm.put(`${prefix}/c`, a + b)
      },
      { isolation: Isolation.SerializableSnapshot },
    )
    expect(seen).toEqual([['a0', 'b1']])
    expect(r.attempts).toBe(2)
    expect(await read(single.client, `${prefix}/c`)).toBe('a0b1')
  })

  it('RepeatableReads reads the latest values and retries when a read key changes', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/a`).value('a0')
    await single.client.put(`${prefix}/b`).value('b0')
    const seen: string[][] = []
    await runSTM(
      single.client,
      async (stm) => {
        const a = await stm.get(`${prefix}/a`)
        if (seen.length === 0) await single.client.put(`${prefix}/b`).value('b1')
        const b = await stm.get(`${prefix}/b`)
        seen.push([a, b])
        stm.put(`${prefix}/c`, a + b)
      },
      { isolation: Isolation.RepeatableReads },
    )
    // b was read after the outside write, a did not change: one attempt.
    expect(seen).toEqual([['a0', 'b1']])
  })

  it('reads its own writes, and rev() gives the mod revision as read', async () => {
    const prefix = uniqueName('stm')
    for (const isolation of Object.values(Isolation)) {
      await single.client.put(`${prefix}/x`).value('1')
      const modRev = (await keyspace(single.client).range(`${prefix}/x`)).kvs[0].modRevision
      const r = await runSTM(
        single.client,
        async (stm) => {
          const got = {
            before: await stm.get(`${prefix}/x`),
            rev: await stm.rev(`${prefix}/x`),
            absentRev: await stm.rev(`${prefix}/none`),
          }
          stm.put(`${prefix}/y`, 'new')
          stm.del(`${prefix}/x`)
          return {
            ...got,
            y: await stm.get(`${prefix}/y`),
            x: await stm.get(`${prefix}/x`),
            none: await stm.get(`${prefix}/none`),
            empty: await stm.get(),
          }
        },
        { isolation, maxAttempts: 1 },
      )
      expect(r.result).toEqual({ before: '1', rev: modRev, absentRev: 0n, y: 'new', x: '', none: '', empty: '' })
      expect(await read(single.client, `${prefix}/x`)).toBeNull()
      expect(await read(single.client, `${prefix}/y`)).toBe('new')
      await single.client.delete().key(`${prefix}/y`)
    }
  })

  it('get() with several keys returns the first key’s value and reads them all in one go', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/b`).value('B')
    for (const isolation of Object.values(Isolation)) {
      const r = await runSTM(
        single.client,
        async (stm) => ({ a: await stm.get(`${prefix}/a`, `${prefix}/b`), b: await stm.get(`${prefix}/b`, `${prefix}/a`) }),
        { isolation },
      )
      expect(r.result).toEqual({ a: '', b: 'B' })
    }
  })

  it('prefetched keys join the read set: a change to one forces a retry', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/p`).value('0')
    let tries = 0
    const r = await runSTM(
      single.client,
      async (stm) => {
        tries++
        if (tries === 1) await single.client.put(`${prefix}/p`).value('1')
        stm.put(`${prefix}/out`, 'x')
      },
      { isolation: Isolation.Serializable, prefetch: [`${prefix}/p`] },
    )
    expect(r.attempts).toBe(2)
    expect(tries).toBe(2)
  })

  it('an error thrown by apply aborts without writing', async () => {
    const prefix = uniqueName('stm')
    const boom = new Error('boom')
    for (const isolation of Object.values(Isolation)) {
      await expect(
        runSTM(
          single.client,
          async (stm) => {
            stm.put(`${prefix}/x`, 'written')
            throw boom
          },
          { isolation },
        ),
      ).rejects.toBe(boom)
    }
    expect(await read(single.client, `${prefix}/x`)).toBeNull()
  })

  it('gives up with ConflictError after maxAttempts, writing nothing', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/hot`).value('0')
    let tries = 0
    const p = runSTM(
      single.client,
      async (stm) => {
        tries++
        await stm.get(`${prefix}/hot`)
        await single.client.put(`${prefix}/hot`).value(String(tries)) // always a conflict
        stm.put(`${prefix}/out`, 'x')
      },
      { maxAttempts: 3 },
    )
    await expect(p).rejects.toBeInstanceOf(ConflictError)
    expect(tries).toBe(3)
    expect(await read(single.client, `${prefix}/out`)).toBeNull()
  })

  it('stops between attempts when the signal is aborted, writing nothing', async () => {
    const prefix = uniqueName('stm')
    await single.client.put(`${prefix}/hot`).value('0')
    const controller = new AbortController()
    const reason = new Error('deadline')
    let tries = 0
    const p = runSTM(
      single.client,
      async (stm) => {
        tries++
        await stm.get(`${prefix}/hot`)
        stm.put(`${prefix}/out`, 'x')
        // A conflicting write lands before the commit; the abort comes while it commits (or,
        // if the commit answers first, during the second attempt's read).
        await single.client.put(`${prefix}/hot`).value(String(tries))
        setTimeout(() => controller.abort(reason), 0)
      },
      { signal: controller.signal },
    )
    await expect(p).rejects.toBe(reason)
    expect(tries).toBeLessThanOrEqual(2)
    expect(await read(single.client, `${prefix}/out`)).toBeNull()
  })

  it('an aborted signal stops the transaction even if apply swallows the read rejection', async () => {
    const prefix = uniqueName('stm')
    const controller = new AbortController()
    const reason = new Error('stop')
    const p = runSTM(
      single.client,
      async (stm) => {
        controller.abort(reason)
        await stm.get(`${prefix}/a`).catch(() => 'ignored')
        stm.put(`${prefix}/out`, 'x')
      },
      { signal: controller.signal },
    )
    await expect(p).rejects.toBe(reason)
    expect(await read(single.client, `${prefix}/out`)).toBeNull()
  })

  it('works inside a namespace', async () => {
    const ns = `${uniqueName('ns')}/`
    const client = single.client.namespace(ns)
    await client.put('n').value('5')
    const r = await runSTM(client, async (stm) => {
      const n = Number(await stm.get('n'))
      stm.put('n', String(n + 1))
      return n
    })
    expect(r).toMatchObject({ result: 5, attempts: 1 })
    expect(await read(single.client, `${ns}n`)).toBe('6')
  })

  it('rejects a stm used after its attempt', async () => {
    let leaked: STM | undefined
    await runSTM(single.client, (stm) => {
      leaked = stm
    })
    expect(() => leaked!.put('k', 'v')).toThrow(InvalidArgumentError)
    await expect(leaked!.get('k')).rejects.toBeInstanceOf(InvalidArgumentError)
  })

  it('rejects bad input before any write', async () => {
    const noop = () => {}
    for (const maxAttempts of [0, -1, 1.5, NaN, '2' as unknown as number]) {
      await expect(runSTM(single.client, noop, { maxAttempts })).rejects.toBeInstanceOf(InvalidArgumentError)
    }
    await expect(runSTM(single.client, noop, { isolation: 'Snapshot' as Isolation })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(runSTM(single.client, noop, { isolation: 0 as unknown as Isolation })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(runSTM(single.client, noop, { prefetch: [''] })).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(runSTM(single.client, 'nope' as unknown as typeof noop)).rejects.toBeInstanceOf(InvalidArgumentError)
    const prefix = uniqueName('stm')
    await expect(
      runSTM(single.client, (stm) => {
        stm.put(`${prefix}/ok`, 'v')
        stm.put('', 'v')
      }),
    ).rejects.toBeInstanceOf(InvalidArgumentError)
    await expect(runSTM(single.client, (stm) => stm.put(`${prefix}/ok`, 42 as unknown as string))).rejects.toBeInstanceOf(
      InvalidArgumentError,
    )
    await expect(runSTM(single.client, async (stm) => void (await stm.get(`${prefix}/ok`, '')))).rejects.toBeInstanceOf(
      InvalidArgumentError,
    )
    expect(await read(single.client, `${prefix}/ok`)).toBeNull()
    expect(Object.keys(Isolation)).toEqual(['SerializableSnapshot', 'Serializable', 'RepeatableReads', 'ReadCommitted'])
  })
})
