import type { Context } from 'aws-lambda'
import type { Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import { InvalidArgumentError, WaitTimeoutError } from '../lib/errors.js'
import { Isolation, runSTM, type STM } from '../lib/stm/stm.js'
import { waitBudget } from './scope.js'
import { validateOptions, type Schema } from './options.js'

export interface WithSTMOptions {
  /** Default `Isolation.SerializableSnapshot`. */
  isolation?: Isolation
  /** Give up with ConflictError after this many conflicting runs (default: until time runs out). */
  maxAttempts?: number
  /** Keys read in one round trip at the start of every run. */
  prefetch?: string[]
  /** Default: `sharedClient()`. */
  client?: Namespace
}

const schema: Schema = {
  isolation: { type: 'enum', values: Object.values(Isolation) },
  maxAttempts: { type: 'integer', min: 1 },
  prefetch: { type: 'object' },
  client: { type: 'object' },
}

type STMHandler<TEvent, TResult> = (event: TEvent, context: Context & { etcd: { stm: STM } }) => TResult | Promise<TResult>

/**
 * Runs `handler` as the body of an STM transaction, with `context.etcd.stm`: its reads and
 * writes commit together when it returns, and on a conflict it runs again, until the
 * invocation's remaining time is used up. A wrapper, not a middleware, because only a wrapper
 * can re-run the handler; wrap it in `middy()` like any handler. The handler may run more than
 * once, so it must not have side effects outside the STM; a throw writes nothing.
 */
export function withSTM<TEvent = any, TResult = any>(handler: STMHandler<TEvent, TResult>, options: WithSTMOptions = {}) {
  const opts = validateOptions<WithSTMOptions>('withSTM', schema, {}, options)
  if (typeof handler !== 'function') throw new InvalidArgumentError('withSTM: the first argument must be the handler function')

  return async (event: TEvent, context: Context & { etcd?: Record<string, unknown> }): Promise<TResult> => {
    const budget = waitBudget(context)
    const run = (stm: STM) => {
      context.etcd = { ...context.etcd, stm }
      return handler(event, context as Context & { etcd: { stm: STM } })
    }
    try {
      const { result } = await runSTM(opts.client ?? sharedClient(), run, {
        isolation: opts.isolation,
        maxAttempts: opts.maxAttempts,
        prefetch: opts.prefetch,
        signal: budget.signal,
      })
      return result
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      throw new WaitTimeoutError(
        `withSTM: the transaction kept conflicting and did not commit within the invocation's remaining time (${budget.ms} ms); nothing was written`,
      )
    }
  }
}
