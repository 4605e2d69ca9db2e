// Child process for test/core/client-close.test.ts: starts one wait of each kind on a client, closes
// that client, prints how each wait ended (as a JSON line) and then must exit BY ITSELF: no
// watch, keepalive or timer of the closed client may keep the process alive.
import { Barrier, Election, Mutex, Queue, Semaphore, Session, createClient } from '../../lib/index.js'

const endpoints = [process.env.ETCD_TEST_ENDPOINT!]
const prefix = process.env.ETCD_TEST_PREFIX!
const other = createClient({ endpoints })
const client = createClient({ endpoints })

// What the waits wait for: a held lock, a held barrier, an election with a leader.
const holder = await Session.create(other, { ttl: 10 })
await new Mutex(holder, `${prefix}/lock`).lock()
await new Barrier(other, `${prefix}/barrier`).hold()
await new Election(holder, `${prefix}/election`).campaign('leader')
// A held permit and a call queued for it: a later call waits on the delete feed for that one.
await new Semaphore(holder, `${prefix}/sem`, 1).acquire()
const queuedFirst = await Session.create(other, { ttl: 10 })
const firstInLine = new Semaphore(queuedFirst, `${prefix}/sem`, 1).acquire().catch(() => {})

const session = await Session.create(client, { ttl: 10 })
const observer = new Election(session, `${prefix}/election`).observe()[Symbol.asyncIterator]()
await observer.next() // the current leader; the next change is what stays pending
const waits: Record<string, Promise<unknown>> = {
  receive: new Queue(client, `${prefix}/q`).receive(),
  dequeue: new Queue(client, `${prefix}/q2`).dequeue(),
  barrier: new Barrier(client, `${prefix}/barrier`).wait(),
  observe: observer.next(),
  lock: new Mutex(session, `${prefix}/lock`).lock(),
  semaphore: new Semaphore(session, `${prefix}/sem`, 1).acquire(),
  campaign: new Election(session, `${prefix}/election`).campaign('follower'),
}
await new Promise((r) => setTimeout(r, 300)) // every wait is watching by now
const closedAt = performance.now()
client.close()
const outcomes = await Promise.all(
  Object.entries(waits).map(([name, wait]) =>
    wait.then(
      () => ({ name, outcome: 'resolved' }),
      (err: { name?: string; reason?: unknown; message?: string }) => ({
        name,
        outcome: 'rejected',
        error: err?.name,
        reason: err?.reason,
        ms: performance.now() - closedAt,
        message: err?.message,
      }),
    ),
  ),
)
console.log(JSON.stringify({ outcomes, activeAfterClose: process.getActiveResourcesInfo() }))
await queuedFirst.close()
await firstInLine
await holder.close()
other.close()
