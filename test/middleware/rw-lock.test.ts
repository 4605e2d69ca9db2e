import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { etcdRwLock } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

describe('etcdRwLock', () => {
  it('readers run together, a writer runs alone', async () => {
    const name = uniqueName('rw')
    let readers = 0
    let writers = 0
    let maxReaders = 0
    let overlap = false
    const read = middy(async () => {
      readers++
      maxReaders = Math.max(maxReaders, readers)
      if (writers > 0) overlap = true
      // Stay until all three readers are in (or give up after 3 s): proves they hold together.
      for (let i = 0; i < 60 && maxReaders < 3; i++) await sleep(50)
      readers--
    }).use(etcdRwLock({ name, mode: 'read', client: etcd.client }))
    const write = middy(async () => {
      writers++
      if (readers > 0 || writers > 1) overlap = true
      await sleep(20)
      writers--
    }).use(etcdRwLock({ name, mode: 'write', client: etcd.client }))
    const readersRun = Promise.all([read({}, lambdaContext()), read({}, lambdaContext()), read({}, lambdaContext())])
    for (let i = 0; i < 100 && readers < 3; i++) await sleep(20)
    // Writers queue behind the readers, and run one at a time after them.
    await Promise.all([readersRun, write({}, lambdaContext()), write({}, lambdaContext())])
    expect(overlap).toBe(false)
    expect(maxReaders).toBe(3)
    expect(await etcd.keysUnder(`${name}/`)).toEqual([])
  })

  it("gives the handler context.etcd.rwLock with a fence, and 'try' short-circuits when a writer holds", async () => {
    const name = uniqueName('rw-try')
    const seen: bigint[] = []
    const writer = middy(async (_e: unknown, context: any) => {
      seen.push(context.etcd.rwLock.fence)
      await sleep(300)
    }).use(etcdRwLock({ name, mode: 'write', client: etcd.client }))
    const reader = middy(async () => 'read').use(
      etcdRwLock({ name, mode: 'read', acquire: 'try', onLocked: () => 'busy', client: etcd.client }),
    )
    const running = writer({}, lambdaContext())
    await sleep(100)
    expect(await reader({}, lambdaContext())).toBe('busy')
    await running
    expect(seen).toHaveLength(1)
    expect(await reader({}, lambdaContext())).toBe('read')
  })

  it('rejects bad options at construction', () => {
    expect(() => etcdRwLock({ name: 'x' } as any)).toThrow(/`mode` is required/)
    expect(() => etcdRwLock({ name: 'x', mode: 'exclusive' } as any)).toThrow(/`mode` must be one of 'read', 'write'/)
    expect(() => etcdRwLock({ name: 'x', mode: 'read', acquire: 'soon' } as any)).toThrow(/`acquire`/)
  })
})
