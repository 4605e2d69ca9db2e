import type { MiddlewareObj, Request } from '@middy/core'
import type { Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import { DoubleBarrier } from '../lib/barriers/double-barrier.js'
import { WaitTimeoutError } from '../lib/errors.js'
import { emit, type OnEvent } from './events.js'
import { ScopeUses } from './scope.js'
import { resolveName, type NameOption } from './name.js'
import { validateOptions, type Schema } from './options.js'

export interface EtcdDoubleBarrierOptions<TEvent = any> {
  /** The barrier name, or a function of the event and context (e.g. a batch id from the event). */
  name: NameOption<TEvent>
  /** How many invocations meet on the barrier. */
  count: number
  /** Most time to wait at each side of the barrier, ms; always capped by the remaining time. */
  waitMs?: number
  /** Lease TTL in seconds (default 10): how long a crashed participant keeps its place. */
  ttl?: number
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = { waitMs: Infinity, ttl: 10 } as const

const schema: Schema = {
  name: { type: 'nameOrFunction', required: true },
  count: { type: 'integer', min: 1, required: true },
  waitMs: { type: 'number', min: 0 },
  ttl: { type: 'seconds' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * Runs the handler between the two sides of a double barrier: `count` invocations enter before
 * any handler starts, and none finishes before every handler has. A participant that crashes
 * drops out when its lease ends, so the others can still leave.
 */
export function etcdDoubleBarrier<TEvent = any>(options: EtcdDoubleBarrierOptions<TEvent>): MiddlewareObj<TEvent> {
  const opts = validateOptions<EtcdDoubleBarrierOptions<TEvent> & typeof defaults>('etcdDoubleBarrier', schema, defaults, options)
  const uses = new ScopeUses('etcdDoubleBarrier')
  const client = () => opts.client ?? sharedClient()

  const timedOut = (name: string, side: string, ms: number) =>
    new WaitTimeoutError(
      `etcdDoubleBarrier: ${side} of barrier ${JSON.stringify(name)} not passed within ${ms} ms (fewer than ${opts.count} participants); raise waitMs or the function timeout`,
    )

  const before = async (request: Request<TEvent>) => {
    const name = resolveName('etcdDoubleBarrier', opts.name, request)
    const use = uses.enter(request, client(), request.context)
    const { scope } = use
    const entry = scope.waitBudget(opts.waitMs)
    const started = performance.now()
    const barrier = await scope.withSession(opts.ttl, async (session) => {
      const barrier = new DoubleBarrier(session, name, opts.count)
      try {
        await barrier.enter({ signal: entry.signal })
      } catch (err) {
        throw err === entry.signal.reason ? timedOut(name, 'entry', entry.ms) : err
      }
      return barrier
    })
    emit(opts.onEvent, { type: 'acquired', primitive: 'doubleBarrier', name, key: barrier.key, waitedMs: performance.now() - started })
    use.onRelease(async () => {
      const exit = scope.waitBudget(opts.waitMs)
      const leaving = performance.now()
      try {
        await barrier.leave({ signal: exit.signal })
      } catch (err) {
        throw err === exit.signal.reason ? timedOut(name, 'exit', exit.ms) : err
      }
      emit(opts.onEvent, { type: 'released', primitive: 'doubleBarrier', name, waitedMs: performance.now() - leaving })
    })
  }

  const leave = (request: Request<TEvent>) => uses.leave(request)

  return { before, after: leave, onError: leave }
}
