import type { Namespace } from 'etcd3'
import { show } from '../core/check.js'
import { checkName, checkValue, keyspace } from '../core/kv.js'
import { InvalidArgumentError } from '../errors.js'
import { MAX_TXN_OPS } from '../limits.js'

/**
 * Configuration as a file holds it — `{ "<key>": value }`, keys relative to a prefix — and
 * written to etcd: the format of `middy-etcd config set --file` / `config diff` and of the
 * offline plugin's `custom.etcd.seed`. A string value is stored as it is, any other JSON value
 * as its JSON text (what `parse: 'json'` reads back).
 */

/** The entries of a configuration map, values as stored; `what` names the map in errors. */
export function configEntries(map: unknown, what: string): [string, Buffer][] {
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new InvalidArgumentError(`${what} must be an object of key → value (keys relative to the prefix), got ${show(map)}`)
  }
  return Object.entries(map).map(([key, value]) => {
    checkName(key, `${what}: a key`)
    if (value === undefined) throw new InvalidArgumentError(`${what}: ${JSON.stringify(key)} has no value`)
    return [key, checkValue(typeof value === 'string' ? value : JSON.stringify(value), `${what}: the value of ${JSON.stringify(key)}`)]
  })
}

/**
 * Puts `entries` under `prefix`, {@link MAX_TXN_OPS} keys per Txn (so up to that many land
 * together, at one revision); returns the revision of the last Txn and how many Txns it took.
 */
export async function putConfig(
  client: Namespace,
  prefix: string,
  entries: [string, Buffer][],
): Promise<{ revision: bigint; txns: number }> {
  const ks = keyspace(client)
  let revision = 0n
  let txns = 0
  for (let i = 0; i < entries.length; i += MAX_TXN_OPS) {
    const res = await ks.txn(
      [],
      entries.slice(i, i + MAX_TXN_OPS).map(([key, value]) => ks.put(`${prefix}${key}`, value)),
    )
    revision = res.revision
    txns++
  }
  return { revision, txns }
}
