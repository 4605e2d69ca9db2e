// The offline build (offline/offline-build.ts) on a service of its own, without osls: the stack
// traces of its bundles, in a worker thread given the function's environment as
// serverless-offline gives it, and what it says when esbuild rebuilds a bundle.
// test/offline.test.ts checks the same through a real `osls offline start`.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { afterAll, describe, expect, it } from 'vitest'
import type { FunctionObject, PluginLog, ServerlessLike } from '../offline/config.js'
import { enableSourceMaps, type NodeFunction } from '../offline/functions.js'
import { buildForOffline, type OfflineBuild } from '../offline/offline-build.js'
import { until } from './helpers.js'

const HANDLER = `function explode(): never {
  throw new Error('exploded on purpose')
}

export const handler = async () => {
  explode()
}
`

function service(functions: Record<string, FunctionObject>, environment?: Record<string, unknown>): ServerlessLike {
  const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-offline-build-'))
  mkdirSync(join(dir, 'handlers'))
  writeFileSync(join(dir, 'handlers', 'explode.ts'), HANDLER)
  return {
    serviceDir: dir,
    service: {
      service: 'svc',
      provider: { name: 'aws', runtime: 'nodejs22.x', environment },
      getAllFunctions: () => Object.keys(functions),
      getFunction: (k) => functions[k],
    },
  }
}

function recorder() {
  const lines: string[] = []
  const log = Object.assign((m: string) => lines.push(m), {
    notice: (m: string) => lines.push(m),
    info: (m: string) => lines.push(m),
    warning: (m: string) => lines.push(m),
    error: (m: string) => lines.push(m),
    verbose: () => {},
  }) as PluginLog
  return { lines, log }
}

/** The stack of the bundle's error, thrown in a worker thread that gets `env` (as serverless-offline runs handlers). */
function stackInWorker(bundle: string, env: Record<string, string>): Promise<string> {
  const code = `const { parentPort } = require('node:worker_threads'); require(${JSON.stringify(bundle)}).handler().catch((err) => parentPort.postMessage(err.stack))`
  const worker = new Worker(code, { eval: true, env })
  return new Promise<string>((resolve, reject) => {
    worker.once('message', (stack: string) => resolve(stack))
    worker.once('error', reject)
  }).finally(() => worker.terminate())
}

describe('offline bundles', () => {
  const made: string[] = []
  const builds: OfflineBuild[] = []
  afterAll(async () => {
    for (const b of builds) await b.stop()
    for (const dir of made) rmSync(dir, { recursive: true, force: true })
  })

  it('have stack traces that point at the .ts lines in the worker thread serverless-offline runs them in', async () => {
    const fn: FunctionObject = { handler: 'handlers/explode.handler' }
    const svc = service({ explode: fn }, { NODE_OPTIONS: '--max-old-space-size=512' })
    made.push(svc.serviceDir)
    const { log } = recorder()
    const build = await buildForOffline(svc, log, { stateDir: join(svc.serviceDir, '.etcd-offline') })
    builds.push(build!)
    const bundle = join(svc.serviceDir, `${fn.handler!.replace(/\.handler$/, '')}.js`)
    expect(existsSync(`${bundle}.map`)).toBe(true)
    // The function's own NODE_OPTIONS (here the provider's) is kept, the flag added.
    expect(fn.environment).toEqual({ NODE_OPTIONS: '--max-old-space-size=512 --enable-source-maps' })
    const stack = await stackInWorker(bundle, { NODE_OPTIONS: String(fn.environment!.NODE_OPTIONS) })
    expect(stack).toMatch(/at explode \(.*handlers[\\/]explode\.ts:2:9\)/)
    expect(stack).toMatch(/at (Object\.)?handler \(.*handlers[\\/]explode\.ts:6:3\)/)
    // The CLI's own NODE_OPTIONS never reaches the worker: without the function's, the trace is the bundle's.
    expect(await stackInWorker(bundle, {})).toMatch(/handlers[\\/]explode\.js:\d+:\d+\)/)
  })

  it('custom.etcd.sourcemap: false leaves them without maps, and NODE_OPTIONS alone', async () => {
    const fn: FunctionObject = { handler: 'handlers/explode.handler' }
    const svc = service({ explode: fn })
    made.push(svc.serviceDir)
    const build = await buildForOffline(svc, recorder().log, { stateDir: join(svc.serviceDir, '.etcd-offline'), sourcemap: false })
    builds.push(build!)
    expect(existsSync(join(svc.serviceDir, `${fn.handler!.replace(/\.handler$/, '')}.js.map`))).toBe(false)
    expect(fn.environment).toBeUndefined()
  })

  it('a rebuild mentions --reloadHandler only when serverless-offline was started without it', async () => {
    for (const reloadHandler of [false, true]) {
      const fn: FunctionObject = { handler: 'handlers/explode.handler' }
      const svc = service({ explode: fn })
      made.push(svc.serviceDir)
      const { lines, log } = recorder()
      const build = await buildForOffline(svc, log, { stateDir: join(svc.serviceDir, '.etcd-offline'), reloadHandler })
      builds.push(build!)
      writeFileSync(join(svc.serviceDir, 'handlers', 'explode.ts'), `${HANDLER}// changed\n`)
      const rebuilt = await until('the rebuild', 20_000, () => lines.find((l) => l.startsWith('etcd: rebuilt')))
      if (reloadHandler) expect(rebuilt).toBe('etcd: rebuilt 1 handler bundle (the next invocation loads them)')
      else expect(rebuilt).toBe('etcd: rebuilt 1 handler bundle (restart, or start with --reloadHandler to load them without a restart)')
    }
  })
})

describe('enableSourceMaps', () => {
  const fn = (environment?: Record<string, unknown>): NodeFunction => ({
    key: 'f',
    fn: { handler: 'h.handler', environment },
    module: 'h',
    source: '/h.ts',
    typescript: true,
  })
  const svc = (environment?: Record<string, unknown>): ServerlessLike => ({
    serviceDir: '/nowhere',
    service: { service: 's', provider: { environment }, getAllFunctions: () => [], getFunction: () => ({}) },
  })

  it('adds the flag once, after the function-level or provider NODE_OPTIONS, and leaves a reference alone', () => {
    const own = fn({ NODE_OPTIONS: '--stack-trace-limit=50', OTHER: 'x' })
    const already = fn({ NODE_OPTIONS: '--enable-source-maps' })
    const none = fn()
    expect(enableSourceMaps(svc({ NODE_OPTIONS: '--max-old-space-size=512' }), [own, already, none])).toEqual([])
    expect(own.fn.environment).toEqual({ NODE_OPTIONS: '--stack-trace-limit=50 --enable-source-maps', OTHER: 'x' })
    expect(already.fn.environment).toEqual({ NODE_OPTIONS: '--enable-source-maps' })
    expect(none.fn.environment).toEqual({ NODE_OPTIONS: '--max-old-space-size=512 --enable-source-maps' })
    const ref = fn({ NODE_OPTIONS: { Ref: 'Options' } })
    expect(enableSourceMaps(svc(), [ref])).toEqual(['f'])
    expect(ref.fn.environment).toEqual({ NODE_OPTIONS: { Ref: 'Options' } })
  })
})
