// The queue side of the dispatcher: the Queue or PriorityQueue a subscription reads.
import type { Namespace } from 'etcd3'
import type { ReceiveOptions } from '../lib/queue/consumer.js'
import { PriorityQueue } from '../lib/queue/priority-queue.js'
import type { JsonMessage } from '../lib/queue/event.js'
import { consumerDeadLetter } from '../lib/queue/options.js'
import { Queue } from '../lib/queue/queue.js'
import type { QueueSubscription } from './subscriptions.js'

/** @deprecated use {@link JsonMessage}: the one message type, as a dispatched consumer sees it. */
export type ClaimedMessage = JsonMessage

/** What the dispatcher needs of a queue. */
export interface ReceivingQueue {
  receive(options: ReceiveOptions): Promise<JsonMessage[]>
  nack(receipt: string): Promise<void>
}

/**
 * The Queue (or PriorityQueue) a subscription reads, with its dead-letter and retry settings
 * (the defaults of `queueConsumer`: 5 receives, `dlq/<queue>`, 1–300 s back-off), so a message
 * whose invocations keep failing is retried with back-off and then dead-lettered by the claim.
 */
export function openQueue(client: Namespace, sub: QueueSubscription): ReceivingQueue {
  const settings = { ...consumerDeadLetter(sub.queue, sub), retryDelay: sub.retryDelay, maxRetryDelay: sub.maxRetryDelay }
  return sub.priority ? new PriorityQueue(client, sub.queue, settings) : new Queue(client, sub.queue, settings)
}
