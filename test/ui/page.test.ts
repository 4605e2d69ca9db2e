// The operations page in a real browser against a real etcd: etcdctl holders show with their
// fence within a second, waiters with their age, a killed holder is flagged with the waiters
// behind it, and a dead letter is redriven from the page only when actions are allowed.
import { spawn, type ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Page } from 'playwright-core'
import { Queue } from '../../lib/index.js'
import { startUiServer, type UiServer } from '../../cli/ui/server.js'
import { uniqueName, until, useEtcd } from '../helpers.js'
import { launchBrowser } from './browser.js'

const etcd = useEtcd(1)

/** A running etcdctl with its output so far (as test/locks/mutex-interop.test.ts runs it). */
function etcdctl(...args: string[]) {
  const child = spawn('etcdctl', [`--endpoints=${etcd.cluster.endpoints.join(',')}`, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const out = { stdout: '', stderr: '' }
  child.stdout.on('data', (d) => (out.stdout += d))
  child.stderr.on('data', (d) => (out.stderr += d))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, out, exited }
}

const children: ChildProcess[] = []
let browser: Awaited<ReturnType<typeof launchBrowser>>
let readOnly: UiServer
let actions: UiServer

beforeAll(async () => {
  browser = await launchBrowser()
  readOnly = await startUiServer({ client: etcd.client })
  actions = await startUiServer({ client: etcd.newClient(), allowActions: true })
})

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
  await browser?.close()
  await readOnly?.close()
  await actions?.close()
})

/** A page on `server`, the tab `tab` open and filtered to `search`. */
async function open(server: UiServer, tab: string, search?: string): Promise<Page> {
  const page = await browser.context.newPage()
  await page.goto(server.url)
  await page.waitForSelector('body[data-version]')
  await page.click(`#tabs button[data-tab="${tab}"]`)
  if (search !== undefined) {
    await page.fill('#search', search)
    await page.locator('.pager').waitFor()
  }
  return page
}

/** The key etcd holds under `<name>/` (a Mutex contender), with its create revision. */
async function lockKeys(name: string) {
  const res = await etcd.client.getAll().prefix(`${name}/`).sort('Create', 'Ascend').exec()
  return res.kvs.map((kv) => ({ key: kv.key.toString(), fence: Number(kv.create_revision) }))
}

describe('the operations page', () => {
  it('shows a lock etcdctl takes, with its fence, within 1 s, and drops it within 1 s of the release', async () => {
    const name = uniqueName('ui-ctl')
    const page = await open(readOnly, 'locks', name)
    const ctl = etcdctl('lock', '--ttl', '30', name)
    children.push(ctl.child)
    await until('etcdctl to hold the lock', 10_000, () => ctl.out.stdout.includes('\n'))
    const taken = Date.now()
    const [held] = await lockKeys(name)
    expect(ctl.out.stdout.split('\n')[0]).toBe(held.key)
    const row = page.locator(`tr[data-lock="${name}"][data-role="holder"]`)
    await row.locator('.fence', { hasText: String(held.fence) }).waitFor({ timeout: 1000 })
    const shownAfter = Date.now() - taken
    expect(await row.locator('.contender').textContent()).toBe(held.key)
    expect(await row.locator('.ttl').textContent()).toMatch(/^\d+\.\d s \/ 30 s$/)

    ctl.child.kill('SIGINT')
    await until('etcdctl to unlock', 10_000, async () => (await lockKeys(name)).length === 0)
    const released = Date.now()
    await row.waitFor({ state: 'detached', timeout: 1000 })
    const goneAfter = Date.now() - released
    process.stderr.write(`[ui] etcdctl lock shown after ${shownAfter} ms, release shown after ${goneAfter} ms\n`)
    await page.close()
  })

  it("shows a waiter's age, and flags a killed holder and the waiter behind it", async () => {
    const name = uniqueName('ui-zombie')
    const page = await open(readOnly, 'locks', name)
    // The holder's lease lives 6 s unrenewed: long enough to see it flagged before it expires.
    const holder = etcdctl('lock', '--ttl', '6', name)
    children.push(holder.child)
    await until('the holder to hold', 10_000, () => holder.out.stdout.includes('\n'))
    const waiter = etcdctl('lock', name)
    children.push(waiter.child)
    await until('the waiter to queue', 10_000, async () => (await lockKeys(name)).length === 2)
    const waiterRow = page.locator(`tr[data-lock="${name}"][data-role="waiter"]`)
    await waiterRow.waitFor({ timeout: 1000 })
    await page.waitForTimeout(2000)
    const age = await waiterRow.locator('.age').textContent()
    expect(age).toMatch(/^\d+\.\d s$/)
    expect(Number.parseFloat(age!)).toBeGreaterThanOrEqual(1.5)
    expect(await waiterRow.locator('.zombie').count()).toBe(0)

    holder.child.kill('SIGKILL')
    const killed = Date.now()
    const holderRow = page.locator(`tr[data-lock="${name}"][data-role="holder"]`)
    await holderRow.locator('.zombie').waitFor({ timeout: 6000 })
    await waiterRow.locator('.behind-zombie').waitFor({ timeout: 1000 })
    process.stderr.write(`[ui] killed holder (TTL 6 s) flagged after ${Date.now() - killed} ms\n`)
    // The overview lists it among the zombies too.
    await page.click('#tabs button[data-tab="overview"]')
    await page.locator('tr.zombie', { hasText: name }).first().waitFor({ timeout: 1000 })
    // Once the lease expires the waiter holds, and nobody is flagged.
    await page.click('#tabs button[data-tab="locks"]')
    await until('the waiter to take the lock', 15_000, () => waiter.out.stdout.includes('\n'))
    await page.locator(`tr[data-lock="${name}"][data-role="holder"]:not(:has(.zombie))`).waitFor({ timeout: 2000 })
    expect(await page.locator(`tr[data-lock="${name}"] .behind-zombie`).count()).toBe(0)
    waiter.child.kill('SIGINT')
    await page.close()
  })

  it('redrives a poison message from the dead-letter queue only with --allow-actions', async () => {
    const name = uniqueName('ui-q')
    await new Queue(etcd.client, name).enqueue('fine')
    const poison = await new Queue(etcd.client, `dlq/${name}`).enqueue('{"poison":true}')

    // Read-only: the page shows the dead letter but offers no button, and the server refuses.
    const ro = await open(readOnly, 'queues', name)
    await ro.click(`button[data-queue="${name}"]`)
    await ro.locator('#queue-detail .dlq-count', { hasText: '1' }).waitFor({ timeout: 2000 })
    expect(await ro.locator('[data-act]').count()).toBe(0)
    const refused = await fetch(`${readOnly.url}api/actions/redrive`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-middy-etcd-ui': 'action' },
      body: JSON.stringify({ queue: name }),
    })
    expect(refused.status).toBe(403)
    expect(((await refused.json()) as { error: string }).error).toMatch(/read-only: start it with --allow-actions/)
    // The lookup by message id finds it in the dead-letter queue.
    await ro.fill('#lookup input[name="message"]', poison.id)
    await ro.click('#lookup button')
    await ro.locator('#found', { hasText: 'dead letter' }).waitFor({ timeout: 2000 })
    await ro.close()

    // With actions: a cross-site request (no custom header, or another Origin) is refused too.
    const crossSite: Record<string, string>[] = [
      { 'content-type': 'application/json' },
      { 'x-middy-etcd-ui': 'action', origin: 'http://evil.example' },
    ]
    for (const headers of crossSite) {
      const res = await fetch(`${actions.url}api/actions/redrive`, { method: 'POST', headers, body: JSON.stringify({ queue: name }) })
      expect(res.status).toBe(403)
    }
    expect(await etcd.keysUnder(`dlq/${name}/`)).toHaveLength(1)

    const page = await open(actions, 'queues', name)
    await page.click(`button[data-queue="${name}"]`)
    const button = page.locator('button[data-act="redrive"]')
    await button.waitFor({ timeout: 2000 })
    let question = ''
    page.once('dialog', (d) => {
      question = d.message()
      void d.accept()
    })
    await button.click()
    await page.locator('#result', { hasText: `moved 1 message from dlq/${name} back to ${name}` }).waitFor({ timeout: 2000 })
    expect(question).toContain(`Move all 1 messages of dlq/${name} back into ${name}?`)
    expect(await etcd.keysUnder(`dlq/${name}/`)).toHaveLength(0)
    expect(await etcd.keysUnder(`${name}/`)).toHaveLength(2)
    await page.locator('#queue-detail .dlq-count', { hasText: '0' }).waitFor({ timeout: 1000 })
    await page.close()
  })

  it("revokes a stuck holder's lease and purges a queue from the page, each after a confirmation naming what changes", async () => {
    const name = uniqueName('ui-revoke')
    const ctl = etcdctl('lock', name)
    children.push(ctl.child)
    await until('etcdctl to hold the lock', 10_000, () => ctl.out.stdout.includes('\n'))
    const key = ctl.out.stdout.split('\n')[0]
    const lease = key.split('/').pop()!
    const page = await open(actions, 'locks', name)
    const revoke = page.locator(`tr[data-lock="${name}"][data-role="holder"] button[data-act="revoke"]`)
    await revoke.waitFor({ timeout: 2000 })
    const questions: string[] = []
    page.on('dialog', (d) => {
      questions.push(d.message())
      void d.accept()
    })
    await revoke.click()
    await page.locator('#result', { hasText: `revoked lease ${lease}: deleted 1 key (${key})` }).waitFor({ timeout: 2000 })
    expect(questions[0]).toContain(`Revoke lease ${lease}? Every key on it is deleted (${key} and any other)`)
    expect(await lockKeys(name)).toEqual([])
    await page.locator(`tr[data-lock="${name}"]`).first().waitFor({ state: 'detached', timeout: 1000 })
    // etcdctl notices its session is gone and exits.
    expect(await ctl.exited).not.toBe(0)

    const queue = uniqueName('ui-purge')
    for (const v of ['a', 'b', 'c']) await new Queue(etcd.client, queue).enqueue(v)
    await page.click('#tabs button[data-tab="queues"]')
    await page.fill('#search', queue)
    await page.click(`button[data-queue="${queue}"]`)
    await page.locator('button[data-act="purge"]', { hasText: 'purge 3 items' }).click()
    await page.locator('#result', { hasText: `purged queue ${queue}: deleted 3 items` }).waitFor({ timeout: 2000 })
    expect(questions[1]).toContain(`Delete all 3 items of queue ${queue}`)
    expect(await etcd.keysUnder(`${queue}/`)).toEqual([])
    await page.close()
  })

  it('needs a token on another host, and refuses a foreign Host header on 127.0.0.1', async () => {
    const open0 = await startUiServer({ client: etcd.client, host: '0.0.0.0' })
    try {
      expect(open0.token).toMatch(/^[\w-]{20,}$/)
      expect(open0.url).toContain(`?token=${open0.token}`)
      const base = `http://127.0.0.1:${open0.port}`
      expect((await fetch(`${base}/api/snapshot`)).status).toBe(401)
      expect((await fetch(`${base}/api/snapshot`, { headers: { authorization: `Bearer ${open0.token}` } })).status).toBe(200)
    } finally {
      await open0.close()
    }
    // A page of another site whose name resolves here (DNS rebinding) sends its own Host.
    const status = await new Promise<number | undefined>((resolve, reject) =>
      request({ host: '127.0.0.1', port: readOnly.port, path: '/api/snapshot', headers: { host: 'attacker.example' } }, (res) => {
        res.resume()
        resolve(res.statusCode)
      })
        .on('error', reject)
        .end(),
    )
    expect(status).toBe(403)
  })
})
