// Fencing a write to etcd itself: the Txn carries the lock's ownership as a compare, so etcd
// applies it only while the lock key is still this hold's.
import { Mutex, requireFenced, Session, type EtcdClient } from '../lib/index.js'

/** Runs a job under its lock and records the run with a write etcd refuses once the lock is lost. */
export async function recordRun(client: EtcdClient, job: string, result: string): Promise<bigint> {
  const session = await Session.create(client, { ttl: 10 })
  const mutex = new Mutex(session, `jobs/${job}`)
  await mutex.lock({ signal: AbortSignal.timeout(5_000) })
  try {
    const res = await mutex
      .fenced()
      .then(client.put(`jobs/${job}/last-run`).value(result))
      .commit()
    requireFenced(res.succeeded, mutex.fence, `jobs/${job}/last-run`)
    return mutex.fence
  } finally {
    await mutex.unlock()
    await session.close()
  }
}
