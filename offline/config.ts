// The parts of the Serverless Framework (osls 4 / Serverless v3) plugin API the plugin uses, the
// JSON schemas it registers, and the reading of `custom.etcd` and `etcdQueue` events.
import { readFileSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import type { QueueSubscription } from '../dispatch/subscriptions.js'
import { configEntries } from '../lib/config/seed.js'
import { InvalidArgumentError } from '../lib/errors.js'
import { checkQueueSettings, type EtcdQueueEvent } from '../lib/queue/event.js'
import { consumerDeadLetter } from '../lib/queue/options.js'
import { lineOf, type EtcdLine } from './etcd-release.js'

export type { EtcdQueueEvent }

/** The v3 logger passed to plugins (`log.notice`, …), or a stand-in built on `serverless.cli.log`. */
export interface PluginLog {
  (message: string): void
  notice(message: string): void
  info(message: string): void
  warning(message: string): void
  error(message: string): void
  verbose(message: string): void
}

/** The third constructor argument osls gives plugins. */
export interface PluginUtils {
  log?: PluginLog
}

/** One entry of a function's `events:`, keyed by its type (`httpApi`, `etcdQueue`, …). */
export interface FunctionEvent {
  [type: string]: unknown
}

/** A function of serverless.yml, as far as the plugin reads or changes it. */
export interface FunctionObject {
  handler?: string
  /** The deployed name, `${service}-${stage}-${key}` unless set; osls fills it in. */
  name?: string
  runtime?: string
  /** A container image function: nothing to bundle. */
  image?: unknown
  environment?: Record<string, unknown>
  events?: FunctionEvent[]
  package?: { artifact?: string; patterns?: string[]; individually?: boolean; disable?: boolean }
}

/** The parts of osls's `serverless` object the plugin uses. */
export interface ServerlessLike {
  serviceDir: string
  cli?: { log(message: string): void }
  configSchemaHandler?: {
    defineFunctionEvent(provider: string, event: string, schema: object): void
    defineCustomProperties(schema: object): void
  }
  service: {
    service: string
    custom?: Record<string, unknown>
    provider: { name?: string; stage?: string; region?: string; runtime?: string; environment?: Record<string, unknown> }
    package?: { artifact?: string; individually?: boolean; patterns?: string[]; path?: string }
    plugins?: string[] | { modules?: string[] }
    getAllFunctions(): string[]
    getFunction(key: string): FunctionObject
  }
}

/** `custom.etcd` in serverless.yml. */
export interface EtcdPluginConfig {
  /** Members of the local etcd that `serverless offline` starts: 1 (default) or 3. */
  nodes?: 1 | 3
  /** Client port of the local etcd (default: a free port). */
  port?: number
  /** Release of the local etcd: '3.7', '3.6', '3.5' or '3.4' (default `ETCD_VERSION`, else 3.7 when built, else `etcd` on PATH). */
  version?: EtcdLine
  /** Lease checkpointing in the local etcd (default true; see the README's lease-checkpoint advice). */
  leaseCheckpoint?: boolean
  /** Use this etcd (comma-separated string or list) instead of starting one. */
  endpoints?: string | string[]
  /** Key of the deployable dispatcher function: it gets `ETCD_QUEUE_SUBSCRIPTIONS`; offline the plugin dispatches itself instead. */
  dispatcher?: string
  /** How the dispatcher invokes consumers (default `RequestResponse`). */
  invocationType?: 'Event' | 'RequestResponse'
  /**
   * Source maps. Offline they are on unless this is `false` (stack traces point at the sources);
   * `true` also ships them in artifacts, with `--enable-source-maps` in the functions' NODE_OPTIONS.
   */
  sourcemap?: boolean
  /**
   * Keys put into etcd at `serverless offline` start, so a local run has its configuration
   * (what `etcdConfig` reads) without a script: a map of key → value (a string stored as it
   * is, any other value as its JSON text), or the path of a JSON file holding one (relative to
   * the service directory). Keys are whole keys (`config/orders/limit`); existing ones are overwritten.
   */
  seed?: Record<string, unknown> | string
  /**
   * The operations page (`middy-etcd ui`) served offline on 127.0.0.1: `false` turns it off;
   * `port` (default {@link DEFAULT_UI_PORT}, else any free one), `allowActions` (default false:
   * read-only) as the command's flags.
   */
  ui?: false | { port?: number; allowActions?: boolean }
}

/** The port the offline operations page asks for first (serverless-offline takes 3000-3002). */
export const DEFAULT_UI_PORT = 3003

/** The JSON schema osls checks `etcdQueue` events against (it only warns; queueSubscriptions checks). */
export const etcdQueueEventSchema = {
  type: 'object',
  properties: {
    queue: { type: 'string', minLength: 1 },
    priority: { type: 'boolean' },
    batchSize: { type: 'integer', minimum: 1, maximum: 1000 },
    visibilityTimeout: { type: 'integer', minimum: 1 },
    maxReceives: { type: 'number', minimum: 1 },
    deadLetterQueue: { type: 'string', minLength: 1 },
    retryDelay: { type: 'integer', minimum: 0 },
    maxRetryDelay: { type: 'integer', minimum: 0 },
    concurrency: { type: 'integer', minimum: 1, maximum: 100 },
  },
  required: ['queue'],
  additionalProperties: false,
}

/** The JSON schema of `custom.etcd`. */
export const customEtcdSchema = {
  properties: {
    etcd: {
      type: 'object',
      properties: {
        nodes: { enum: [1, 3] },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        version: { enum: ['3.4', '3.5', '3.6', '3.7', 3.4, 3.5, 3.6, 3.7] },
        leaseCheckpoint: { type: 'boolean' },
        endpoints: {
          anyOf: [
            { type: 'string', minLength: 1 },
            { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
          ],
        },
        dispatcher: { type: 'string', minLength: 1 },
        invocationType: { enum: ['Event', 'RequestResponse'] },
        sourcemap: { type: 'boolean' },
        seed: { anyOf: [{ type: 'object' }, { type: 'string', minLength: 1 }] },
        ui: {
          anyOf: [
            { const: false },
            {
              type: 'object',
              properties: { port: { type: 'integer', minimum: 0, maximum: 65535 }, allowActions: { type: 'boolean' } },
              additionalProperties: false,
            },
          ],
        },
      },
      additionalProperties: false,
    },
  },
}

/** Reads `custom.etcd`, checking what osls's schema check cannot (it only warns by default). */
export function readConfig(serverless: ServerlessLike): EtcdPluginConfig {
  const raw = (serverless.service.custom?.etcd ?? {}) as EtcdPluginConfig
  if (typeof raw !== 'object' || raw === null) throw new InvalidArgumentError('custom.etcd must be an object, e.g. { nodes: 1 }')
  if (raw.nodes !== undefined && raw.nodes !== 1 && raw.nodes !== 3) {
    throw new InvalidArgumentError(`custom.etcd.nodes must be 1 or 3, got ${JSON.stringify(raw.nodes)}`)
  }
  if (raw.port !== undefined && (!Number.isInteger(raw.port) || raw.port < 1 || raw.port > 65535)) {
    throw new InvalidArgumentError(`custom.etcd.port must be a TCP port number, got ${JSON.stringify(raw.port)}`)
  }
  // YAML reads `version: 3.7` as a number: take it as the line it spells.
  if (raw.version !== undefined) raw.version = lineOf(String(raw.version), 'custom.etcd.version')
  if (raw.leaseCheckpoint !== undefined && typeof raw.leaseCheckpoint !== 'boolean') {
    throw new InvalidArgumentError(`custom.etcd.leaseCheckpoint must be true or false, got ${JSON.stringify(raw.leaseCheckpoint)}`)
  }
  if (raw.invocationType !== undefined && raw.invocationType !== 'Event' && raw.invocationType !== 'RequestResponse') {
    throw new InvalidArgumentError(
      `custom.etcd.invocationType must be 'Event' or 'RequestResponse', got ${JSON.stringify(raw.invocationType)}`,
    )
  }
  if (raw.ui !== undefined && raw.ui !== false) {
    const ui = raw.ui as Record<string, unknown>
    if (typeof ui !== 'object' || ui === null)
      throw new InvalidArgumentError(`custom.etcd.ui must be false or { port, allowActions }, got ${JSON.stringify(raw.ui)}`)
    if (ui.port !== undefined && (!Number.isInteger(ui.port) || (ui.port as number) < 0 || (ui.port as number) > 65535))
      throw new InvalidArgumentError(`custom.etcd.ui.port must be a TCP port number (0: any free one), got ${JSON.stringify(ui.port)}`)
    if (ui.allowActions !== undefined && typeof ui.allowActions !== 'boolean')
      throw new InvalidArgumentError(`custom.etcd.ui.allowActions must be true or false, got ${JSON.stringify(ui.allowActions)}`)
  }
  if (raw.dispatcher !== undefined && !serverless.service.getAllFunctions().includes(raw.dispatcher)) {
    throw new InvalidArgumentError(`custom.etcd.dispatcher names function ${JSON.stringify(raw.dispatcher)}, which is not in functions:`)
  }
  if (raw.seed !== undefined) seedEntries(serverless, raw.seed)
  return raw
}

/**
 * The keys and values of `custom.etcd.seed`: the map itself, or the JSON file it names
 * (relative to the service directory). Checked when the config is read, before etcd starts.
 */
export function seedEntries(serverless: ServerlessLike, seed: unknown): [string, Buffer][] {
  if (typeof seed !== 'string') return configEntries(seed, 'custom.etcd.seed')
  const file = isAbsolute(seed) ? seed : join(serverless.serviceDir, seed)
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new InvalidArgumentError(
      `custom.etcd.seed: cannot read ${file}: ${(err as Error).message}; give a JSON file of key → value or the map itself`,
    )
  }
  let map: unknown
  try {
    map = JSON.parse(text)
  } catch (err) {
    throw new InvalidArgumentError(
      `custom.etcd.seed: ${file} is not JSON (${(err as Error).message}); it must hold an object of key → value`,
    )
  }
  return configEntries(map, `custom.etcd.seed (${file})`)
}

/** Every `etcdQueue` event of the service, as dispatcher subscriptions naming the deployed function. */
export function queueSubscriptions(serverless: ServerlessLike): QueueSubscription[] {
  const { service } = serverless
  const subscriptions: QueueSubscription[] = []
  for (const key of service.getAllFunctions()) {
    const fn = service.getFunction(key)
    for (const event of fn.events ?? []) {
      if (!('etcdQueue' in event)) continue
      const spec: unknown = event.etcdQueue
      // osls only warns about a config that fails its schema: check it here, as everywhere.
      checkQueueSettings(spec, `function ${key}, etcdQueue event`)
      subscriptions.push({
        function: fn.name ?? `${service.service}-${service.provider.stage ?? 'dev'}-${key}`,
        functionKey: key,
        queue: spec.queue,
        priority: spec.priority ?? false,
        batchSize: spec.batchSize,
        visibilityTimeout: spec.visibilityTimeout,
        maxReceives: spec.maxReceives,
        deadLetterQueue: spec.deadLetterQueue,
        retryDelay: spec.retryDelay,
        maxRetryDelay: spec.maxRetryDelay,
        concurrency: spec.concurrency,
      })
    }
  }
  checkQueueNames(subscriptions)
  return subscriptions
}

/**
 * The name checks the plugin can make before anything runs (a consumer checks its own options
 * against the dispatch on its first invocation): one queue read as a Queue by one function and
 * as a PriorityQueue by another; a queue nested in another subscribed queue (`a` would claim
 * the items of `a/b`: its prefix `a/` covers them); a dead-letter queue that is its own queue or
 * nested in it (dead letters would be claimed again).
 */
export function checkQueueNames(subscriptions: QueueSubscription[]): void {
  const who = (s: QueueSubscription) => `function ${s.functionKey ?? s.function}`
  for (const a of subscriptions) {
    const dlq = consumerDeadLetter(a.queue, a).deadLetterQueue
    if (dlq !== undefined && (`${dlq}/`.startsWith(`${a.queue}/`) || `${a.queue}/`.startsWith(`${dlq}/`))) {
      throw new InvalidArgumentError(
        `${who(a)}, etcdQueue event: deadLetterQueue ${JSON.stringify(dlq)} overlaps its queue ${JSON.stringify(a.queue)}; name one outside it (the default is dlq/<queue>)`,
      )
    }
    for (const b of subscriptions) {
      if (a === b) continue
      if (a.queue === b.queue && (a.priority ?? false) !== (b.priority ?? false)) {
        throw new InvalidArgumentError(
          `etcdQueue events: ${who(a)} reads ${JSON.stringify(a.queue)} as a ${a.priority ? 'PriorityQueue' : 'Queue'} but ${who(b)} as a ${b.priority ? 'PriorityQueue' : 'Queue'}; make both say the same priority`,
        )
      }
      if (b.queue.startsWith(`${a.queue}/`)) {
        throw new InvalidArgumentError(
          `etcdQueue events: queue ${JSON.stringify(b.queue)} (${who(b)}) is nested in queue ${JSON.stringify(a.queue)} (${who(a)}), whose consumers would take its messages too; give it a name outside ${JSON.stringify(`${a.queue}/`)}`,
        )
      }
    }
  }
}

/** A logger in the CLI's own style: the v3 `log` util when osls passes one, else `serverless.cli.log`. */
export function pluginLog(serverless: ServerlessLike, utils?: PluginUtils): PluginLog {
  if (utils?.log && typeof utils.log.notice === 'function') return utils.log
  const write = (m: string) => (serverless.cli ? serverless.cli.log(m) : process.stderr.write(`${m}\n`))
  return Object.assign(write, { notice: write, info: write, warning: write, error: write, verbose: () => {} })
}
