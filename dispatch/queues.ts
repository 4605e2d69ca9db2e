// The queue side of the dispatcher: the Queue or PriorityQueue a subscription reads.
import type { Namespace } from 'etcd3'
import type { Message, ReceiveOptions } from '../lib/claims.js'
import { PriorityQueue } from '../lib/priority-queue.js'
import { Queue } from '../lib/queue.js'
import type { QueueSubscription } from './subscriptions.js'

/** A claimed message, as `receive` returns it. */
export type ClaimedMessage = Pick<Message, 'id' | 'key' | 'value' | 'receiveCount' | 'priority' | 'receipt'>

/** What the dispatcher needs of a queue. */
export interface ReceivingQueue {
  receive(options: ReceiveOptions): Promise<ClaimedMessage[]>
  nack(receipt: string): Promise<void>
}

/** The Queue (or PriorityQueue) a subscription reads, with its dead-letter settings. */
export function openQueue(client: Namespace, sub: QueueSubscription): ReceivingQueue {
  const deadLetter = sub.maxReceives === undefined ? {} : { maxReceives: sub.maxReceives, deadLetterQueue: sub.deadLetterQueue }
  return sub.priority ? new PriorityQueue(client, sub.queue, deadLetter) : new Queue(client, sub.queue, deadLetter)
}
