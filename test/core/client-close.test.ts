import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { uniqueName, useEtcd } from '../helpers.js'

// etcd3's close() tells no pending watch: its watchers emit neither 'error' nor 'end' and keep
// reconnecting. Every wait of ours must still end at once (WatchLostError, reason
// 'client-closed'), release its watch and timers, and let a script that closed its clients exit.

const etcd = useEtcd()
const script = fileURLToPath(new URL('../support/close-waits.ts', import.meta.url))

describe('closing the client ends every pending wait', () => {
  it('receive, dequeue, Barrier.wait, observe, a lock wait, a queued semaphore call and a waiting campaign reject within 1 s with reason client-closed, and the process exits by itself', async () => {
    const started = performance.now()
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], {
      env: { ...process.env, ETCD_TEST_ENDPOINT: etcd.cluster.endpoints[0], ETCD_TEST_PREFIX: uniqueName('close') },
      // A process kept alive by a leftover timer or watch would hang here until this kills it.
      timeout: 20_000,
    })
    const report = JSON.parse(stdout.trim().split('\n').pop()!) as {
      outcomes: { name: string; outcome: string; reason?: string; ms?: number; error?: string }[]
    }
    console.log(
      `[client-close] ${report.outcomes.map((o) => `${o.name}: ${o.error} (${o.reason}) after ${o.ms?.toFixed(0)} ms`).join('; ')}; exited after ${(performance.now() - started).toFixed(0)} ms`,
    )
    expect(report.outcomes.map((o) => o.name).sort()).toEqual(['barrier', 'campaign', 'dequeue', 'lock', 'observe', 'receive', 'semaphore'])
    for (const o of report.outcomes) {
      expect(o).toMatchObject({ outcome: 'rejected', error: 'WatchLostError', reason: 'client-closed' })
      expect(o.ms).toBeLessThan(1_000)
    }
  })
})
