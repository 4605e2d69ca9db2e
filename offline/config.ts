// The parts of the Serverless Framework (osls 4 / Serverless v3) plugin API the plugin uses, the
// JSON schemas it registers, and the reading of `custom.etcd` and `etcdQueue` events.
import type { QueueSubscription } from '../dispatch/subscriptions.js'
import { InvalidArgumentError } from '../lib/errors.js'
import { checkQueueSettings, type EtcdQueueEvent } from '../lib/queue-event.js'

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
  /** Use this etcd (comma-separated string or list) instead of starting one. */
  endpoints?: string | string[]
  /** Key of the deployable dispatcher function: it gets `ETCD_QUEUE_SUBSCRIPTIONS`; offline the plugin dispatches itself instead. */
  dispatcher?: string
  /** How the dispatcher invokes consumers (default `RequestResponse`). */
  invocationType?: 'Event' | 'RequestResponse'
  /** Linked source maps beside the bundles, offline and in artifacts (default false). */
  sourcemap?: boolean
}

/** The JSON schema osls checks `etcdQueue` events against (it only warns; queueSubscriptions checks). */
export const etcdQueueEventSchema = {
  type: 'object',
  properties: {
    queue: { type: 'string', minLength: 1 },
    priority: { type: 'boolean' },
    batchSize: { type: 'integer', minimum: 1, maximum: 1000 },
    visibilityTimeout: { type: 'integer', minimum: 1 },
    maxReceives: { type: 'integer', minimum: 1 },
    deadLetterQueue: { type: 'string', minLength: 1 },
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
        endpoints: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 }] },
        dispatcher: { type: 'string', minLength: 1 },
        invocationType: { enum: ['Event', 'RequestResponse'] },
        sourcemap: { type: 'boolean' },
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
  if (raw.invocationType !== undefined && raw.invocationType !== 'Event' && raw.invocationType !== 'RequestResponse') {
    throw new InvalidArgumentError(`custom.etcd.invocationType must be 'Event' or 'RequestResponse', got ${JSON.stringify(raw.invocationType)}`)
  }
  if (raw.dispatcher !== undefined && !serverless.service.getAllFunctions().includes(raw.dispatcher)) {
    throw new InvalidArgumentError(`custom.etcd.dispatcher names function ${JSON.stringify(raw.dispatcher)}, which is not in functions:`)
  }
  return raw
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
        concurrency: spec.concurrency,
      })
    }
  }
  return subscriptions
}

/** A logger in the CLI's own style: the v3 `log` util when osls passes one, else `serverless.cli.log`. */
export function pluginLog(serverless: ServerlessLike, utils?: PluginUtils): PluginLog {
  if (utils?.log && typeof utils.log.notice === 'function') return utils.log
  const write = (m: string) => (serverless.cli ? serverless.cli.log(m) : process.stderr.write(`${m}\n`))
  return Object.assign(write, { notice: write, info: write, warning: write, error: write, verbose: () => {} })
}
