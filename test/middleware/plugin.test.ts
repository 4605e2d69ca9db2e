import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import middy from '@middy/core'
import { describe, expect, it } from 'vitest'
import { InvalidArgumentError } from '../../lib/index.js'
import { etcdLock, etcdPlugin, etcdRwLock, leaderGuard } from '../../middleware/index.js'
import { sleep, uniqueName, until, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

// Middy skips every `after` when an inner `before` answers early, and stops the `onError` chain
// when one throws. With `etcdPlugin()`, Middy's `requestEnd` (Middy 7 awaits it in a finally on
// every path; Middy 6 on every path but an unhandled error) releases what our middlewares hold
// before the invocation returns.

const etcd = useEtcd()

/** The Middy this repository runs: 6 (its devDependency, which installs on Node 20) or 7 (CI's Node 22 row). */
const MIDDY_MAJOR = Number(
  (
    JSON.parse(readFileSync(fileURLToPath(new URL('../../node_modules/@middy/core/package.json', import.meta.url)), 'utf8')) as {
      version: string
    }
  ).version.split('.')[0],
)

/** Keys under `<name>/`: what an invocation left behind. */
const keysOf = (name: string) => etcd.keysUnder(`${name}/`)

/** A second invocation that must get the lock at once (a try-lock that fails if anything is left). */
function tryAgain(name: string) {
  return middy(async () => 'again', etcdPlugin()).use(etcdLock({ name, acquire: 'try', client: etcd.client }))({}, lambdaContext())
}

describe('etcdPlugin', () => {
  it('an inner before that answers early (a cache hit) leaves no key: the next invocation gets the lock at once', async () => {
    const name = uniqueName('early')
    const handler = middy(async () => 'handler ran', etcdPlugin())
      .use(etcdLock({ name, client: etcd.client }))
      .use({ before: async () => 'from cache' })
    expect(await handler({}, lambdaContext())).toBe('from cache')
    expect(await keysOf(name)).toEqual([])
    expect(await tryAgain(name)).toBe('again')
  })

  it('an inner onError that throws leaves no key (Middy 7; on Middy 6 the lease frees it)', async () => {
    const name = uniqueName('onerror')
    const handler = middy(async () => {
      throw new Error('handler failed')
    }, etcdPlugin())
      .use(etcdLock({ name, client: etcd.client, ttl: 2 }))
      .use({
        onError: () => {
          throw new Error('inner onError failed')
        },
      })
    await expect(handler({}, lambdaContext(1_000))).rejects.toThrow(/failed/)
    if (MIDDY_MAJOR >= 7) {
      expect(await keysOf(name)).toEqual([])
    } else {
      // Middy 6 (what npm installs on Node 20) calls requestEnd only after a request that did not
      // throw: the lock stays until the lease ends — the invocation's deadline, then its TTL
      // (README "Install", "Which Middy").
      expect(await keysOf(name)).toHaveLength(1)
      await until('the lease to free the lock', 15_000, async () => (await keysOf(name)).length === 0)
    }
    expect(await tryAgain(name)).toBe('again')
  })

  it("Middy's early timeout leaves no key", async () => {
    const name = uniqueName('timeout')
    const handler = middy(
      async () => {
        await sleep(3_000)
        return 'too late'
      },
      etcdPlugin({ timeoutEarlyInMillis: 900 }),
    ).use(etcdLock({ name, client: etcd.client }))
    await expect(handler({}, lambdaContext(1_200))).rejects.toThrow(/abort|time/i)
    expect(await keysOf(name)).toEqual([])
    expect(await tryAgain(name)).toBe('again')
  })

  it('releases every middleware of the request (lock, rw lock, leadership) on an early answer', async () => {
    const [lock, rw, election] = [uniqueName('all-lock'), uniqueName('all-rw'), uniqueName('all-leader')]
    const handler = middy(async () => 'handler ran', etcdPlugin())
      .use(etcdLock({ name: lock, client: etcd.client }))
      .use(etcdRwLock({ name: rw, mode: 'write', client: etcd.client }))
      .use(leaderGuard({ election, client: etcd.client }))
      .use({ before: async () => 'validator said 400' })
    expect(await handler({}, lambdaContext())).toBe('validator said 400')
    expect([...(await keysOf(lock)), ...(await keysOf(rw)), ...(await keysOf(election))]).toEqual([])
  })

  it("keeps the user's own plugin options and runs their requestEnd after ours", async () => {
    const name = uniqueName('compose')
    const seen: string[][] = []
    const handler = middy(
      async () => 'ran',
      etcdPlugin({
        requestEnd: async () => {
          seen.push(await keysOf(name))
        },
      }),
    )
      .use(etcdLock({ name, client: etcd.client }))
      .use({ before: async () => 'early' })
    expect(await handler({}, lambdaContext())).toBe('early')
    expect(seen).toEqual([[]])
  })

  it('rejects options that are not plugin options', () => {
    expect(() => etcdPlugin(null as any)).toThrow(InvalidArgumentError)
    expect(() => etcdPlugin({ requestEnd: 'no' as any })).toThrow(/requestEnd must be a function/)
  })

  it('without the plugin an inner early answer keeps the lock until the deadline, then the lease frees it (documented)', async () => {
    const name = uniqueName('no-plugin')
    const handler = middy(async () => 'handler ran')
      .use(etcdLock({ name, ttl: 1, client: etcd.client }))
      .use({ before: async () => 'from cache' })
    expect(await handler({}, lambdaContext(500))).toBe('from cache')
    expect((await keysOf(name)).length).toBe(1)
    let keys = await keysOf(name)
    for (let i = 0; i < 60 && keys.length > 0; i++) {
      await sleep(100)
      keys = await keysOf(name)
    }
    expect(keys).toEqual([])
  })
})
