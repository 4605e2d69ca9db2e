/**
 * What a minority member's stale reads can decide (partition scenario 4). The only member-local reads
 * the toolkit makes are runSTM's serializable reads (see docs/RELIABILITY.md); this probe runs
 * runSTM at each isolation level through a client whose serializable reads are served by the
 * cut-off member while its linearizable reads, compares and commits reach the majority — the
 * worst case a client attached to several members can meet.
 */
import type { Lab } from './netns-lab.js'

/** What the stale-read probe saw. */
export interface StaleProbe {
  /** The key as the majority has it, and as the cut-off member serves it (serializable). */
  fresh?: string
  stale?: string
  /** Per isolation level: committed?, what each attempt read, the key's value afterwards. */
  runs: { isolation: string; committed: boolean; reads: string[]; error?: string; after?: string }[]
}

/** Runs during a cut that leaves `minority` without quorum; `key` must be new. */
export async function staleReadProbe(lab: Lab, minority: string, majority: string[], key: string): Promise<StaleProbe> {
  const admin = lab.agents.get('admin')!
  const fromMajority = majority.map((m) => lab.etcd.endpoint(m))
  const fromMinority = [lab.etcd.endpoint(minority)]
  const read = async (endpoints: string[], serializable: boolean) =>
    (await admin.request({ op: 'get', endpoints, key, serializable }, 'value', 30_000)).value as string | undefined
  // Written after the cut: the majority has it, the cut-off member cannot.
  await admin.request({ op: 'put', endpoints: fromMajority, key, value: '5' }, 'put', 30_000)
  const probe: StaleProbe = { fresh: await read(fromMajority, false), stale: await read(fromMinority, true), runs: [] }
  for (const isolation of ['SerializableSnapshot', 'Serializable', 'RepeatableReads', 'ReadCommitted']) {
    const res = await admin.request(
      { op: 'stmRouted', readEndpoints: fromMinority, writeEndpoints: fromMajority, key, isolation, maxAttempts: 3 },
      'stmRouted',
      60_000,
    )
    probe.runs.push({ isolation, committed: res.committed, reads: res.reads, error: res.error, after: await read(fromMajority, false) })
  }
  return probe
}
