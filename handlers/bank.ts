// A bank whose transfers run as STM transactions (withSTM): both balances change together or
// not at all, so the total never changes however many transfers run at once.
import middy from '@middy/core'
import { withSTM } from '../middleware/index.js'
import { InvalidArgumentError, sharedClient } from '../lib/index.js'
import { body, httpErrors, json, param, type HttpEvent } from './http.js'

const prefix = (bank: string) => `example/banks/${bank}/`

/** POST /banks/{bank} { accounts: { alice: 100, … } } → opens (or resets) the accounts. */
export const open = middy(async (event: HttpEvent) => {
  const bank = param(event, 'bank')
  const { accounts } = body<{ accounts?: Record<string, number> }>(event)
  if (!accounts || typeof accounts !== 'object') throw new InvalidArgumentError('body must be { accounts: { name: balance } }')
  const client = sharedClient()
  await client.delete().prefix(prefix(bank))
  for (const [name, balance] of Object.entries(accounts)) {
    if (!Number.isInteger(balance) || balance < 0) throw new InvalidArgumentError(`balance of ${name} must be a whole number >= 0`)
    await client.put(prefix(bank) + name).value(String(balance))
  }
  return json(201, { bank, accounts })
}).use(httpErrors())

/** POST /banks/{bank}/transfer { from, to, amount } → the two new balances. */
export const transfer = middy(
  withSTM(async (event: HttpEvent, context) => {
    const bank = param(event, 'bank')
    const { from, to, amount } = body<{ from?: string; to?: string; amount?: number }>(event)
    if (!from || !to || from === to) throw new InvalidArgumentError('body must be { from, to, amount } with two different accounts')
    if (!Number.isInteger(amount) || amount! <= 0) throw new InvalidArgumentError('amount must be a whole number > 0')
    const { stm } = context.etcd
    // Both read in one round trip; the commit checks neither changed since.
    const [fromRaw, toRaw] = [await stm.get(prefix(bank) + from, prefix(bank) + to), await stm.get(prefix(bank) + to)]
    if (fromRaw === '' || toRaw === '') throw new InvalidArgumentError(`no such account: ${fromRaw === '' ? from : to}`)
    const balances = { [from]: Number(fromRaw) - amount!, [to]: Number(toRaw) + amount! }
    if (balances[from] < 0) throw new InvalidArgumentError(`insufficient funds in ${from}`)
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
