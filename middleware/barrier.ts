import type { MiddlewareObj, Request } from '@middy/core'
import type { Namespace } from 'etcd3'
import { Barrier } from '../lib/barriers/barrier.js'
import { sharedClient } from '../lib/core/client.js'
import { WaitTimeoutError } from '../lib/errors.js'
import { emit, type OnEvent } from './events.js'
import { waitBudget } from './scope.js'
import { resolveName, type NameOption } from './name.js'
import { validateOptions, type Schema } from './options.js'

export interface EtcdBarrierOptions<TEvent = any> {
  /** The barrier name (the key a `Barrier.hold()` creates), or a function of the event and context. */
  name: NameOption<TEvent>
  /** Most time to wait, ms; always capped by the invocation's remaining time. */
  waitMs?: number
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = { waitMs: Infinity } as const

const schema: Schema = {
  name: { type: 'nameOrFunction', required: true },
  waitMs: { type: 'number', min: 0 },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * Holds the handler back until the barrier `name` is released (or was never held). Holds
 * nothing itself, so there is nothing to release afterwards.
 */
export function etcdBarrier<TEvent = any>(options: EtcdBarrierOptions<TEvent>): MiddlewareObj<TEvent> {
  const opts = validateOptions<EtcdBarrierOptions<TEvent> & typeof defaults>('etcdBarrier', schema, defaults, options)

  const before = async (request: Request<TEvent>) => {
    const name = resolveName('etcdBarrier', opts.name, request)
    const barrier = new Barrier(opts.client ?? sharedClient(), name)
    const budget = waitBudget(request.context, opts.waitMs)
    const started = performance.now()
    try {
      await barrier.wait({ signal: budget.signal })
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      throw new WaitTimeoutError(
        `etcdBarrier: barrier ${JSON.stringify(name)} still held after ${budget.ms} ms; raise waitMs or the function timeout`,
      )
    } finally {
      budget.stop()
    }
    emit(opts.onEvent, { type: 'acquired', primitive: 'barrier', name, waitedMs: performance.now() - started })
  }

  return { before }
}
