// How scheduled dispatcher runs pass the leadership on without a gap. A run that finds a leader
// waits in the election as its successor; the leader, as soon as it sees a successor waiting,
// stops claiming and resigns at once, and the successor (whose run started later, so it has
// the most time left) takes over within milliseconds. With a timeout longer than the schedule's
// rate, a new run is always already waiting when the old one steps down, and each run leads for
// about one period of the schedule.
import type { Namespace } from 'etcd3'
import type { Election } from '../lib/locks/election.js'
import { contenders } from '../lib/core/keys.js'
import { keyspace } from '../lib/core/kv.js'
import { startTimer } from '../lib/timers.js'
import { waitFor } from '../lib/wait/wait.js'

/**
 * Campaigns, waiting up to `waitMs` for the leader to hand over; true once this run leads. On
 * false the candidacy has been withdrawn. With no time to wait it only tries, as a run whose
 * claiming window would be too short to be worth waiting for.
 */
export async function campaignFor(election: Election, proposal: string, waitMs: number): Promise<boolean> {
  if (waitMs <= 0) return (await election.campaignOnce(proposal)).elected
  const giveUp = new AbortController()
  const timer = startTimer(waitMs, () => giveUp.abort(new Error('no handover before this run could lead for long enough')), { ref: true })
  try {
    await election.campaign(proposal, { signal: giveUp.signal })
    return true
  } catch (err) {
    if (giveUp.signal.aborted) return false
    throw err
  } finally {
    timer.cancel()
  }
}

/**
 * Resolves when a candidate younger than our own key (create revision `rev`) is in the
 * election `name`: a later run waiting to take over. Keys of nested election names (a further
 * "/" below `<name>/`) are not candidates of this election. Rejects with `signal`'s reason.
 */
export async function successorWaiting(client: Namespace, name: string, rev: bigint, signal: AbortSignal): Promise<void> {
  const ks = keyspace(client)
  const prefix = contenders.prefix(name)
  const candidate = (key: string, createRevision: bigint) => createRevision > rev && !key.slice(prefix.length).includes('/')
  const now = await ks.range(prefix, { prefix: true, minCreateRevision: rev + 1n, keysOnly: true })
  signal.throwIfAborted()
  if (now.kvs.some((kv) => candidate(kv.key, kv.createRevision))) return
  // From the read's revision + 1: a watch that starts past the current revision is served as
  // writes commit, not on etcd's 100 ms catch-up tick.
  await waitFor(
    client,
    { key: prefix, prefix: true },
    now.revision + 1n,
    (type, kv) => type === 'put' && candidate(kv.key, kv.createRevision),
    signal,
  )
}
