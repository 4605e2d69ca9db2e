import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { Namespace } from 'etcd3'
import { checkPrefixCacheOptions, PrefixCache, type ConfigParse } from '../lib/config/prefix-cache.js'
import { sharedClient } from '../lib/core/client.js'
import { ConfigMissingError, ConfigStaleError } from '../lib/errors.js'
import { DEFAULT_CONFIG_MAX_STALE_MS } from '../lib/limits.js'
import { MAX_TIMER_MS } from '../lib/timers.js'
import { emit, type OnEvent } from './events.js'
import { validateOptions, type Schema } from './options.js'
import { waitBudget } from './scope.js'

/** What the handler gets: `context.etcd.config` (every value under the prefix, one revision) and `context.etcd.configRevision`. */
export interface ConfigContext<C> {
  etcd: { config: Readonly<C>; configRevision: bigint }
}

export interface EtcdConfigOptions<C extends object = Record<string, unknown>> {
  /** The key prefix of the configuration (`config/orders/`): `context.etcd.config` is keyed by what follows it. */
  prefix: string
  /** `'string'` (default), `'json'`, or a function of the raw value and the key: run once per change, not per invocation. */
  parse?: ConfigParse<C[keyof C]>
  /**
   * How long before the invocation's start the served values may last have been known to match
   * etcd, ms (default 30,000). Within it a warm invocation makes no request; past it (after a
   * freeze, a reconnect) one keys-only Range proves the values current first.
   */
  maxStaleMs?: number
  /** Keys (relative to the prefix) the handler cannot run without: missing, the invocation fails with a ConfigMissingError (500, not exposed). */
  required?: readonly (keyof C & string)[]
  /** Bytes of keys and values kept at most (default 8 MiB): more is a ConfigTooLargeError. */
  maxBytes?: number
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = { maxStaleMs: DEFAULT_CONFIG_MAX_STALE_MS } as const

const schema: Schema = {
  prefix: { type: 'lib', required: true },
  parse: { type: 'lib' },
  maxStaleMs: { type: 'integer', min: 0, max: MAX_TIMER_MS },
  required: { type: 'strings' },
  maxBytes: { type: 'lib' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * Configuration from etcd on `context.etcd.config`: every key under `prefix` at one revision,
 * typed by `C`. A thin adapter on {@link PrefixCache}: the cache belongs to this instance of the
 * middleware (so to the process: warm invocations share it), is loaded by the first
 * invocation and kept current by its watch. An invocation takes `cache.current({ maxStaleMs })`:
 * no request while the watch is live and the process was not frozen for long; after a thaw
 * that may have left the watch behind, one cheap Range proves the values current (or a reload
 * brings them) before the handler runs. `required` keys are checked on every invocation, on
 * the snapshot it gets. Holds nothing, so there is nothing to release.
 */
export function etcdConfig<C extends object = Record<string, unknown>>(
  options: EtcdConfigOptions<C>,
): MiddlewareObj<any, any, Error, Context & ConfigContext<C>> {
  const opts = validateOptions<EtcdConfigOptions<C> & typeof defaults>('etcdConfig', schema, defaults, options, (o) =>
    checkPrefixCacheOptions(o.prefix, { parse: o.parse, maxBytes: o.maxBytes }),
  )
  const required = [...(opts.required ?? [])]
  // Instance state on purpose: the cache serves every warm invocation of this process.
  let cache: PrefixCache<C[keyof C]> | undefined

  /** The cache, a new one when there is none yet or the last one failed (a closed client, a failed load). */
  const cacheOf = (): PrefixCache<C[keyof C]> => {
    if (cache?.usable) return cache
    cache?.close()
    const created = new PrefixCache<C[keyof C]>(opts.client ?? sharedClient(), opts.prefix, { parse: opts.parse, maxBytes: opts.maxBytes })
    cache = created
    created.onChange((event) =>
      emit(opts.onEvent, {
        type: event.type === 'reload' ? 'reloaded' : 'changed',
        primitive: 'config',
        name: opts.prefix,
        detail: {
          revision: String(event.revision),
          keys: event.changes.length,
          ...(event.type === 'reload' ? { reason: event.reason } : {}),
        },
      }),
    )
    return created
  }

  const before = async (request: Request<any, any, Error, Context & ConfigContext<C>>) => {
    // A warm invocation is served at once; its timer must not outlive it (one per invocation, each
    // armed until the invocation's deadline, would pile up in a busy process).
    const budget = waitBudget(request.context, MAX_TIMER_MS)
    const current = cacheOf()
    let snapshot: Awaited<ReturnType<typeof current.current>>
    try {
      snapshot = await current.current({ maxStaleMs: opts.maxStaleMs, signal: budget.signal })
    } catch (err) {
      if (err !== budget.signal.reason) throw err
      throw new ConfigStaleError(
        opts.maxStaleMs,
        `etcdConfig: the configuration under ${JSON.stringify(opts.prefix)} could not be proved current within the invocation's remaining time (${budget.ms} ms); check that etcd is reachable`,
        { cause: err },
      )
    } finally {
      budget.stop()
    }
    const missing = required.filter((key) => !(key in snapshot.values))
    if (missing.length > 0) {
      throw new ConfigMissingError(
        missing,
        `etcdConfig: required configuration missing under ${JSON.stringify(opts.prefix)} at revision ${snapshot.revision}: ${missing.map((k) => JSON.stringify(k)).join(', ')}. ` +
          `Put them (middy-etcd config set ${opts.prefix}<key> <value>) or remove them from \`required\``,
      )
    }
    request.context.etcd = {
      ...request.context.etcd,
      config: snapshot.values as unknown as Readonly<C>,
      configRevision: snapshot.revision,
    }
  }

  return { before }
}
