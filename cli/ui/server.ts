/**
 * The operations page's server (`middy-etcd ui`, and the offline plugin during `npm start`):
 * plain node:http, one HTML page with its script and style served from the package (no CDN),
 * live updates by Server-Sent Events.
 *
 * One watch per server, over the whole namespace, feeds a debounced snapshot ({@link readState});
 * every viewer gets the same snapshot, so what the page costs etcd does not grow with viewers:
 * at most one snapshot in flight, started {@link DEBOUNCE_MS} after a change (paced by the last
 * read's cost) and every {@link REFRESH_MS} otherwise (TTLs count down, leases expire without a
 * key event first).
 *
 * Safe by default: it binds 127.0.0.1; another host needs a token; actions (redrive, purge,
 * revoke) exist only with `allowActions`, and then only as POSTs carrying a custom header (which
 * a cross-site form cannot send) from the page's own origin.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { EtcdClient } from '../../lib/core/client.js'
import { defaultDeadLetterQueue, queueKeys } from '../../lib/core/keys.js'
import { checkName, keyspace, toTypedError } from '../../lib/core/kv.js'
import { MiddyEtcdError } from '../../lib/errors.js'
import { scanKeys, UsageError } from '../common.js'
import { peek, purge, redriveCommand } from '../queue.js'
import { readBarrier } from '../barrier.js'
import { shortText } from '../table.js'
import { counts, LeaseBook, LockCache, queueItemOf, queuePartOf, readState, RevisionClock, stuckOverview, type State } from './state.js'

/** Wait after a change in etcd before reading: a burst of writes costs one snapshot. */
export const DEBOUNCE_MS = 50
/** A snapshot at least this often, changes or not ... */
export const REFRESH_MS = 2000
/** ... unless reading takes longer than a fifth of that: then this many times the read's time. */
const IDLE_GAP_FACTOR = 5
/** Longest pause between the end of a snapshot and the next one a change asks for. */
const MAX_CHANGE_GAP_MS = 250
/** Minutes of queue throughput kept (the chart's width). */
const THROUGHPUT_MINUTES = 30
/** Rows one list request returns at most. */
const MAX_PAGE = 500
/** Largest action request body. */
const MAX_BODY_BYTES = 4096
/** The header every action must carry: a cross-site form or image cannot set it. */
export const ACTION_HEADER = 'x-middy-etcd-ui'
const COOKIE = 'middy_etcd_ui'

/** Something wrong with a request to the page's server: its HTTP status and what to do. */
export class UiRequestError extends MiddyEtcdError {
  override readonly code: string = 'UI_REQUEST'
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export interface UiServerOptions {
  client: EtcdClient
  /** Default 127.0.0.1. */
  host?: string
  /** Default 0 (any free port). */
  port?: number
  /** Required on every request when set; generated when `host` is not a loopback address. */
  token?: string
  /** Serve the redrive / purge / revoke actions (default: read-only, and the server refuses them). */
  allowActions?: boolean
}

export interface UiServer {
  /** The page's address (with `?token=` when a token is needed). */
  url: string
  host: string
  port: number
  token?: string
  /** The latest snapshot (undefined until the first read finished). */
  state(): State | undefined
  close(): Promise<void>
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]'])

/** Per-minute counts of one queue, from the watch: claims made, items removed, dead letters added. */
interface Minute {
  minute: number
  received: number
  removed: number
  deadLettered: number
}

/** Keeps the throughput of every queue seen, {@link THROUGHPUT_MINUTES} minutes of it. */
class Throughput {
  private readonly byQueue = new Map<string, Minute[]>()

  add(queue: string, what: 'received' | 'removed' | 'deadLettered', atMs: number): void {
    const minute = Math.floor(atMs / 60_000)
    const series = this.byQueue.get(queue) ?? []
    this.byQueue.set(queue, series)
    let last = series.at(-1)
    if (!last || last.minute !== minute) {
      last = { minute, received: 0, removed: 0, deadLettered: 0 }
      series.push(last)
      while (series.length > 0 && series[0].minute <= minute - THROUGHPUT_MINUTES) series.shift()
    }
    last[what]++
  }

  /** The last minutes of one queue, or of all (`undefined`), oldest first, empty minutes included. */
  series(queue: string | undefined, nowMs: number): Minute[] {
    const now = Math.floor(nowMs / 60_000)
    const out = Array.from({ length: THROUGHPUT_MINUTES }, (_, i) => ({
      minute: now - THROUGHPUT_MINUTES + 1 + i,
      received: 0,
      removed: 0,
      deadLettered: 0,
    }))
    const lists = queue === undefined ? [...this.byQueue.values()] : [this.byQueue.get(queue) ?? []]
    for (const list of lists) {
      for (const m of list) {
        const slot = out[m.minute - out[0].minute]
        if (!slot) continue
        slot.received += m.received
        slot.removed += m.removed
        slot.deadLettered += m.deadLettered
      }
    }
    return out
  }
}

/** Seconds of rate limiter admissions the "admitted per second" figure averages over. */
const ADMISSION_WINDOW_S = 10

/** Admissions of each rate limiter (puts of its `<name>/tokens/<slot>` keys) seen by the watch, last {@link ADMISSION_WINDOW_S} s. */
class Admissions {
  private readonly byLimiter = new Map<string, number[]>()

  add(limiter: string, atMs: number): void {
    const times = this.byLimiter.get(limiter) ?? []
    this.byLimiter.set(limiter, times)
    times.push(atMs)
    this.prune(times, atMs)
  }

  perSecond(limiter: string, nowMs: number): number {
    const times = this.byLimiter.get(limiter)
    if (!times) return 0
    this.prune(times, nowMs)
    return Math.round((times.length / ADMISSION_WINDOW_S) * 10) / 10
  }

  private prune(times: number[], nowMs: number): void {
    const from = nowMs - ADMISSION_WINDOW_S * 1000
    let drop = 0
    while (drop < times.length && times[drop] < from) drop++
    // A limiter admitting a million a second keeps no more than this many times.
    if (times.length - drop > 100_000) drop = times.length - 100_000
    if (drop > 0) times.splice(0, drop)
  }
}

function assets() {
  const dir = new URL('./assets/', import.meta.url)
  const read = (name: string) => readFileSync(new URL(name, dir))
  return {
    '/': { type: 'text/html; charset=utf-8', body: read('index.html') },
    '/app.js': { type: 'text/javascript; charset=utf-8', body: read('app.js') },
    '/app.css': { type: 'text/css; charset=utf-8', body: read('app.css') },
  } as Record<string, { type: string; body: Buffer }>
}

function sameSecret(given: string | undefined, token: string): boolean {
  if (given === undefined) return false
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=')
    if (k === name) return decodeURIComponent(v.join('='))
  }
  return undefined
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })
  res.end(text)
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES)
      throw new UiRequestError(413, `the request body is over ${MAX_BODY_BYTES} bytes: send only the action's fields`)
    chunks.push(chunk as Buffer)
  }
  try {
    const parsed = JSON.parse(Buffer.concat(chunks).toString() || '{}')
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed
  } catch {
    // Reported below.
  }
  throw new UiRequestError(400, 'the request body is not a JSON object: send {"queue": "…"} or {"lease": "…"}')
}

/** Starts the page's server; resolves once it listens and its watch runs. */
export async function startUiServer(options: UiServerOptions): Promise<UiServer> {
  const { client } = options
  const host = options.host ?? '127.0.0.1'
  const loopback = LOOPBACK.has(host)
  const token = options.token ?? (loopback ? undefined : randomBytes(18).toString('base64url'))
  const allowActions = options.allowActions === true
  const files = assets()
  const clock = new RevisionClock()
  const leases = new LeaseBook(client)
  const lockCache = new LockCache()
  const throughput = new Throughput()
  const admissions = new Admissions()
  /** Dead-letter counts when the server first saw each queue: a count above it "grew". */
  const deadLetterBaseline = new Map<string, number>()
  const viewers = new Set<ServerResponse>()
  let state: State | undefined
  let summary: unknown
  let lastError: string | undefined
  let version = 0
  let running = false
  let dirty = false
  let closed = false
  let timer: NodeJS.Timeout | undefined

  const publish = () => {
    const data = `event: snapshot\ndata: ${JSON.stringify(summary)}\n\n`
    for (const viewer of viewers) viewer.write(data)
  }

  const snapshot = async () => {
    timer = undefined
    if (running) {
      dirty = true
      return
    }
    running = true
    const started = Date.now()
    try {
      const next = await readState(client, clock, leases, lockCache)
      for (const q of next.queues) if (!deadLetterBaseline.has(q.name)) deadLetterBaseline.set(q.name, q.deadLetter?.items ?? 0)
      state = next
      lastError = undefined
      version++
      summary = {
        version,
        revision: next.revision,
        at: next.at,
        readMs: next.readMs,
        actions: allowActions,
        counts: counts(next),
        stuck: stuckOverview(next, deadLetterBaseline),
        recordCounts: next.recordCounts,
        throughput: throughput.series(undefined, next.at),
        notes: next.notes,
      }
    } catch (err) {
      const typed = toTypedError(err, 'etcd')
      lastError = (typed as Error).message
      summary = { ...(summary as object), error: `reading etcd failed: ${lastError}` }
    } finally {
      running = false
      lastEnd = Date.now()
      lastReadMs = lastEnd - started
    }
    if (closed) return
    publish()
    // The next snapshot without a change: later when reading is slow (a huge keyspace).
    clearTimeout(refresher)
    refresher = setTimeout(() => schedule(0), Math.max(REFRESH_MS, lastReadMs * IDLE_GAP_FACTOR))
    // Changes came while reading: read again (the burst they belong to had the read's time to settle).
    if (dirty) {
      dirty = false
      schedule(0)
    }
  }
  /**
   * A snapshot after `delay` ms, and no sooner after the last one than that one took (up to
   * {@link MAX_CHANGE_GAP_MS}): under a stream of changes etcd spends at most about half its
   * time on this page's reads, and a change still shows within a second.
   */
  const schedule = (delay: number) => {
    if (closed || timer) return
    timer = setTimeout(() => void snapshot(), Math.max(delay, lastEnd + Math.min(lastReadMs, MAX_CHANGE_GAP_MS) - Date.now()))
  }
  let lastEnd = 0
  let lastReadMs = 0
  let refresher: NodeJS.Timeout | undefined

  // One watch over the namespace: a change schedules a snapshot; queue events feed the chart.
  const ns = client.prefix
  const builder = ns.length === 0 ? client.watch().inRange({ start: Buffer.from([0]), end: Buffer.from([0]) }) : client.watch().prefix('')
  const watcher = await builder.watcher()
  watcher.on('data', (res) => {
    const now = Date.now()
    clock.note(BigInt(res.header.revision), now)
    for (const event of res.events) {
      const raw = event.kv.key
      const key = (raw.subarray(0, ns.length).equals(ns) ? raw.subarray(ns.length) : raw).toString()
      lockCache.touch(key)
      const token = event.type === 'Put' ? /^(.+)\/tokens\/\d{1,9}$/.exec(key) : null
      if (token) admissions.add(token[1], now)
      const part = queuePartOf(key)
      if (!part) continue
      const created = event.type === 'Put' && event.kv.version === '1'
      if (part.part === 'claim' && created) throughput.add(part.queue, 'received', now)
      else if (part.part === 'item' && event.type === 'Delete') throughput.add(part.queue, 'removed', now)
      if (part.part === 'item' && created && part.queue.startsWith('dlq/')) throughput.add(part.queue.slice(4), 'deadLettered', now)
    }
    schedule(DEBOUNCE_MS)
  })
  // A watch that fails or reconnects may have missed events: read every lock again.
  watcher.on('error', () => {
    lockCache.forget()
    schedule(DEBOUNCE_MS)
  })
  // Only a reconnection, not the first connection (which may come while the first snapshot reads).
  let lost = false
  watcher.on('disconnected', () => {
    lost = true
    lockCache.forget()
  })
  watcher.on('connected', () => {
    if (!lost) return
    lost = false
    lockCache.forget()
    schedule(0)
  })

  const authorized = (req: IncomingMessage, url: URL): 'ok' | 'cookie' | 'no' => {
    if (token === undefined) return 'ok'
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]
    if (sameSecret(bearer, token) || sameSecret(cookieOf(req, COOKIE), token)) return 'ok'
    return sameSecret(url.searchParams.get('token') ?? undefined, token) ? 'cookie' : 'no'
  }

  const section = (name: string, q: string): unknown[] => {
    if (!state) return []
    const match = (...texts: (string | undefined)[]) => q === '' || texts.some((t) => t?.includes(q))
    switch (name) {
      case 'locks':
        return state.locks.filter((l) => l.kind !== 'election' && match(l.name, ...[...l.holders, ...l.waiters].map((c) => c.key)))
      case 'elections':
        return state.locks.filter((l) => l.kind === 'election' && match(l.name, ...[...l.holders, ...l.waiters].map((c) => c.key)))
      case 'permits':
        return state.permits
          .filter((p) => match(p.name))
          .map((p) => (p.kind === 'rate limiter' ? { ...p, admittedPerSecond: admissions.perSecond(p.name, Date.now()) } : p))
      case 'queues':
        return state.queues.filter((q2) => match(q2.name))
      case 'barriers':
        return state.barriers.filter((b) => match(b.name))
      case 'records':
        return state.records.filter((r) => match(r.key, r.owner))
      default:
        throw new UiRequestError(404, `no section ${JSON.stringify(name)}: use locks, elections, permits, queues, barriers or records`)
    }
  }

  /** A queue message by id (its item's create revision), looked for in the queue and its dead-letter queue. */
  const lookup = async (queue: string, id: string) => {
    if (!/^[1-9]\d{0,18}$/.test(id))
      throw new UiRequestError(400, `message id ${JSON.stringify(id)} is not a revision number (the id peek shows)`)
    const wanted = BigInt(id)
    for (const where of [queue, defaultDeadLetterQueue(queue)]) {
      let found: string | undefined
      await scanKeys(client, queueKeys.items(where), (kv) => {
        if (found === undefined && kv.createRevision === wanted && queueItemOf(kv.key)?.queue === where) found = kv.key
      })
      if (found === undefined) continue
      const ks = keyspace(client)
      const { results } = await ks.reads({
        item: ks.get(found),
        marker: ks.get(queueKeys.marker(found, wanted), { countOnly: true }),
        counter: ks.get(queueKeys.counter(found, wanted), { keysOnly: true }),
      })
      const item = results.item.kvs[0]
      if (!item) continue
      return {
        queue: where,
        key: found,
        id,
        deadLetter: where !== queue,
        claimed: results.marker.count > 0n,
        receives: Number(results.counter.kvs[0]?.version ?? 0n),
        value: shortText(item.value),
      }
    }
    return null
  }

  const action = async (name: string, body: Record<string, unknown>) => {
    switch (name) {
      case 'redrive': {
        const queue = checkName(body.queue, 'queue')
        const max = body.max === undefined || body.max === null || body.max === '' ? undefined : Number(body.max)
        if (max !== undefined && !(Number.isSafeInteger(max) && max >= 1))
          throw new UiRequestError(400, `max must be a whole number of at least 1, got ${JSON.stringify(body.max)}`)
        const report = await redriveCommand(client, defaultDeadLetterQueue(queue), queue, max)
        return { ...(report.json as object), text: report.text }
      }
      case 'purge': {
        const report = await purge(client, checkName(body.queue, 'queue'))
        return { ...(report.json as object), text: report.text }
      }
      case 'revoke': {
        const hex = String(body.lease ?? '')
        if (!/^[0-9a-f]{1,16}$/.test(hex))
          throw new UiRequestError(400, `lease ${JSON.stringify(hex)} is not a lease id in hex (as the page shows it)`)
        const ID = BigInt(`0x${hex}`).toString()
        let keys: string[] = []
        try {
          const ttl = await client.leaseClient.leaseTimeToLive({ ID, keys: true })
          if (Number(ttl.TTL) < 0) throw new UiRequestError(404, `lease ${hex} does not exist (any more): nothing revoked`)
          keys = (ttl.keys ?? []).map((k) => {
            const b = Buffer.from(k)
            return (b.subarray(0, ns.length).equals(ns) ? b.subarray(ns.length) : b).toString()
          })
          await client.leaseClient.leaseRevoke({ ID })
        } catch (err) {
          if (err instanceof UiRequestError) throw err
          throw toTypedError(err, `etcd lease revoke ${hex}`)
        }
        return {
          lease: hex,
          keysDeleted: keys,
          text: `revoked lease ${hex}: deleted ${keys.length} key${keys.length === 1 ? '' : 's'}${keys.length ? ` (${keys.slice(0, 5).join(', ')}${keys.length > 5 ? ', …' : ''})` : ''}`,
        }
      }
      default:
        throw new UiRequestError(404, `no action ${JSON.stringify(name)}: use redrive, purge or revoke`)
    }
  }

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://page')
    // A page on another site resolving its own name to this address (DNS rebinding) sends its own Host.
    const hostHeader = req.headers.host ?? ''
    if (loopback && !LOOPBACK.has(hostHeader.replace(/:\d+$/, ''))) {
      throw new UiRequestError(403, `Host ${JSON.stringify(hostHeader)} is not this server's: open it as http://127.0.0.1:<port>/`)
    }
    const auth = authorized(req, url)
    if (auth === 'no') throw new UiRequestError(401, 'a token is needed: open the address the server printed (it ends in ?token=…)')
    if (auth === 'cookie') res.setHeader('set-cookie', `${COOKIE}=${encodeURIComponent(token!)}; HttpOnly; SameSite=Strict; Path=/`)
    const file = files[url.pathname]
    if (req.method === 'GET' && file) {
      res.writeHead(200, {
        'content-type': file.type,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        'content-security-policy':
          "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
      })
      res.end(file.body)
      return
    }
    if (req.method === 'GET' && url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' })
      res.write(': middy-etcd ui\n\n')
      viewers.add(res)
      if (summary !== undefined) res.write(`event: snapshot\ndata: ${JSON.stringify(summary)}\n\n`)
      req.on('close', () => viewers.delete(res))
      return
    }
    if (req.method === 'GET' && url.pathname === '/api/snapshot') return sendJson(res, 200, summary ?? null)
    if (req.method === 'GET' && url.pathname === '/api/list') {
      const rows = section(url.searchParams.get('section') ?? '', url.searchParams.get('q') ?? '')
      const offset = Math.max(0, Number(url.searchParams.get('offset') ?? 0) || 0)
      const limit = Math.min(MAX_PAGE, Math.max(1, Number(url.searchParams.get('limit') ?? 100) || 100))
      return sendJson(res, 200, { version, at: state?.at ?? null, total: rows.length, offset, rows: rows.slice(offset, offset + limit) })
    }
    if (req.method === 'GET' && url.pathname === '/api/queue') {
      const name = checkName(url.searchParams.get('name'), 'name')
      const view = state?.queues.find((q) => q.name === name) ?? null
      const peeked = (await peek(client, name, 10)).json as { items: Record<string, unknown>[]; more: boolean }
      // Values as peek shows them, shortened: the page shows no more of a message than the CLI does.
      const items = peeked.items.map(({ value, valueBase64, ...rest }) => ({
        ...rest,
        value:
          value !== undefined
            ? shortText(Buffer.from(String(value)))
            : `<${Buffer.from(String(valueBase64), 'base64').length} bytes binary>`,
      }))
      return sendJson(res, 200, { queue: view, peek: items, more: peeked.more, throughput: throughput.series(name, Date.now()) })
    }
    if (req.method === 'GET' && url.pathname === '/api/message') {
      const found = await lookup(checkName(url.searchParams.get('queue'), 'queue'), url.searchParams.get('id') ?? '')
      return sendJson(res, found ? 200 : 404, found ?? { error: 'no message with that id in the queue or its dead-letter queue' })
    }
    if (req.method === 'GET' && url.pathname === '/api/barrier') {
      return sendJson(res, 200, (await readBarrier(client, checkName(url.searchParams.get('name'), 'name'))).json)
    }
    const act = /^\/api\/actions\/([a-z]+)$/.exec(url.pathname)
    if (act) {
      if (req.method !== 'POST') throw new UiRequestError(405, 'actions are POST requests')
      if (!allowActions) throw new UiRequestError(403, 'this page is read-only: start it with --allow-actions to redrive, purge or revoke')
      if (req.headers[ACTION_HEADER] !== 'action')
        throw new UiRequestError(403, `an action needs the header ${ACTION_HEADER}: action (the page sends it)`)
      const origin = req.headers.origin
      if (origin !== undefined && origin !== `http://${hostHeader}`)
        throw new UiRequestError(403, `Origin ${origin} is not this page's: actions are taken from the page itself`)
      const body = await readBody(req)
      const done = await action(act[1], body)
      schedule(0)
      return sendJson(res, 200, done)
    }
    throw new UiRequestError(404, `no page ${url.pathname}`)
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) return res.end()
      if (err instanceof UiRequestError) return sendJson(res, err.status, { error: err.message })
      if (err instanceof UsageError) return sendJson(res, 400, { error: err.message })
      const typed = toTypedError(err, 'etcd')
      if (typed instanceof MiddyEtcdError && typed.code === 'INVALID_ARGUMENT') return sendJson(res, 400, { error: typed.message })
      sendJson(res, 502, { error: `etcd failed the request: ${(typed as Error).message}` })
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, host, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  void snapshot()
  const shownHost = host.includes(':') ? `[${host}]` : host
  return {
    url: `http://${shownHost}:${port}/${token ? `?token=${token}` : ''}`,
    host,
    port,
    ...(token ? { token } : {}),
    state: () => state,
    async close() {
      closed = true
      clearTimeout(refresher)
      if (timer) clearTimeout(timer)
      for (const viewer of viewers) viewer.end()
      await watcher.cancel().catch(() => {})
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await stopped
    },
  }
}
