/**
 * The queue example the README quotes (`examples/queue-tour.ts`), run against real etcd — and a
 * check that every line of the README's "Queues" code block is in it.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'
import { queueTour } from '../examples/queue-tour.js'
import { Queue } from '../lib/index.js'
import { useEtcd, useSharedClient } from './helpers.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const etcd = useEtcd(1)

useSharedClient(etcd)

it('examples/queue-tour.ts: the first batch holds what is visible at once; the group waits its turn, the delayed message its delay', async () => {
  const { batch, later } = await queueTour()
  expect(batch.map((m) => m.value)).toEqual(['now', 'first of customer 7'])
  expect(later.map((m) => m.value)).toEqual(['second of customer 7'])
  // The nacked one comes back after its retry delay (a second delivery), the delayed one once due.
  const q = new Queue(etcd.client, 'readme/jobs')
  const rest: [string, number][] = []
  while (rest.length < 2) {
    const got = await q.receive({ max: 10, signal: AbortSignal.timeout(15_000) })
    rest.push(...got.map((m): [string, number] => [m.value, m.receiveCount]))
    await q.ackMany(got)
  }
  expect(rest.sort()).toEqual([
    ['in a second', 1],
    ['second of customer 7', 2],
  ])
  expect(await q.size()).toBe(0)
})

it("every line of the README's Queues code block is in examples/queue-tour.ts", () => {
  const readme = readFileSync(`${root}README.md`, 'utf8')
  const start = readme.indexOf('## Queues')
  expect(start).toBeGreaterThan(0)
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1))
  const example = readFileSync(`${root}examples/queue-tour.ts`, 'utf8')
  const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1])
  expect(blocks).toHaveLength(1)
  // The README imports the package; everything else is quoted as it runs.
  const lines = blocks[0]
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('import '))
  expect(lines.filter((l) => !example.includes(l))).toEqual([])
})
