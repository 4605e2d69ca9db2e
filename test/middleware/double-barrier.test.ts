import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { WaitTimeoutError } from '../../lib/index.js'
import { etcdDoubleBarrier } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

describe('etcdDoubleBarrier', () => {
  it('three invocations start together and finish together; nothing is left behind', async () => {
    const name = uniqueName('dbarrier')
    const log: string[] = []
    const handler = middy(async (event: { i: number }) => {
      log.push(`start${event.i}`)
      await sleep(event.i * 50)
      log.push(`end${event.i}`)
    }).use(etcdDoubleBarrier({ name, count: 3, client: etcd.client }))
    const invoke = (i: number) => handler({ i }, lambdaContext()).then(() => log.push(`returned${i}`))
    const first = invoke(0)
    const second = invoke(1)
    await sleep(200)
    // Nobody starts before the third participant enters …
    expect(log).toEqual([])
    await Promise.all([first, second, invoke(2)])
    // … and no invocation returns before every handler has finished.
    const lastEnd = Math.max(...[0, 1, 2].map((i) => log.indexOf(`end${i}`)))
    const firstReturn = Math.min(...[0, 1, 2].map((i) => log.indexOf(`returned${i}`)))
    expect(lastEnd).toBeLessThan(firstReturn)
    expect(await etcd.keysUnder(`${name}/waiters/`)).toEqual([])
  })

  it('an entry that times out leaves no waiter key', async () => {
    const name = uniqueName('dbarrier-timeout')
    const handler = middy(async () => 'ran').use(etcdDoubleBarrier({ name, count: 2, waitMs: 200, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(WaitTimeoutError)
    expect(await etcd.keysUnder(`${name}/waiters/`)).toEqual([])
  })

  it('rejects count < 1 at construction', () => {
    expect(() => etcdDoubleBarrier({ name: 'x', count: 0 })).toThrow(/`count` must be an integer in 1/)
    expect(() => etcdDoubleBarrier({ name: 'x' } as any)).toThrow(/`count` is required/)
  })
})
