import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { Barrier, WaitTimeoutError } from '../../lib/index.js'
import { etcdBarrier } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

describe('etcdBarrier', () => {
  it('holds the handler until the barrier is released', async () => {
    const name = uniqueName('barrier')
    const barrier = new Barrier(etcd.client, name)
    await barrier.hold()
    let ran = 0
    const handler = middy(async () => {
      ran++
    }).use(etcdBarrier({ name, client: etcd.client }))
    const waiting = Promise.all([handler({}, lambdaContext()), handler({}, lambdaContext())])
    await sleep(200)
    expect(ran).toBe(0)
    await barrier.release()
    await waiting
    expect(ran).toBe(2)
  })

  it('gives up with WaitTimeoutError within waitMs', async () => {
    const name = uniqueName('barrier-timeout')
    await new Barrier(etcd.client, name).hold()
    const handler = middy(async () => 'ran').use(etcdBarrier({ name, waitMs: 200, client: etcd.client }))
    await expect(handler({}, lambdaContext())).rejects.toBeInstanceOf(WaitTimeoutError)
  })
})
