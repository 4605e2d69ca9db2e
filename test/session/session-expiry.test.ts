import { describe, expect, it } from 'vitest'
import { LeaseLostError, Mutex, Session, createClient } from '../../lib/index.js'
import { sleep, uniqueName, useEtcd } from '../helpers.js'
import { tcpProxy } from '../support/tcp-proxy.js'

// A holder cut off from etcd must learn that its lease may be gone BEFORE etcd can expire the
// lease and grant what it held to someone else: `session.signal` (and through it the lock and
// leader signals of the middlewares) is what tells a handler to stop writing. Each trial cuts
// the holder's only connection (a black-holing TCP proxy) at a random moment of its keepalive
// cycle while another client queues for the same lock on a direct connection.

const etcd = useEtcd()

interface Trial {
  ttl: number
  /** `performance.now()` when the holder's signal aborted. */
  abortedAt: number
  /** `performance.now()` when the other client was granted the lock. */
  grantedAt: number
  reason: string
}

async function trial(ttl: number): Promise<Trial> {
  const proxy = await tcpProxy(etcd.cluster.endpoints[0])
  // Room for a slow first connection on a busy machine (CI saw a 1 s deadline pass in set-up);
  // the signal under test is a timer at the lease's bound and does not depend on it.
  const holderClient = createClient({ endpoints: [proxy.endpoint], callTimeoutMs: 5000 })
  const name = uniqueName('cut')
  try {
    const holder = await Session.create(holderClient, { ttl })
    await new Mutex(holder, name).lock()
    const aborted = new Promise<{ at: number; reason: unknown }>((resolve) =>
      holder.signal.addEventListener('abort', () => resolve({ at: performance.now(), reason: holder.signal.reason }), { once: true }),
    )
    // Anywhere in the keepalive cycle, including just after an answer (the worst case before the fix).
    await sleep(Math.random() * ttl * 1000)
    expect(holder.active).toBe(true)
    proxy.cut()
    const other = await Session.create(etcd.client, { ttl: 5 })
    const mutex = new Mutex(other, name)
    await mutex.lock({ signal: AbortSignal.timeout(ttl * 1000 + 15_000) })
    const grantedAt = performance.now()
    const abort = await Promise.race([aborted, sleep(15_000).then(() => undefined)])
    await mutex.unlock()
    await other.close()
    if (!abort) throw new Error(`ttl ${ttl}: the holder's signal never aborted`)
    expect(abort.reason).toBeInstanceOf(LeaseLostError)
    return { ttl, abortedAt: abort.at, grantedAt, reason: (abort.reason as LeaseLostError).reason }
  } finally {
    holderClient.close()
    await proxy.close()
  }
}

describe('Session.signal under a network cut', () => {
  for (const [ttl, trials] of [
    [2, 12],
    [4, 8],
  ] as const) {
    it(`ttl ${ttl}: in each of ${trials} parallel trials the cut-off holder's signal aborts before anyone else is granted its lock`, async () => {
      const results = await Promise.all(Array.from({ length: trials }, () => trial(ttl)))
      const margins = results.map((r) => r.grantedAt - r.abortedAt).sort((a, b) => a - b)
      console.log(`[session-expiry] ttl ${ttl}: signal before grant by ${margins.map((m) => m.toFixed(0)).join(', ')} ms`)
      for (const r of results) {
        expect(r.reason).toBe('unreachable')
        expect(r.abortedAt).toBeLessThan(r.grantedAt)
      }
    }, 60_000)
  }
})
