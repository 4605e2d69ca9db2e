// The queue features in one pass: a delayed message, a message group, a batch acked at once,
// failures retried with back-off and dead-lettered after 5 deliveries, and a redrive.
import { Queue, sharedClient, type Message } from '../lib/index.js'

/** What the tour received: the first batch, and what came after it. */
export async function queueTour(): Promise<{ batch: Message[]; later: Message[] }> {
  const jobs = new Queue(sharedClient(), 'readme/jobs', { maxReceives: 5, deadLetterQueue: 'dlq/readme/jobs' })
  await jobs.enqueue('now')
  await jobs.enqueue('in a second', { delayMs: 1_000 })
  await jobs.enqueue('first of customer 7', { group: 'customer-7' })
  await jobs.enqueue('second of customer 7', { group: 'customer-7' }) // waits for the first
  const batch = await jobs.receive({ max: 10, visibilityTimeout: 30 })
  await jobs.ackMany(batch) // 'now' and 'first of customer 7'; the rest come once due / their turn
  const later = await jobs.receive({ max: 10, signal: AbortSignal.timeout(10_000) })
  for (const m of later) await jobs.nack(m) // failed: back in 1 s, then 2, 4, … ; dead-lettered after 5
  await jobs.redrive({ from: 'dlq/readme/jobs' }) // moves dead letters back (none here)
  return { batch, later }
}
