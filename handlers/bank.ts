// A bank whose transfers run as STM transactions (withSTM): both balances change together or
// not at all, so the total never changes however many transfers run at once.
import middy from '@middy/core'
import { withSTM } from '../middleware/index.js'
import { InvalidArgumentError, sharedClient } from '../lib/index.js'
import { body, httpErrors, intField, json, param, stringField, type HttpEvent, type JsonObject } from './http.js'

const prefix = (bank: string) => `example/banks/${bank}/`

/** Most accounts one bank opens with (they are written in one transaction). */
const MAX_ACCOUNTS = 100
/** Largest balance or amount: totals of up to MAX_ACCOUNTS of them stay exact integers. */
const MAX_AMOUNT = 1e13
const TRANSFER = '{ from, to, amount }'

/** The `accounts` of a body, every one checked before anything is written. */
function accountsOf(input: JsonObject): [string, number][] {
  const { accounts } = input
  if (typeof accounts !== 'object' || accounts === null || Array.isArray(accounts)) {
    throw new InvalidArgumentError(
      `body must be { accounts: { name: balance, … } }, got accounts ${accounts === null ? 'null' : Array.isArray(accounts) ? 'as an array' : typeof accounts}`,
    )
  }
  const entries = Object.entries(accounts as JsonObject)
  if (entries.length === 0 || entries.length > MAX_ACCOUNTS)
    throw new InvalidArgumentError(`a bank opens with 1 to ${MAX_ACCOUNTS} accounts, got ${entries.length}`)
  return entries.map(([name, balance]) => {
    if (name === '' || name.includes('/') || Buffer.byteLength(name) > 256)
      throw new InvalidArgumentError(`account name ${JSON.stringify(name)} must be 1 to 256 bytes without "/"`)
    if (typeof balance !== 'number' || !Number.isSafeInteger(balance) || balance < 0 || balance > MAX_AMOUNT) {
      throw new InvalidArgumentError(
        `balance of ${JSON.stringify(name)} must be a whole number from 0 to ${MAX_AMOUNT}, got ${JSON.stringify(balance)}`,
      )
    }
    return [name, balance]
  })
}

/** POST /banks/{bank} { accounts: { alice: 100, … } } → opens (or resets) the accounts, all in one transaction. */
export const open = middy(async (event: HttpEvent) => {
  const bank = param(event, 'bank')
  const accounts = accountsOf(body(event))
  const client = sharedClient()
  // Validated first; then one Txn replaces the accounts, guarded by the old ones being as read
  // (etcd refuses a put inside a range the same Txn deletes, so old accounts go one by one).
  // A bad request changes nothing; a racing one makes the Txn fail and we read again.
  for (;;) {
    const { kvs } = await client.getAll().prefix(prefix(bank)).exec()
    const keep = new Set(accounts.map(([name]) => prefix(bank) + name))
    const [first, ...rest] = kvs
    let guard =
      first === undefined
        ? client.if(prefix(bank) + accounts[0][0], 'Create', '==', '0')
        : client.if(first.key.toString(), 'Mod', '==', first.mod_revision)
    for (const kv of rest) guard = guard.and(kv.key.toString(), 'Mod', '==', kv.mod_revision)
    const stale = kvs.map((kv) => kv.key.toString()).filter((key) => !keep.has(key))
    const res = await guard
      .then(
        ...stale.map((key) => client.delete().key(key)),
        ...accounts.map(([name, balance]) => client.put(prefix(bank) + name).value(String(balance))),
      )
      .commit()
    if (res.succeeded) break
  }
  return json(201, { bank, accounts: Object.fromEntries(accounts) })
}).use(httpErrors())

/** POST /banks/{bank}/transfer { from, to, amount } → the two new balances. */
export const transfer = middy(
  withSTM(async (event: HttpEvent, context) => {
    const bank = param(event, 'bank')
    const input = body(event)
    const [from, to] = [stringField(input, 'from', TRANSFER), stringField(input, 'to', TRANSFER)]
    const amount = intField(input, 'amount', TRANSFER, { min: 1, max: MAX_AMOUNT })
    if (from === to || from.includes('/') || to.includes('/'))
      throw new InvalidArgumentError('body must be { from, to, amount } with two different accounts')
    const { stm } = context.etcd
    // Both read in one round trip; the commit checks neither changed since.
    const [fromRaw, toRaw] = [await stm.get(prefix(bank) + from, prefix(bank) + to), await stm.get(prefix(bank) + to)]
    if (fromRaw === '' || toRaw === '') throw new InvalidArgumentError(`no such account: ${fromRaw === '' ? from : to}`)
    const balances = { [from]: Number(fromRaw) - amount, [to]: Number(toRaw) + amount }
    if (balances[from] < 0) throw new InvalidArgumentError(`insufficient funds in ${from}`)
    if (!Number.isSafeInteger(balances[to])) throw new InvalidArgumentError(`${to}'s balance would exceed what can be stored exactly`)
    stm.put(prefix(bank) + from, String(balances[from]))
    stm.put(prefix(bank) + to, String(balances[to]))
    return json(200, { bank, balances })
  }),
).use(httpErrors())

/** GET /banks/{bank} → { accounts, total } (one consistent read). */
export const accounts = middy(async (event: HttpEvent) => {
  const bank = param(event, 'bank')
  const all = await sharedClient().getAll().prefix(prefix(bank)).strings()
  const accounts = Object.fromEntries(Object.entries(all).map(([k, v]) => [k.slice(prefix(bank).length), Number(v)]))
  const total = Object.values(accounts).reduce((a, b) => a + b, 0)
  return json(200, { bank, accounts, total })
}).use(httpErrors())
