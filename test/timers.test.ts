/**
 * lib/timers.ts, the one place the library arms timers (issue 23, item 4): Node fires a timer
 * longer than 2^31 − 1 ms after 1 ms, and AbortSignal.timeout() throws past 2^32 − 1 ms. Every
 * timer whose length a setting decides is armed here with the largest value the checks accept,
 * against a real etcd: none may fire early, and none may spin.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import middy from '@middy/core'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Mutex, RateLimiter, Session } from '../lib/index.js'
import { keepAliveStream } from '../lib/core/keepalive.js'
import { keyspace } from '../lib/core/kv.js'
import { MAX_PERMITS, MAX_REFILL_INTERVAL_MS, MAX_TTL_S } from '../lib/limits.js'
import { MAX_TIMER_MS, startInterval, startTimer, timeoutSignal } from '../lib/timers.js'
import { etcdLock, etcdPlugin } from '../middleware/index.js'
import { lambdaContext } from '../testing/index.js'
import { sleep, uniqueName, useEtcd } from './helpers.js'

const etcd = useEtcd(1)
const root = fileURLToPath(new URL('..', import.meta.url))

/** Node's overflow warnings while a test runs: each one is a timer that fired 1 ms after it was armed. */
const overflows: string[] = []
const onWarning = (w: Error) => {
  if (w.name === 'TimeoutOverflowWarning') overflows.push(w.message)
}
beforeEach(() => {
  overflows.length = 0
  process.on('warning', onWarning)
})
afterEach(() => {
  process.off('warning', onWarning)
})

function sourceFiles(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

describe('timers', () => {
  it('the library arms no timer of its own outside lib/timers.ts', () => {
    const files = ['lib', 'middleware', 'dispatch'].flatMap(sourceFiles).filter((f) => f !== join('lib', 'timers.ts'))
    expect(files.length).toBeGreaterThan(50)
    const armed = files.flatMap((f) =>
      readFileSync(join(root, f), 'utf8')
        .split('\n')
        // Code only: not comments, not messages that name AbortSignal.timeout() as an example.
        .map((line, i) => ({ line: line.replace(/\/\/.*$|^\s*\*.*$|`[^`]*`|'[^']*'/g, ''), at: `${f}:${i + 1}` }))
        .filter(({ line }) => /\b(setTimeout|setInterval|AbortSignal\.timeout)\s*\(/.test(line))
        .map(({ at, line }) => `${at}: ${line.trim()}`),
    )
    expect(armed).toEqual([])
  })

  it("a delay past Node's range fires once, when it is due, and never early", () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
    try {
      const delay = 2 ** 32 + 12_345
      let fired = 0
      let ticks = 0
      startTimer(delay, () => fired++)
      const interval = startInterval(delay, () => ticks++)
      vi.advanceTimersByTime(5)
      expect([fired, ticks]).toEqual([0, 0])
      vi.advanceTimersByTime(MAX_TIMER_MS)
      expect([fired, ticks]).toEqual([0, 0])
      vi.advanceTimersByTime(delay - MAX_TIMER_MS - 6)
      expect([fired, ticks]).toEqual([0, 0])
      vi.advanceTimersByTime(1)
      expect([fired, ticks]).toEqual([1, 1])
      vi.advanceTimersByTime(delay)
      expect([fired, ticks]).toEqual([1, 2])
      interval.cancel()
      vi.advanceTimersByTime(2 * delay)
      expect([fired, ticks]).toEqual([1, 2])
      // Infinity never fires; a signal's timer of any length is armed and can be disarmed.
      startTimer(Infinity, () => fired++)
      const signal = timeoutSignal(2 ** 33)
      vi.advanceTimersByTime(2 ** 33 - 1)
      expect(signal.signal.aborted).toBe(false)
      vi.advanceTimersByTime(1)
      expect((signal.signal.reason as DOMException).name).toBe('TimeoutError')
      expect(fired).toBe(1)
    } finally {
      vi.useRealTimers()
    }
  })

  it(`a Session of the longest TTL (${MAX_TTL_S} s) sends no keepalive before TTL/3 and does not end`, async () => {
    const stream = keepAliveStream(etcd.client)
    const sends = vi.spyOn(stream, 'send')
    try {
      const session = await Session.create(etcd.client, { ttl: MAX_TTL_S })
      await sleep(300)
      // Before the fix the TTL/3 timer (3,000,000,000 ms) fired every millisecond: ~900 a second.
      expect(sends.mock.calls.filter(([id]) => id === session.leaseId)).toEqual([])
      expect(session.active).toBe(true)
      expect(session.aliveUntil - performance.now()).toBeGreaterThan((MAX_TTL_S - 60) * 1000)
      await session.close()
    } finally {
      sends.mockRestore()
    }
    expect(overflows).toEqual([])
  })

  it('a RateLimiter with the longest refill interval and the largest burst keeps its token, and a queued call waits for the refill', async () => {
    const name = uniqueName('timers-rl')
    const per = 86_400_000
    const slowest = new RateLimiter(etcd.client, name, { rate: per / MAX_REFILL_INTERVAL_MS, per, burst: MAX_PERMITS - 1 })
    const once = new RateLimiter(etcd.client, `${name}-b0`, { rate: per / MAX_REFILL_INTERVAL_MS, per })
    try {
      // A token lives 1,000 refill intervals (1,000 years): its deletion timer must not fire now.
      expect((await slowest.decide()).admitted).toBe(true)
      await sleep(200)
      expect(await etcd.keysUnder(`${name}/tokens/`)).toHaveLength(1)
      // The refill wake-up of a queued call (a year away) must neither throw nor come early.
      await once.acquire()
      const outcome = await once.acquire({ signal: AbortSignal.timeout(300) }).then(
        () => 'admitted',
        (err: Error) => err.name,
      )
      expect(outcome).toBe('TimeoutError')
      expect(await etcd.keysUnder(`${name}-b0/tokens/`)).toHaveLength(1)
      expect(await etcd.keysUnder(`${name}-b0/waiters/`)).toEqual([])
    } finally {
      await Promise.all([slowest.close(), once.close()])
    }
    expect(overflows).toEqual([])
  })

  it("a lock middleware with a wait budget past Node's range waits instead of timing out at once", async () => {
    const name = uniqueName('timers-lock')
    const holder = await Session.create(etcd.client, { ttl: 10 })
    const held = new Mutex(holder, name)
    await held.lock()
    // An invocation with (as far as the middleware can tell) weeks to run; Middy's own early
    // timeout, armed from the same figure, is off.
    const context = { ...lambdaContext(), getRemainingTimeInMillis: () => 2 ** 33 }
    const handler = middy(async () => 'ran', etcdPlugin({ timeoutEarlyInMillis: 0 })).use(
      etcdLock({ name, client: etcd.client, waitMs: 2 ** 32 }),
    )
    let settled = false
    const running = handler({}, context).finally(() => (settled = true))
    await sleep(300)
    expect(settled).toBe(false)
    await held.unlock()
    expect(await running).toBe('ran')
    await holder.close()
    expect((await keyspace(etcd.client).range(`${name}/`, { prefix: true })).kvs).toEqual([])
    expect(overflows).toEqual([])
  })
})
