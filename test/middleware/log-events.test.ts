// logEtcdEvents: every middleware event into Powertools' Logger (structured fields) or into
// plain JSON lines, with levels per event type; a throwing logger changes nothing.
import { Logger } from '@aws-lambda-powertools/logger'
import middy from '@middy/core'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { InvalidArgumentError } from '../../lib/index.js'
import { etcdLock, etcdPlugin, jsonLinesLogger, logEtcdEvents } from '../../middleware/index.js'
import { uniqueName, useEtcd } from '../helpers.js'
import { lambdaContext } from '../lambda.js'

const etcd = useEtcd()
const stops: (() => void)[] = []
afterEach(() => {
  for (const stop of stops.splice(0)) stop()
  vi.restoreAllMocks()
})

/** An etcdLock handler on a fresh lock name; returns the name. */
async function lockOnce(): Promise<string> {
  const name = uniqueName('logged')
  const handler = middy(async () => 'ok', etcdPlugin()).use(etcdLock({ name, client: etcd.client }))
  await handler({}, lambdaContext(5_000))
  return name
}

describe('logEtcdEvents', () => {
  it("writes Powertools Logger entries with the event's fields under etcd", async () => {
    const lines: string[] = []
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk))
      return true
    })
    const logger = new Logger({ serviceName: 'orders', logLevel: 'DEBUG' })
    stops.push(logEtcdEvents(logger))
    const name = await lockOnce()
    vi.restoreAllMocks()
    const entries = lines
      .flatMap((l) => l.split('\n'))
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l))
    const acquired = entries.find((e) => e.message === `etcd lock acquired ${name}`)
    expect(acquired).toMatchObject({
      level: 'INFO',
      service: 'orders',
      etcd: { type: 'acquired', primitive: 'lock', name, fence: expect.stringMatching(/^\d+$/) },
    })
    expect(entries.find((e) => e.message === `etcd lock released ${name}`)).toMatchObject({
      level: 'DEBUG',
      etcd: { heldMs: expect.any(Number) },
    })
  })

  it('writes plain JSON lines, with levels per event type and dropped types', async () => {
    const lines: string[] = []
    stops.push(
      logEtcdEvents(
        jsonLinesLogger((l) => lines.push(l)),
        { levels: { acquired: 'warn', released: false } },
      ),
    )
    const name = await lockOnce()
    const entries = lines.map((l) => JSON.parse(l)).filter((e) => e.etcd.name === name)
    expect(entries).toEqual([
      {
        level: 'WARN',
        message: `etcd lock acquired ${name}`,
        timestamp: expect.any(String),
        etcd: expect.objectContaining({ type: 'acquired', name }),
      },
    ])
  })

  it('stops when told, and a logger that throws does not fail the invocation', async () => {
    const lines: string[] = []
    const stop = logEtcdEvents(jsonLinesLogger((l) => lines.push(l)))
    stop()
    stops.push(
      logEtcdEvents(
        jsonLinesLogger(() => {
          throw new Error('log sink down')
        }),
      ),
    )
    await expect(lockOnce()).resolves.toMatch(/^logged-/)
    expect(lines).toEqual([])
  })

  it('refuses a logger without the methods it needs, and unknown levels', () => {
    expect(() => logEtcdEvents(undefined as never)).toThrow(InvalidArgumentError)
    expect(() => logEtcdEvents({ info() {} } as never)).toThrow(/no debug\(message, fields\) method/)
    // A logger with only info() is enough when no event goes to another level.
    stops.push(logEtcdEvents({ info() {} } as never, { levels: { released: false, lost: 'info', 'not-stored': 'info', reloaded: 'info' } }))
    expect(() => logEtcdEvents(jsonLinesLogger(), { levels: { acquired: 'loud' as never } })).toThrow(/levels.acquired must be/)
    expect(() => logEtcdEvents(jsonLinesLogger(), { levels: { gained: 'info' } as never })).toThrow(/unknown event type "gained"/)
  })
})
