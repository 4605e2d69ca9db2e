/**
 * Every grant a middleware puts on `context.etcd` (issue 23, items 5 and 10): each has
 * `fenced()`, an etcd3 transaction builder guarded by the grant (as `Mutex.fenced()`), whose
 * write lands while the grant holds and not once it is gone; and a grant's `signal` is read
 * anew, so that after a freeze past the lease's bound it reads aborted at once and `fenced()`
 * refuses, before any timer has run.
 */
import middy from '@middy/core'
import type { MiddlewareObj } from '@middy/core'
import { describe, expect, it } from 'vitest'
import { LockReleasedError, NotLeaderError, SessionExpiredError } from '../../lib/index.js'
import { etcdIdempotency, etcdLock, etcdPlugin, etcdRateLimit, etcdRwLock, etcdSemaphore, leaderGuard } from '../../middleware/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()

/** What a handler can do with a grant. */
interface AnyGrant {
  fenced: () => { then: (...ops: unknown[]) => { commit: () => Promise<{ succeeded: boolean }> } }
  signal?: AbortSignal
}

/** Each middleware, the slot of its grant, and how a write fenced by a grant that is gone fails. */
const grants: {
  what: string
  slot: string
  use: (name: string) => MiddlewareObj<any, any, any, any>
  gone: 'refused' | typeof LockReleasedError | typeof NotLeaderError | typeof SessionExpiredError
}[] = [
  { what: 'etcdLock', slot: 'lock', use: (name) => etcdLock({ name, client: etcd.client }), gone: LockReleasedError },
  {
    what: "etcdRwLock 'read'",
    slot: 'rwLock',
    use: (name) => etcdRwLock({ name, mode: 'read', client: etcd.client }),
    gone: LockReleasedError,
  },
  {
    what: "etcdRwLock 'write'",
    slot: 'rwLock',
    use: (name) => etcdRwLock({ name, mode: 'write', client: etcd.client }),
    gone: LockReleasedError,
  },
  {
    what: 'etcdSemaphore',
    slot: 'semaphore',
    use: (name) => etcdSemaphore({ name, permits: 2, client: etcd.client }),
    gone: LockReleasedError,
  },
  { what: 'leaderGuard', slot: 'leader', use: (election) => leaderGuard({ election, client: etcd.client }), gone: NotLeaderError },
  // A term outlives the invocation, and a completed idempotency record stays this owner's, but
  // the invocation's session has ended (orphaned, to lapse or to be renewed by the next one).
  {
    what: 'leaderGuard with a term',
    slot: 'leader',
    use: (election) => leaderGuard({ election, term: 5, client: etcd.client }),
    gone: SessionExpiredError,
  },
  {
    what: 'etcdIdempotency',
    slot: 'idempotency',
    use: (name) => etcdIdempotency({ key: () => name, client: etcd.client }),
    gone: SessionExpiredError,
  },
  // 20/s, burst 0: the admission counts for 50 ms, then its token is deleted.
  {
    what: "etcdRateLimit 'wait'",
    slot: 'rateLimit',
    use: (name) => etcdRateLimit({ name, rate: 20, client: etcd.client }),
    gone: 'refused',
  },
  {
    what: "etcdRateLimit 'try'",
    slot: 'rateLimit',
    use: (name) => etcdRateLimit({ name, rate: 20, acquire: 'try', client: etcd.client }),
    gone: 'refused',
  },
]

describe('every grant on context.etcd has fenced()', () => {
  for (const g of grants) {
    it(`${g.what}: context.etcd.${g.slot}.fenced() writes while the grant holds, and not once the invocation is over`, async () => {
      const name = uniqueName('grant')
      const data = `${name}-data`
      let grant: AnyGrant | undefined
      const handler = middy(async (_event: unknown, context: any) => {
        grant = context.etcd[g.slot] as AnyGrant
        const res = await grant.fenced().then(etcd.client.put(data).value('in the handler')).commit()
        return res.succeeded
      }, etcdPlugin()).use(g.use(name))
      expect(await handler({}, lambdaContext())).toBe(true)
      expect(await etcd.client.get(data).string()).toBe('in the handler')
      const late = async () => (await grant!.fenced().then(etcd.client.put(data).value('after')).commit()).succeeded
      if (g.gone === 'refused') {
        await sleep(150)
        expect(await late()).toBe(false)
        expect(await etcd.client.get(data).string()).toBe('in the handler')
      } else {
        await expect(late()).rejects.toBeInstanceOf(g.gone)
        expect(await etcd.client.get(data).string()).toBe('in the handler')
      }
    })
  }
})

/** Blocks this process's event loop for `ms`, as a freeze would: no timer, no keepalive runs. */
function freeze(ms: number) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

describe("a grant's signal after a freeze past the lease's bound", () => {
  const frozen: { what: string; slot: string; use: (name: string) => MiddlewareObj<any, any, any, any> }[] = [
    { what: 'etcdLock', slot: 'lock', use: (name) => etcdLock({ name, ttl: 2, client: etcd.client }) },
    { what: 'etcdSemaphore', slot: 'semaphore', use: (name) => etcdSemaphore({ name, permits: 1, ttl: 2, client: etcd.client }) },
    { what: 'leaderGuard', slot: 'leader', use: (election) => leaderGuard({ election, ttl: 2, client: etcd.client }) },
    { what: 'etcdIdempotency', slot: 'idempotency', use: (name) => etcdIdempotency({ key: () => name, leaseTtl: 2, client: etcd.client }) },
  ]
  for (const g of frozen) {
    it(`${g.what}: reads aborted on the first look, and fenced() throws SessionExpiredError, before the expiry timer has run`, async () => {
      const name = uniqueName('frozen')
      const seen: { before: boolean; after?: boolean; fenced?: unknown } = { before: true }
      const handler = middy(async (_event: unknown, context: any) => {
        const grant = context.etcd[g.slot] as AnyGrant
        seen.before = grant.signal!.aborted
        freeze(3000) // past TTL 2 s: etcd lets the lease go meanwhile
        // Synchronously after the freeze: no timer has had a chance to run.
        seen.after = grant.signal!.aborted
        try {
          grant.fenced()
        } catch (err) {
          seen.fenced = err
        }
        return 'done'
      }, etcdPlugin()).use(g.use(name))
      await handler({}, lambdaContext()).catch(() => {})
      expect(seen.before).toBe(false)
      expect(seen.after).toBe(true) // before the fix: false until the expiry timer ran
      expect(seen.fenced).toBeInstanceOf(SessionExpiredError)
    })
  }
})
