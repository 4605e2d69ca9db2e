// `npm run screenshots`: regenerates docs/ui-overview.png and docs/ui-queue.png, the operations
// page's pictures in the README. It starts its own etcd, fills it with a small scene (locks held
// and waited for, a holder that stopped renewing its lease, a semaphore full with callers
// queued, a queue with traffic and dead letters), serves the page and photographs it in
// Debian's headless Chromium (playwright-core; as the browser tests do).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { startUiServer } from '../cli/ui/server.js'
import { leaseHex } from '../lib/core/keys.js'
import { keyspace } from '../lib/core/kv.js'
import { createClient, Mutex, Queue, Semaphore, Session } from '../lib/index.js'
import { startEtcd } from '../testing/index.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const cluster = await startEtcd({ nodes: 1 })
const client = createClient({ endpoints: cluster.endpoints })
const sessions: Session[] = []
const session = async (ttl = 30) => {
  const s = await Session.create(client, { ttl })
  sessions.push(s)
  return s
}
const profile = mkdtempSync(join(tmpdir(), 'middy-etcd-shots-'))
try {
  const server = await startUiServer({ client, allowActions: true })

  // Locks: held, with a FIFO of waiters (the waiters' lock() calls stay pending until the end).
  await new Mutex(await session(), 'billing/nightly').lock()
  const waiting = [new Mutex(await session(), 'billing/nightly').lock(), new Mutex(await session(), 'billing/nightly').lock()]
  for (const w of waiting) w.catch(() => {})
  await new Mutex(await session(), 'reports/monthly').lock()
  // A holder whose process died: its lease is no longer renewed (4 s TTL), a waiter queues behind it.
  const dead = await client.leaseClient.leaseGrant({ TTL: 8, ID: 0 })
  const ks = keyspace(client)
  await ks.txn([], [ks.put(`invoices/export/${leaseHex(String(dead.ID))}`, '', String(dead.ID))])
  new Mutex(await session(), 'invoices/export').lock().catch(() => {})

  // A semaphore with every permit taken and callers queued.
  for (let i = 0; i < 2; i++) await new Semaphore(await session(), 'pdf/render', 2).acquire()
  new Semaphore(await session(), 'pdf/render', 2).acquire().catch(() => {})

  // A queue with traffic: received and acked, one message failing into its dead-letter queue.
  const jobs = new Queue(client, 'example/jobs')
  for (let i = 0; i < 40; i++) await jobs.enqueue(JSON.stringify({ task: `resize-${i}` }))
  for (let round = 0; round < 4; round++) {
    const got = await jobs.receive({ max: 5, visibilityTimeout: 30 })
    for (const m of got) await jobs.ack(m)
  }
  await jobs.receive({ max: 3, visibilityTimeout: 60 })
  const poison = await new Queue(client, 'dlq/example/jobs').enqueue(JSON.stringify({ task: 'poison', reason: 'threw 5 times' }))
  await new Queue(client, 'dlq/example/jobs').enqueue(JSON.stringify({ task: 'poison-2', reason: 'threw 5 times' }))
  const emails = new Queue(client, 'example/emails')
  for (let i = 0; i < 12; i++) await emails.enqueue(`mail ${i}`)

  // Long enough for ages to read as ages, and for the dead holder's lease to fall below 40 % of its TTL.
  await sleep(5500)

  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    viewport: { width: 1400, height: 900 },
  })
  const page = await context.newPage()
  await page.goto(server.url)
  await page.locator('tr.zombie').first().waitFor({ timeout: 5000 })
  await page.screenshot({ path: join(root, 'docs', 'ui-overview.png'), fullPage: true })
  await page.click('#tabs button[data-tab="queues"]')
  await page.click('button[data-queue="example/jobs"]')
  await page.locator('#queue-detail .dlq-count').waitFor()
  await page.fill('#lookup input[name="message"]', poison.id)
  await page.click('#lookup button')
  await page.locator('#found p').waitFor()
  await page.screenshot({ path: join(root, 'docs', 'ui-queue.png'), fullPage: true })
  await context.close()
  await server.close()
  process.stderr.write('[screenshots] wrote docs/ui-overview.png and docs/ui-queue.png\n')
} finally {
  for (const s of sessions) await s.close().catch(() => {})
  client.close()
  await cluster.stop()
  rmSync(profile, { recursive: true, force: true })
}
process.exit(0)
