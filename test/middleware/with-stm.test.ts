import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { Isolation } from '../../lib/index.js'
import { withSTM } from '../../middleware/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

describe('withSTM', () => {
  it('keeps the seed bank summed under 10 concurrent transfer invocations', async () => {
    const bank = uniqueName('bank')
    const accounts = Array.from({ length: 5 }, (_, i) => `${bank}/acct${i}`)
    for (const a of accounts) await etcd.client.put(a).value('100')
    const transfer = middy(
      withSTM(
        async (event: { from: number; to: number }, context) => {
          const { stm } = context.etcd
          const from = Number(await stm.get(accounts[event.from]))
          const to = Number(await stm.get(accounts[event.to]))
          const amount = Math.floor(from / 2)
          stm.put(accounts[event.from], String(from - amount))
          stm.put(accounts[event.to], String(to + amount))
          return amount
        },
        { isolation: Isolation.SerializableSnapshot, client: etcd.client },
      ),
    )
    await Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let i = 0; i < 10; i++) {
          const from = (w + i) % 5
          await transfer({ from, to: (from + 1 + (i % 4)) % 5 }, lambdaContext())
        }
      }),
    )
    let sum = 0
    for (const a of accounts) sum += Number(await etcd.client.get(a).string())
    expect(sum).toBe(500)
  })

  it('a handler that throws writes nothing', async () => {
    const key = uniqueName('stm-throw')
    const handler = withSTM(
      async (_e: unknown, context) => {
        context.etcd.stm.put(key, 'written')
        throw new Error('changed my mind')
      },
      { client: etcd.client },
    )
    await expect(handler({}, lambdaContext())).rejects.toThrow('changed my mind')
    expect(await etcd.client.get(key).string()).toBeNull()
  })

  it('rejects bad options', () => {
    expect(() => withSTM(async () => 1, { isolation: 'Snapshot' as any })).toThrow(/`isolation`/)
    expect(() => withSTM(async () => 1, { maxAttempts: 0 })).toThrow(/`maxAttempts`/)
  })
})
