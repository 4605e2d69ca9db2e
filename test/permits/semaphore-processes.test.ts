/**
 * Semaphore across separate processes (issue 14, "Done when"): 300 acquisitions from 3 child
 * processes with permits 5 reported to a downstream that counts concurrent holders, and
 * holders SIGKILLed while holding, whose permits must be free within TTL + 1 s.
 */
import { createServer, type Server } from 'node:http'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { Semaphore, Session } from '../../lib/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { Worker } from '../support/workers.js'

const etcd = useEtcd(1)
const workers: Worker[] = []
afterEach(async () => {
  for (const w of workers.splice(0)) await w.kill()
})

async function worker() {
  const w = await Worker.start(etcd.cluster.endpoints)
  workers.push(w)
  return w
}

/** The downstream the permits protect: counts holders inside it, remembers the most at once. */
function downstream() {
  const state = { inside: 0, most: 0, entered: [] as bigint[], errors: [] as string[] }
  const server: Server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      if (req.url === '/enter') {
        state.most = Math.max(state.most, ++state.inside)
        state.entered.push(BigInt(body))
      } else if (req.url === '/leave') state.inside--
      else state.errors.push(`unexpected ${req.url}`)
      res.end('ok')
    })
  })
  return { state, server }
}

const servers: Server[] = []
afterAll(() => {
  for (const s of servers) s.close()
})

describe('Semaphore across processes', () => {
  it('300 acquisitions from 3 processes with permits 5: the downstream never sees more than 5, all succeed, fences strictly increase', async () => {
    const name = uniqueName('sem-procs')
    const { state, server } = downstream()
    servers.push(server)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    const procs = await Promise.all([worker(), worker(), worker()])
    // 100 acquisitions per process: 4 loops of 25 each, so 12 contenders compete for 5 permits.
    const done = await Promise.all(
      procs.flatMap((w) =>
        Array.from({ length: 4 }, (_, tag) => {
          w.send({ op: 'semLoop', tag, name, permits: 5, ttl: 10, count: 25, url, holdMs: 20 })
          return w.next('semDone', 120_000, (e) => e.tag === tag)
        }),
      ),
    )
    const fences = done.flatMap((d) => (d.fences as string[]).map(BigInt))
    expect(fences).toHaveLength(300)
    expect(state.errors).toEqual([])
    expect(state.entered).toHaveLength(300)
    expect(state.inside).toBe(0)
    expect(state.most).toBeLessThanOrEqual(5)
    expect(state.most).toBeGreaterThanOrEqual(2) // they did overlap: the test can see a breach
    // Every grant got its own fence, and each contender's fences rise grant after grant.
    expect(new Set(fences).size).toBe(300)
    for (const d of done) {
      const own = (d.fences as string[]).map(BigInt)
      for (let i = 1; i < own.length; i++) expect(own[i]).toBeGreaterThan(own[i - 1])
    }
    console.log(`[semaphore-processes] 300 acquisitions, at most ${state.most} inside the downstream at once`)
    expect(await etcd.client.getAll().prefix(`${name}/`).keys()).toEqual([`${name}/config`])
  })

  it('holders SIGKILLed while holding: their permits are free within TTL + 1 s', async () => {
    const name = uniqueName('sem-kill')
    const ttl = 2
    const procs = await Promise.all(Array.from({ length: 5 }, () => worker()))
    const held = await Promise.all(procs.map((w) => w.request({ op: 'semHold', name, permits: 5, ttl }, 'semHeld')))
    expect(new Set(held.map((h) => h.key)).size).toBe(5)
    // Two callers here queue for the permits the killed holders will free.
    const session = await Session.create(etcd.client, { ttl: 10 })
    const waiters = [new Semaphore(session, name, 5), new Semaphore(session, name, 5)]
    const granted = waiters.map((w) => w.acquire().then(() => performance.now()))
    while ((await etcd.client.getAll().prefix(`${name}/waiters/`).keys()).length < 2) await new Promise((r) => setTimeout(r, 20))
    const killedAt = performance.now()
    await Promise.all([procs[1].kill(), procs[3].kill()])
    const freedAfter = (await Promise.all(granted)).map((t) => t - killedAt)
    console.log(
      `[semaphore-processes] permits of 2 SIGKILLed holders (TTL ${ttl} s) free after ${freedAfter.map((ms) => ms.toFixed(0)).join(' ms, ')} ms`,
    )
    for (const ms of freedAfter) expect(ms).toBeLessThan(ttl * 1000 + 1000)
    const killedKeys = [held[1].key, held[3].key].sort()
    expect(waiters.map((w) => w.key).sort()).toEqual(killedKeys)
    for (const w of waiters) expect(w.fence).toBeGreaterThan(BigInt(held[4].fence))
    for (const w of waiters) await w.release()
    await session.close()
  })
})
