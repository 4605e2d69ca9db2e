import { readFileSync } from 'node:fs'
import { PrefixCache } from '../lib/config/prefix-cache.js'
import { configEntries, putConfig } from '../lib/config/seed.js'
import type { EtcdClient } from '../lib/core/client.js'
import { checkName, checkValue } from '../lib/core/kv.js'
import { MAX_TXN_OPS } from '../lib/limits.js'
import { noMoreArgs, requireArg, revisionNumber, UsageError, type Command, type Invocation, type Report } from './common.js'
import { jsonValue, showKey, showValue, table } from './table.js'

/**
 * `config get|set|diff <prefix>`: the configuration `etcdConfig` / `PrefixCache` serve, read at
 * one revision the way they read it (pages pinned to one revision), written in Txns, and
 * compared with a local JSON file.
 */

export const config: Command = {
  name: 'config',
  summary: 'read, write and compare the configuration under a prefix (etcdConfig, PrefixCache)',
  usage:
    'config get <prefix>\nconfig set <prefix> <key> <value>\nconfig set <prefix> --file <config.json>\nconfig diff <prefix> <config.json>',
  help: `Works on every key under <prefix>, keys shown relative to it (as context.etcd.config has them):
  get     every key and value, read at one revision (the revision is printed)
  set     put <prefix><key> = <value>; with --file, every entry of a JSON file
          { "<key>": value, ... } (a string is stored as it is, any other JSON value as its
          JSON text, as parse: 'json' reads it), ${MAX_TXN_OPS} keys per transaction
  diff    compare etcd with a local JSON file of the same shape (nothing is written): keys only
          in the file (+), only in etcd (-), with another value (~); a non-string value in the
          file is compared as its JSON text`,
  options: {
    file: { type: 'string' },
  },
  async run({ args, options, connect }: Invocation): Promise<Report> {
    const action = requireArg(config, args, 0, 'action (get, set or diff)')
    if (options.file !== undefined && action !== 'set') throw new UsageError(`config ${action}: --file does not apply here`, config)
    const prefix = checkName(requireArg(config, args, 1, 'prefix'), 'prefix')
    switch (action) {
      case 'get':
        noMoreArgs(config, args, 2)
        return get(connect(), prefix)
      case 'set': {
        if (options.file !== undefined) {
          noMoreArgs(config, args, 2)
          return set(connect(), prefix, readEntries(options.file as string))
        }
        const key = requireArg(config, args, 2, 'key (or --file <config.json>)')
        const value = args[3]
        if (value === undefined) throw new UsageError('config set: missing value', config)
        noMoreArgs(config, args, 4)
        return set(connect(), prefix, [[checkName(key, 'key'), checkValue(value, 'value')]])
      }
      case 'diff': {
        const file = requireArg(config, args, 2, 'JSON file to compare with')
        noMoreArgs(config, args, 3)
        return diff(connect(), prefix, file)
      }
      default:
        throw new UsageError(`config: unknown action ${JSON.stringify(action)} (use get, set or diff)`, config)
    }
  },
}

/** The entries of a local JSON file, or a usage error naming it. */
function readEntries(file: string): [string, Buffer][] {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new UsageError(`config: cannot read ${file}: ${(err as Error).message}`, config)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new UsageError(`config: ${file} is not JSON: ${(err as Error).message}`, config)
  }
  return configEntries(parsed, file)
}

/** Every key and raw value under `prefix` at one revision, as PrefixCache loads them. */
async function load(client: EtcdClient, prefix: string): Promise<{ revision: bigint; values: Map<string, Buffer> }> {
  const cache = new PrefixCache<Buffer>(client, prefix, { parse: (raw) => raw })
  try {
    await cache.ready
    const snapshot = cache.snapshot()
    return { revision: snapshot.revision, values: new Map(Object.entries(snapshot.values)) }
  } finally {
    cache.close()
  }
}

async function get(client: EtcdClient, prefix: string): Promise<Report> {
  const { revision, values } = await load(client, prefix)
  const json = {
    prefix,
    revision: revisionNumber(revision),
    keys: [...values].map(([key, value]) => ({ key, ...jsonValue(value) })),
  }
  const text =
    values.size === 0
      ? `no keys under ${showKey(prefix)} (revision ${revision})`
      : `${table(
          ['KEY', 'VALUE'],
          [...values].map(([key, value]) => [showKey(key), showValue(value, 60)]),
        )}\n\n${values.size} key(s) under ${showKey(prefix)} at revision ${revision}`
  return { json, text }
}

async function set(client: EtcdClient, prefix: string, entries: [string, Buffer][]): Promise<Report> {
  const { revision, txns } = await putConfig(client, prefix, entries)
  return {
    json: { prefix, written: entries.length, transactions: txns, revision: revisionNumber(revision) },
    text: `wrote ${entries.length} key(s) under ${showKey(prefix)} in ${txns} transaction(s); revision ${revision}`,
  }
}

async function diff(client: EtcdClient, prefix: string, file: string): Promise<Report> {
  const wanted = new Map(readEntries(file))
  const { revision, values } = await load(client, prefix)
  const added = [...wanted.keys()].filter((k) => !values.has(k)).sort()
  const removed = [...values.keys()].filter((k) => !wanted.has(k)).sort()
  const changed = [...wanted.keys()].filter((k) => values.has(k) && !values.get(k)!.equals(wanted.get(k)!)).sort()
  const json = {
    prefix,
    file,
    revision: revisionNumber(revision),
    equal: added.length + removed.length + changed.length === 0,
    onlyInFile: added.map((key) => ({ key, ...jsonValue(wanted.get(key)!) })),
    onlyInEtcd: removed.map((key) => ({ key, ...jsonValue(values.get(key)!) })),
    changed: changed.map((key) => ({ key, etcd: jsonValue(values.get(key)!), file: jsonValue(wanted.get(key)!) })),
  }
  const lines = [
    ...added.map((k) => `+ ${showKey(k)} = ${showValue(wanted.get(k)!, 60)}`),
    ...removed.map((k) => `- ${showKey(k)} = ${showValue(values.get(k)!, 60)}`),
    ...changed.map((k) => `~ ${showKey(k)}: ${showValue(values.get(k)!, 40)} in etcd, ${showValue(wanted.get(k)!, 40)} in ${file}`),
  ]
  const text = json.equal
    ? `etcd (revision ${revision}) and ${file} agree: ${values.size} key(s) under ${showKey(prefix)}`
    : `${lines.join('\n')}\n\n${added.length} only in ${file} (+), ${removed.length} only in etcd (-), ${changed.length} different (~); etcd at revision ${revision}`
  return { json, text }
}
