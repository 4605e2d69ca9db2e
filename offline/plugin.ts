// The Serverless Framework plugin (`plugins: [serverless-offline, middy-etcd/offline]`): a local
// etcd for `serverless offline`, `etcdQueue` function events delivered by the dispatcher, and
// bundled handlers — offline and in `serverless package` artifacts — that carry what etcd3
// needs at run time.
import { connect } from 'node:net'
import { dirname, join } from 'node:path'
import { createClient, type EtcdClient } from '../lib/core/client.js'
import {
  customEtcdSchema,
  DEFAULT_UI_PORT,
  etcdQueueEventSchema,
  pluginLog,
  queueSubscriptions,
  readConfig,
  seedEntries,
  type PluginLog,
  type PluginUtils,
  type ServerlessLike,
} from './config.js'
import { lambdaInvoker } from '../dispatch/lambda-invoker.js'
import { watchDeadLetters } from '../dispatch/dead-letters.js'
import { runDispatcher } from '../dispatch/dispatcher.js'
import { QueueMismatchError } from '../lib/errors.js'
import { putConfig } from '../lib/config/seed.js'
import type { QueueSubscription } from '../dispatch/subscriptions.js'
import { reapStale, startLocalEtcd, STATE_DIR, watchSession, type LocalEtcd } from './local-etcd.js'
import { etcdReleases } from './etcd-release.js'
import { buildForOffline, offlineBuildDir, type OfflineBuild } from './offline-build.js'
import { packageFunctions } from './package.js'
import { startUiServer, type UiServer } from '../cli/ui/server.js'

export { STATE_DIR }

/**
 * The middy-etcd Serverless plugin. Offline (`serverless offline` and `serverless offline start`)
 * it starts a local etcd (or uses `custom.etcd.endpoints`), puts `ETCD_ENDPOINTS` in every
 * function's environment, bundles the handlers that use middy-etcd (as `package` does), delivers
 * queued messages to `etcdQueue` functions, and stops etcd on exit. On `serverless package` it
 * builds the artifacts of the Node functions that use middy-etcd — bundles (etcd3's `.proto`
 * files parsed into them), the `package.patterns` files — and leaves every other function to the framework.
 */
export default class MiddyEtcdPlugin {
  readonly hooks: Record<string, () => unknown>
  private readonly log: PluginLog
  private started?: Promise<void>
  private local?: LocalEtcd
  private client?: EtcdClient
  private dispatcher?: { abort: AbortController; done: Promise<void> }
  private build?: OfflineBuild
  private ui?: UiServer

  constructor(
    private readonly serverless: ServerlessLike,
    private readonly options: Record<string, unknown> = {},
    utils?: PluginUtils,
  ) {
    this.log = pluginLog(serverless, utils)
    const schemas = serverless.configSchemaHandler
    if (schemas) {
      schemas.defineFunctionEvent('aws', 'etcdQueue', etcdQueueEventSchema)
      schemas.defineCustomProperties(customEtcdSchema)
    }
    this.hooks = {
      // `serverless offline` fires only this one (and exits from offline:start) …
      'before:offline:start': () => this.startOffline(),
      // … `serverless offline start` fires init … end instead.
      'before:offline:start:init': () => this.startOffline(),
      'before:offline:start:end': () => this.stopOffline(),
      'before:package:createDeploymentArtifacts': () => this.beforePackage(),
      // `osls deploy function -f X` and `osls package function -f X` package one function.
      'before:package:function:package': () => this.beforePackage(String(this.options.function ?? '')),
    }
  }

  /** Starts (or connects to) etcd, injects the environment and starts the dispatcher. Once. */
  startOffline(): Promise<void> {
    this.started ??= this.doStartOffline()
    return this.started
  }

  private async doStartOffline() {
    const config = readConfig(this.serverless)
    let endpoints: string[]
    if (config.endpoints !== undefined) {
      endpoints = (Array.isArray(config.endpoints) ? config.endpoints : config.endpoints.split(',')).map((e) => e.trim()).filter(Boolean)
      this.client = createClient({ endpoints })
      await this.checkReachable(this.client, endpoints)
      this.log.notice(`etcd: using ${endpoints.join(', ')} (custom.etcd.endpoints)`)
    } else {
      const stateDir = join(this.serverless.serviceDir, STATE_DIR)
      for (const stale of reapStale(stateDir)) {
        this.log.warning(
          `etcd: replaced the etcd (pid ${stale.etcdPids.join(', ')}) left by a killed offline session (pid ${stale.cliPid})`,
        )
      }
      const build = offlineBuildDir(stateDir)
      this.local = await startLocalEtcd({
        stateDir,
        nodes: config.nodes ?? 1,
        port: config.port,
        version: config.version,
        leaseCheckpoint: config.leaseCheckpoint,
        // If the CLI is killed, its watchdog removes the offline build too (built below).
        alsoRemove: [build],
        rmdirs: [dirname(build)],
      })
      // `serverless offline` ends in process.exit without later hooks: stop etcd synchronously.
      process.once('exit', () => this.local?.stopSync())
      endpoints = this.local.endpoints
      this.client = createClient({ endpoints })
      const pids = this.local.cluster.pids().join(', ')
      const { release } = this.local.cluster
      this.log.notice(
        `etcd: listening on ${endpoints.join(', ')} (${endpoints.length} member${endpoints.length > 1 ? 's' : ''}, pid ${pids}, etcd ${release.version})`,
      )
      const { default: newest, versions } = etcdReleases()
      if (config.version === undefined && !process.env.ETCD_VERSION && release.line !== newest) {
        this.log.warning(
          `etcd: ${release.bin} is etcd ${release.version}; the default is ${versions[newest]}: node node_modules/middy-etcd/etcd/build.mjs builds it (Go 1.26), or set custom.etcd.version`,
        )
      }
    }
    if (config.seed !== undefined) await this.seed(this.client, config.seed)
    const subscriptions = queueSubscriptions(this.serverless)
    this.injectEnvironment(endpoints, subscriptions, config.dispatcher)
    this.build = await buildForOffline(this.serverless, this.log, {
      stateDir: join(this.serverless.serviceDir, STATE_DIR),
      sourcemap: config.sourcemap,
      reloadHandler: Boolean(this.offlineOption('reloadHandler')),
    })
    if (this.build) {
      process.once('exit', () => this.build?.stopSync())
      // With custom.etcd.endpoints no local etcd's watchdog runs: one for the build alone.
      if (!this.local) watchSession({ etcdPids: [], remove: [this.build.dir], rmdirs: [dirname(this.build.dir)] })
    }
    if (subscriptions.length > 0) this.startDispatcher(subscriptions, config.invocationType ?? 'RequestResponse')
    if (config.ui !== false) await this.startUi(config.ui ?? {})
  }

  /** The operations page on 127.0.0.1 (its preferred port, else any free one), over the same client. */
  private async startUi(options: { port?: number; allowActions?: boolean }) {
    const serve = (port: number) => startUiServer({ client: this.client!, port, allowActions: options.allowActions === true })
    const port = options.port ?? DEFAULT_UI_PORT
    try {
      this.ui = await serve(port).catch((err: NodeJS.ErrnoException) => {
        // The default port taken (another offline session): any free one will do; a port the user chose must be free.
        if (err.code === 'EADDRINUSE' && options.port === undefined) return serve(0)
        throw err
      })
    } catch (err) {
      this.log.warning(`etcd: the operations page did not start: ${(err as Error).message} (set custom.etcd.ui.port, or ui: false)`)
      return
    }
    this.log.notice(`etcd: operations page on ${this.ui.url} (${options.allowActions ? 'actions allowed' : 'read-only'})`)
  }

  /** Puts the keys of `custom.etcd.seed` (before any function can run). */
  async seed(client: EtcdClient, seed: unknown): Promise<void> {
    const entries = seedEntries(this.serverless, seed)
    const { revision, txns } = await putConfig(client, '', entries)
    this.log.notice(
      `etcd: seeded ${entries.length} key${entries.length === 1 ? '' : 's'} from custom.etcd.seed${typeof seed === 'string' ? ` (${seed})` : ''} in ${txns} transaction${txns === 1 ? '' : 's'}, revision ${revision}`,
    )
  }

  /** Stops the dispatcher and the local etcd (graceful; the exit hook is the fallback). */
  async stopOffline(): Promise<void> {
    if (!this.started) return
    await this.started.catch(() => {})
    if (this.dispatcher) {
      this.dispatcher.abort.abort()
      // In-flight invocations get a moment; unacked messages come back after their visibility timeout.
      await Promise.race([this.dispatcher.done, new Promise((r) => setTimeout(r, 3000).unref())])
    }
    await this.ui?.close()
    this.client?.close()
    await this.build?.stop()
    if (this.local) {
      await this.local.stop()
      this.log.notice('etcd: stopped')
    }
  }

  private offlineOption(name: string): unknown {
    const custom = (this.serverless.service.custom?.['serverless-offline'] ?? {}) as Record<string, unknown>
    return this.options[name] ?? custom[name]
  }

  /** The Lambda Invoke endpoint serverless-offline serves. */
  lambdaEndpoint(): { host: string; port: number; url: string } {
    const host = String(this.offlineOption('host') ?? 'localhost')
    const port = Number(this.offlineOption('lambdaPort') ?? 3002)
    return { host, port, url: `http://${host}:${port}` }
  }

  private injectEnvironment(endpoints: string[], subscriptions: QueueSubscription[], dispatcherKey?: string) {
    const { service } = this.serverless
    const value = endpoints.join(',')
    // Handlers run in workers that see only the service's environment (plus AWS_*), so the
    // endpoints go into the service config, not process.env.
    service.provider.environment ??= {}
    const env = service.provider.environment
    env.ETCD_ENDPOINTS = value
    env.MIDDY_ETCD_LAMBDA_ENDPOINT = this.lambdaEndpoint().url
    for (const key of service.getAllFunctions()) {
      const fn = service.getFunction(key)
      // A function-level value (e.g. the cloud cluster) would shadow the local one.
      if (fn.environment && 'ETCD_ENDPOINTS' in fn.environment) fn.environment.ETCD_ENDPOINTS = value
    }
    if (dispatcherKey) {
      const fn = service.getFunction(dispatcherKey)
      fn.environment = { ...fn.environment, ETCD_QUEUE_SUBSCRIPTIONS: JSON.stringify(subscriptions) }
      // Offline this process dispatches; the scheduled dispatcher function would only compete.
      const scheduled = (fn.events ?? []).some((e) => 'schedule' in e)
      fn.events = (fn.events ?? []).filter((e) => !('schedule' in e))
      if (scheduled) this.log.info(`etcd: offline, ${dispatcherKey} is not scheduled (the plugin dispatches)`)
    }
    this.log.notice(`etcd: ETCD_ENDPOINTS=${value} injected into ${service.getAllFunctions().length} functions`)
  }

  private startDispatcher(subscriptions: QueueSubscription[], invocationType: 'Event' | 'RequestResponse') {
    const client = this.client!
    const abort = new AbortController()
    const lambda = this.lambdaEndpoint()
    const invoke = lambdaInvoker({ endpoint: lambda.url, region: this.serverless.service.provider.region, invocationType })
    for (const s of subscriptions) {
      this.log.notice(
        `etcdQueue: ${s.queue}${s.priority ? ' (priority)' : ''} → ${s.functionKey ?? s.function} (batch ${s.batchSize ?? 10})`,
      )
    }
    // Wherever a message's last delivery failed (the consumer's nack, ours, or a claim), say where it went.
    watchDeadLetters(
      client,
      subscriptions,
      (d) =>
        this.log.warning(
          `etcdQueue: message ${d.id} of ${d.queues.join(', ')} was dead-lettered: now id ${d.deadLetterId} in ${d.deadLetterQueue} (middy-etcd queue redrive ${d.deadLetterQueue} moves it back)`,
        ),
      abort.signal,
    )
    const done = (async () => {
      // serverless-offline opens its Invoke endpoint after our hook: wait for it.
      await waitForPort(lambda.host, lambda.port, abort.signal)
      await runDispatcher({
        client,
        subscriptions,
        invoke,
        signal: abort.signal,
        onDispatch: (s, messages) =>
          this.log.notice(
            `etcdQueue: ${s.queue} → ${s.functionKey ?? s.function}: ${messages.length} message${messages.length > 1 ? 's' : ''} (${messages.map((m) => m.id).join(', ')})`,
          ),
        onResult: (r) => {
          if (!r.outcome.ok && r.outcome.errorType !== 'QueueMismatchError')
            this.log.warning(
              `etcdQueue: ${r.subscription.functionKey ?? r.subscription.function} failed (${r.outcome.error}); ${r.messageIds.length} message(s) released for redelivery after their retry delay`,
            )
          else if (r.outcome.failedIds?.length)
            this.log.warning(
              `etcdQueue: ${r.subscription.functionKey ?? r.subscription.function} reported ${r.outcome.failedIds.length} failed message(s): ${r.outcome.failedIds.join(', ')}`,
            )
        },
        onError: (s, err) =>
          err instanceof QueueMismatchError
            ? this.log.error(`etcdQueue: ${err.message}`)
            : this.log.warning(`etcdQueue: claiming from ${s.queue} failed: ${(err as Error)?.message ?? String(err)}`),
      })
    })().catch((err) => {
      if (!abort.signal.aborted) this.log.error(`etcdQueue: dispatcher stopped: ${(err as Error)?.stack ?? String(err)}`)
    })
    this.dispatcher = { abort, done }
  }

  private async checkReachable(client: EtcdClient, endpoints: string[]) {
    try {
      await client.get('middy-etcd/offline-probe').string()
    } catch (err) {
      throw new Error(`etcd at ${endpoints.join(', ')} (custom.etcd.endpoints) does not answer: ${(err as Error).message}`, { cause: err })
    }
  }

  private async beforePackage(only?: string) {
    const config = readConfig(this.serverless)
    const subscriptions = queueSubscriptions(this.serverless)
    if (config.dispatcher) {
      const fn = this.serverless.service.getFunction(config.dispatcher)
      fn.environment = { ...fn.environment, ETCD_QUEUE_SUBSCRIPTIONS: JSON.stringify(subscriptions) }
    } else if (subscriptions.length > 0) {
      this.log.warning(
        `middy-etcd: ${subscriptions.map((s) => s.functionKey).join(', ')} subscribe${subscriptions.length === 1 ? 's' : ''} to etcdQueue events, but no dispatcher is deployed to deliver them: ` +
          'add a function with `handler: <file>.handler` exporting `handler` from middy-etcd/dispatcher, a `schedule` event, and name it in custom.etcd.dispatcher (README "Queues in the cloud")',
      )
    }
    // osls builds every artifact in .serverless/ and moves them to `--package <dir>` at the end.
    const packaged = await packageFunctions(this.serverless, this.log, {
      packagePath: join(this.serverless.serviceDir, '.serverless'),
      sourcemap: config.sourcemap,
      only: only || undefined,
    })
    this.warnMissingEndpoints(packaged ? [...packaged.artifacts.keys()] : [])
  }

  /** Warns about functions that use etcd but would deploy without ETCD_ENDPOINTS. */
  private warnMissingEndpoints(keys: string[]) {
    const { service } = this.serverless
    const missing = keys.filter((key) => {
      const value = service.getFunction(key).environment?.ETCD_ENDPOINTS ?? service.provider.environment?.ETCD_ENDPOINTS
      // A CloudFormation reference (an object) is resolved at deploy time: count it as set.
      return value === undefined || value === null || (typeof value === 'string' && value.trim() === '')
    })
    if (missing.length === 0) return
    this.log.warning(
      `middy-etcd: ETCD_ENDPOINTS is empty for ${missing.join(', ')}: their first etcd call will fail with a ConfigurationError. ` +
        // biome-ignore lint/suspicious/noTemplateCurlyInString: Serverless variables, shown as the user writes them
        'Set provider.environment.ETCD_ENDPOINTS (e.g. ${env:ETCD_ENDPOINTS} or ${ssm:/etcd/endpoints}) before deploying',
    )
  }
}

/** Resolves once `host:port` accepts a TCP connection (or the signal aborts). */
async function waitForPort(host: string, port: number, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port })
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 200))
  }
}
