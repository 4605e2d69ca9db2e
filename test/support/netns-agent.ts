/**
 * The client program of the partition and downstream-fencing tests: started by
 * `Worker.start(…, { script, netns })` (usually inside a client's network namespace), it speaks
 * `worker.ts`'s protocol (one JSON command per stdin line, one JSON event per stdout line):
 * `loop` starts a workload loop of `netns-loops.ts` and `stop` ends it; the other commands are a
 * lost holder's stale writes (`staleWrite`, `pgWrite`), a held batch's ack (`ackHeld`) and the
 * observer's reads, writes and stale-read probe.
 */
import { createInterface } from 'node:readline'
import { EtcdUnavailableError, runSTM } from '../../lib/index.js'
import { keyspace } from '../../lib/core/kv.js'
import { routedClient } from './netns-routed.js'
import { client, clients, kinds, pgWrite, pools, say, shared, sleep, type Command, type Loop } from './netns-loops.js'

const loops = new Map<string, Loop>()

/** Runs one command; its answer (or an `error` event) goes to stdout. */
async function run(cmd: Command) {
  switch (cmd.op) {
    case 'loop': {
      const start = kinds[cmd.kind as keyof typeof kinds]
      if (!start) throw new Error(`agent: unknown loop kind ${JSON.stringify(cmd.kind)}`)
      if (loops.has(cmd.id)) throw new Error(`agent: loop ${cmd.id} exists`)
      const loop: Loop = { stop: new AbortController(), done: Promise.resolve({}) }
      loops.set(cmd.id, loop)
      loop.done = start(cmd.id, loop, cmd).catch((err: Error) => ({ crashed: `${err.name}: ${err.message}` }))
      loop.done.then((summary) => say({ event: 'ended', id: cmd.id, summary }))
      return say({ event: 'started', id: cmd.id })
    }
    case 'stop': {
      const loop = loops.get(cmd.id)!
      loop.stop.abort()
      loop.ackHeld?.()
      return say({ event: 'stopped', id: cmd.id, summary: await loop.done })
    }
    case 'ackHeld':
      loops.get(cmd.id)!.ackHeld?.()
      return
    case 'staleWrite': {
      // The lost holder's next action: an etcd write guarded by its (stale) ownerCompare().
      // Retried while etcd is unavailable (just healed: elections); the parent also checks the
      // key afterwards, in case an unanswered attempt landed.
      const loop = loops.get(cmd.id)!
      const ks = keyspace(loop.mutex!.session.client)
      for (let attempt = 1; ; attempt++) {
        try {
          const res = await ks.txn([loop.mutex!.ownerCompare()], [ks.put(cmd.key, cmd.value)])
          return say({ event: 'staleWrite', id: cmd.id, succeeded: res.succeeded, attempts: attempt })
        } catch (err) {
          if (!(err instanceof EtcdUnavailableError) || attempt >= 15) throw err
          await sleep(300)
        }
      }
    }
    case 'pgWrite':
      // With the loop's (possibly stale) fence, whatever the session says: Postgres must judge.
      return pgWrite(cmd.id, cmd.pg, cmd.value, loops.get(cmd.id)!.fence!)
    case 'get': {
      const res = await keyspace(shared(cmd.endpoints)).range(cmd.key, { serializable: Boolean(cmd.serializable) })
      return say({
        event: 'value',
        key: cmd.key,
        value: res.kvs[0]?.value.toString(),
        modRevision: res.kvs[0]?.modRevision,
        revision: res.revision,
      })
    }
    case 'keys': {
      const res = await keyspace(shared(cmd.endpoints)).range(cmd.prefix, { prefix: true })
      return say({ event: 'keys', keys: res.kvs.map((kv) => ({ key: kv.key, lease: kv.lease })) })
    }
    case 'put': {
      const ks = keyspace(shared(cmd.endpoints))
      await ks.txn([], [ks.put(cmd.key, cmd.value)])
      return say({ event: 'put', key: cmd.key })
    }
    case 'stmRouted':
      return stmRouted(cmd)
    default:
      throw new Error(`agent: unknown op ${JSON.stringify(cmd.op)}`)
  }
}

/**
 * One runSTM increment of `key` through a client whose serializable reads are served by
 * `readEndpoints` (e.g. a minority member, possibly stale) and everything else by
 * `writeEndpoints`. Reports the value it read and whether (and what) it committed.
 */
async function stmRouted(cmd: Command) {
  const routed = routedClient(client(cmd.readEndpoints), client(cmd.writeEndpoints))
  const reads: string[] = []
  try {
    const res = await runSTM(
      routed,
      async (stm) => {
        const now = (await stm.get(cmd.key)) || '0'
        reads.push(now)
        // A second read: at the snapshot revision for the serializable levels (a member that
        // has not applied it answers "future revision"), member-local for the others.
        await stm.get(`${cmd.key}/other`)
        stm.put(cmd.key, String(Number(now) + 1))
      },
      { isolation: cmd.isolation, maxAttempts: cmd.maxAttempts },
    )
    say({ event: 'stmRouted', isolation: cmd.isolation, committed: true, attempts: res.attempts, reads })
  } catch (err) {
    say({ event: 'stmRouted', isolation: cmd.isolation, committed: false, error: (err as Error).name, reads })
  }
}

say({ event: 'ready', pid: process.pid })
const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const cmd = JSON.parse(line) as Command
  run(cmd).catch((err: Error) => say({ event: 'error', op: cmd.op, id: cmd.id, name: err.name, message: err.message }))
})
lines.on('close', () => {
  for (const loop of loops.values()) loop.stop.abort()
  for (const c of clients) c.close()
  for (const p of pools.values()) p.end().catch(() => {})
  setTimeout(() => process.exit(0), 200).unref()
})
