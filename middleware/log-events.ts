// `etcdEvents` into a logger: a structured logger in Powertools Logger's shape (a message plus
// an object of fields), or plain console JSON lines for CloudWatch Logs Insights.
import { InvalidArgumentError } from '../lib/errors.js'
import { etcdEvents, type EtcdEvent } from './events.js'

/** A logger whose level methods take a message and an object of fields (Powertools' `Logger`, pino-style wrappers). */
export interface StructuredLogger {
  debug(message: string, fields: Record<string, unknown>): void
  info(message: string, fields: Record<string, unknown>): void
  warn(message: string, fields: Record<string, unknown>): void
  error(message: string, fields: Record<string, unknown>): void
}

/** A log level, or `false` to drop events of that type. */
export type EtcdEventLevel = 'debug' | 'info' | 'warn' | 'error' | false

/** Options of {@link logEtcdEvents}. */
export interface LogEtcdEventsOptions {
  /** Level per event type (default: `lost`, `not-stored` and `reloaded` warn, `released` debug, the rest info). */
  levels?: Partial<Record<EtcdEvent['type'], EtcdEventLevel>>
}

const DEFAULT_LEVELS: Record<EtcdEvent['type'], EtcdEventLevel> = {
  acquired: 'info',
  waiting: 'info',
  released: 'debug',
  lost: 'warn',
  skipped: 'info',
  'not-stored': 'warn',
  changed: 'info',
  reloaded: 'warn',
}

/** `etcd lock acquired billing/nightly`: what happened, to whom, readable without the fields. */
function messageOf(event: EtcdEvent): string {
  return `etcd ${event.primitive} ${event.type} ${event.name}`
}

/**
 * Logs every event of every middy-etcd middleware in this process to `logger`, each as one
 * message with the event under an `etcd` field; returns the function that stops it. Call it
 * once at module scope (a logger that throws never changes an invocation's outcome).
 */
export function logEtcdEvents(logger: StructuredLogger, options: LogEtcdEventsOptions = {}): () => void {
  const levels = { ...DEFAULT_LEVELS, ...options?.levels }
  for (const [type, level] of Object.entries(levels)) {
    if (!(type in DEFAULT_LEVELS))
      throw new InvalidArgumentError(
        `logEtcdEvents: levels has an unknown event type ${JSON.stringify(type)}; the types are ${Object.keys(DEFAULT_LEVELS).join(', ')}`,
      )
    if (level !== false && !['debug', 'info', 'warn', 'error'].includes(level as string)) {
      throw new InvalidArgumentError(
        `logEtcdEvents: levels.${type} must be 'debug', 'info', 'warn', 'error' or false, got ${JSON.stringify(level)}`,
      )
    }
    if (level && typeof (logger as unknown as Record<string, unknown> | null)?.[level] !== 'function') {
      throw new InvalidArgumentError(
        `logEtcdEvents: the logger has no ${level}(message, fields) method; pass Powertools' Logger, jsonLinesLogger(), or an object with debug/info/warn/error`,
      )
    }
  }
  const listener = (event: EtcdEvent) => {
    const level = levels[event.type]
    if (level) logger[level](messageOf(event), { etcd: event })
  }
  etcdEvents.on('event', listener)
  return () => {
    etcdEvents.off('event', listener)
  }
}

/**
 * A {@link StructuredLogger} that writes one JSON object per line (`level`, `message`,
 * `timestamp` and the fields) with `write` (default `console.log`), which CloudWatch Logs
 * Insights parses without configuration.
 */
export function jsonLinesLogger(write: (line: string) => void = (line) => console.log(line)): StructuredLogger {
  const at = (level: string) => (message: string, fields: Record<string, unknown>) =>
    write(JSON.stringify({ level, message, timestamp: new Date().toISOString(), ...fields }))
  return { debug: at('DEBUG'), info: at('INFO'), warn: at('WARN'), error: at('ERROR') }
}
