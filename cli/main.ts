#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { createClient, resolveClientOptions, type EtcdClient } from '../lib/core/client.js'
import { ConfigurationError, EtcdUnavailableError, InvalidArgumentError, MiddyEtcdError } from '../lib/errors.js'
import { toTypedError } from '../lib/core/kv.js'
import { barrier } from './barrier.js'
import { config } from './config.js'
import { UsageError, type Command } from './common.js'
import { chooseEndpoints, packageVersion, type EndpointChoice } from './endpoints.js'
import { leader } from './leader.js'
import { locks } from './locks.js'
import { queue } from './queue.js'
import { semaphores } from './semaphores.js'
import { ui } from './ui/command.js'

/**
 * `middy-etcd`: the operator's view of the locks, elections, queues and barriers that
 * middy-etcd (and Go's clientv3/concurrency, etcdctl lock/elect) keep in etcd.
 * Exit status: 0 done, 1 etcd failed or could not be reached, 2 bad usage or configuration.
 */

const PROGRAM = 'middy-etcd'
/** Default deadline of each etcd call (the client retries a failed call once). */
const CLI_CALL_TIMEOUT_MS = 2000
const COMMANDS: Command[] = [locks, leader, queue, barrier, semaphores, config, ui]

const GLOBAL_OPTIONS = {
  endpoints: { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} satisfies NonNullable<ParseArgsConfig['options']>

/** The command list of the general help: every usage line, each command's summary under it. */
function commandList(): string {
  const lines = COMMANDS.flatMap((c) => [...c.usage.split('\n').map((u) => `  ${u}`), `      ${c.summary}`])
  return [...lines, '  help [command]', "      this text, or a command's help"].join('\n')
}

const GENERAL_HELP = `${PROGRAM}: inspect the etcd locks, elections, queues and barriers of middy-etcd
(the keys are Go-compatible: Go's clientv3/concurrency and etcdctl lock/elect show up too).

Usage: ${PROGRAM} <command> [arguments] [options]

Commands:
${commandList()}

Options:
  --endpoints <urls>   etcd endpoints, comma-separated (overrides ETCD_ENDPOINTS)
  --timeout <ms>       deadline of each etcd call (default ETCD_CALL_TIMEOUT_MS, else 2000)
  --json               print JSON (for scripts) instead of tables
  -h, --help           help for a command
  --version            print the version

Environment, as the library's createClient(): ETCD_ENDPOINTS, ETCD_USERNAME, ETCD_PASSWORD,
ETCD_CA_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, ETCD_NAMESPACE, ETCD_CALL_TIMEOUT_MS (etcdctl's
ETCDCTL_* names work too). Without --endpoints or ETCD_ENDPOINTS, the local etcd that
\`npm start\` (serverless offline with middy-etcd/offline) runs in this directory is used.

Exit status: 0 done; 1 etcd failed or could not be reached; 2 bad usage or configuration.`

function usageOf(command?: Command): string {
  if (!command) return `Usage: ${PROGRAM} <command> [arguments] [options]\nRun '${PROGRAM} --help' for the commands.`
  const lines = command.usage.split('\n').map((u, i) => `${i === 0 ? 'Usage: ' : '       '}${PROGRAM} ${u}`)
  return `${lines.join('\n')}\nRun '${PROGRAM} ${command.name} --help' for details.`
}

function helpOf(command: Command): string {
  const own = Object.entries(command.options ?? {}).map(([name, o]) => `  --${name}${o.type === 'string' ? ' <value>' : ''}`)
  return [
    usageOf(command).split('\n').slice(0, -1).join('\n'),
    '',
    command.help,
    '',
    `Options: --endpoints <urls>, --timeout <ms>, --json, -h/--help${own.length ? `\n${own.join('\n')}` : ''}`,
  ].join('\n')
}

/** Every option any command knows: used only to find the command name among the arguments. */
function allOptions() {
  return Object.assign({}, GLOBAL_OPTIONS, ...COMMANDS.map((c) => c.options ?? {}))
}

/** Node's parseArgs messages end with a hint about `--`; keep the first sentence. */
function parseMessage(err: unknown): string {
  return String((err as Error).message).split(/\. /)[0]
}

type Outcome = { stdout?: string; stderr?: string; code: number }

/** Where the endpoints came from and what they are (scheme://host:port only: no credentials). */
function describeEndpoints(choice: EndpointChoice): string {
  try {
    const hosts = resolveClientOptions({ endpoints: choice.endpoints }).etcd.hosts
    return `${[hosts].flat().join(',')} (from ${choice.source})`
  } catch {
    return `the endpoints in ${choice.source}`
  }
}

/** One line saying what went wrong, and the exit status; stack traces only for bugs. */
function failure(err: unknown, choice: EndpointChoice, command: Command | undefined): Outcome {
  if (err instanceof UsageError) return { stderr: `${PROGRAM}: ${err.message}\n\n${usageOf(err.command)}`, code: 2 }
  if (err instanceof ConfigurationError) {
    // The library names its option; on the command line that option is --endpoints.
    const message = err.setting === 'endpoints' ? err.message.replace(/^endpoints\b/, '--endpoints') : err.message
    const hint = err.setting === 'ETCD_ENDPOINTS' ? ' (or pass --endpoints, or run it where `npm start` runs a local etcd)' : ''
    return { stderr: `${PROGRAM}: ${message}${hint}\n\n${usageOf(command)}`, code: 2 }
  }
  if (err instanceof InvalidArgumentError) return { stderr: `${PROGRAM}: ${err.message}`, code: 2 }
  const typed = toTypedError(err, 'etcd')
  if (typed instanceof EtcdUnavailableError) {
    const cause = (typed.cause as Error | undefined)?.message ?? typed.message
    // gRPC appends an empty "Resolution note: ." to connection failures.
    const reason = cause
      .split('\n')[0]
      .replace(/\s*Resolution note:\s*\.?\s*$/, '')
      .replace(/\.+$/, '')
    return {
      stderr: `${PROGRAM}: cannot reach etcd at ${describeEndpoints(choice)}: ${reason}. Check ETCD_ENDPOINTS (or --endpoints) and that the cluster is up.`,
      code: 1,
    }
  }
  if (typed instanceof MiddyEtcdError) return { stderr: `${PROGRAM}: ${typed.message}`, code: 1 }
  // etcd3's own errors (auth failed, key too large...) are expected failures too.
  if (typed instanceof Error && /^(Etcd|GRPC)/.test(typed.constructor.name)) {
    return { stderr: `${PROGRAM}: etcd at ${describeEndpoints(choice)} failed the request: ${typed.message.split('\n')[0]}`, code: 1 }
  }
  return { stderr: `${PROGRAM}: internal error (please report it):\n${(err as Error)?.stack ?? String(err)}`, code: 1 }
}

/**
 * The per-call deadline: --timeout, else the environment's (read by createClient), else
 * {@link CLI_CALL_TIMEOUT_MS}: an operator waits seconds, not the library's 5 s twice over.
 */
function callTimeout(flag: string | undefined): number | undefined {
  if (flag !== undefined) return Number(flag)
  if (process.env.ETCD_CALL_TIMEOUT_MS || process.env.ETCDCTL_COMMAND_TIMEOUT_MS) return undefined
  return CLI_CALL_TIMEOUT_MS
}

/** Runs the CLI on `argv` (without node and the script); never throws. */
async function run(argv: string[]): Promise<Outcome> {
  let client: EtcdClient | undefined
  let choice: EndpointChoice = { source: 'ETCD_ENDPOINTS' }
  let command: Command | undefined
  try {
    const first = parseArgs({ args: argv, options: allOptions(), allowPositionals: true, strict: false })
    let name = first.positionals[0]
    if (name === 'help') {
      // `help <command>` is `<command> --help`.
      name = first.positionals[1]
      if (name === undefined) return { stdout: GENERAL_HELP, code: 0 }
      first.values.help = true
    }
    if (first.values.version) return { stdout: `${PROGRAM} ${packageVersion()}`, code: 0 }
    if (name === undefined) {
      if (first.values.help) return { stdout: GENERAL_HELP, code: 0 }
      throw new UsageError('missing command')
    }
    command = COMMANDS.find((c) => c.name === name)
    if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}`)
    if (first.values.help) return { stdout: helpOf(command), code: 0 }

    let parsed
    try {
      parsed = parseArgs({ args: argv, options: { ...GLOBAL_OPTIONS, ...command.options }, allowPositionals: true, strict: true })
    } catch (err) {
      throw new UsageError(`${command.name}: ${parseMessage(err)}`, command)
    }
    const values = parsed.values as Record<string, string | boolean | undefined>
    choice = chooseEndpoints(values.endpoints as string | undefined, process.env, process.cwd())
    const timeout = values.timeout as string | undefined
    if (timeout !== undefined && !/^[1-9]\d*$/.test(timeout))
      throw new UsageError(`--timeout must be a positive whole number of milliseconds, got ${JSON.stringify(timeout)}`, command)
    const args = parsed.positionals.slice(1)
    const connect = () => {
      if (!client && choice.note) process.stderr.write(`${PROGRAM}: ${choice.note}\n`)
      client ??= createClient({ endpoints: choice.endpoints, callTimeoutMs: callTimeout(timeout) })
      return client
    }
    const report = await command.run({ args, options: values, connect })
    return { stdout: values.json ? JSON.stringify(report.json, null, 2) : report.text, code: 0 }
  } catch (err) {
    return failure(err, choice, command)
  } finally {
    client?.close()
  }
}

function write(stream: NodeJS.WriteStream, text: string): Promise<void> {
  return new Promise((resolve) => stream.write(`${text}\n`, () => resolve()))
}

const outcome = await run(process.argv.slice(2))
if (outcome.stdout !== undefined) await write(process.stdout, outcome.stdout)
if (outcome.stderr !== undefined) await write(process.stderr, outcome.stderr)
// Exit now: a closed etcd3 client can leave timers (keepalive, reconnect) that would hold the process.
process.exit(outcome.code)
