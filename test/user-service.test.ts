// A user's own service, built from the package as npm publishes it: `npm pack`, a new service in
// a temporary folder outside the repository (test/fixtures/user-service: .mjs handlers with the
// middlewares, a .cjs handler with the primitives, a TypeScript handler, a plain handler, a
// Python function and a package.patterns entry), installed with exactly the commands of the
// README's "Install" section. Then `osls offline start` (an etcdLock function and an
// etcdQueue-triggered consumer, invoked), its stop (no etcd left), `osls package`, and each
// packaged handler run from its zip in a fresh Node process against etcd.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda'
import yaml from 'js-yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createClient, Queue, type EtcdClient, type QueueDispatchEvent } from '../lib/index.js'
import { freePort } from '../testing/index.js'
import { sleep, uniqueName, useEtcd, until, alive } from './helpers.js'
import { invokePackaged, unzip } from './support/artifact.js'

const run = promisify(execFile)
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const fixture = join(root, 'test', 'fixtures', 'user-service')
const etcd = useEtcd(1)

/** The README's "Install" section: its package.json snippet and its install commands. */
function readmeInstall(): { packageJson: Record<string, unknown>; commands: string[] } {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = /\n## Install\n([\s\S]*?)\n## /.exec(readme)?.[1]
  if (!section) throw new Error('README.md has no "## Install" section')
  const blocks = [...section.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], body: m[2] }))
  const json = blocks.filter((b) => b.lang === 'json')
  const sh = blocks.filter((b) => b.lang === 'sh')
  if (json.length !== 1 || sh.length !== 1) throw new Error("the README's Install section should have one json and one sh block")
  const commands = sh[0].body
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
  return { packageJson: JSON.parse(json[0].body), commands }
}

describe('a user service built from the installed tarball', () => {
  let service: string
  let tarball: string
  const timings: Record<string, number> = {}
  const timed = async <T>(step: string, work: () => Promise<T>): Promise<T> => {
    const started = performance.now()
    try {
      return await work()
    } finally {
      timings[step] = Math.round(performance.now() - started)
    }
  }
  const osls = (args: string[], env: Record<string, string | undefined> = {}) =>
    run(process.execPath, [join(service, 'node_modules', '.bin', 'osls'), ...args], {
      cwd: service,
      env: { ...process.env, ...env },
      timeout: 180_000,
      maxBuffer: 16 << 20,
    })

  beforeAll(async () => {
    const packDir = mkdtempSync(join(tmpdir(), 'middy-etcd-pack-'))
    // Outside the repository, so nothing resolves from the repository's node_modules.
    service = mkdtempSync(join(tmpdir(), 'middy-etcd-user-service-'))
    const { stdout } = await timed('npm pack', () =>
      run('npm', ['pack', '--pack-destination', packDir, '--silent'], { cwd: root, timeout: 180_000 }),
    )
    tarball = join(packDir, stdout.trim().split('\n').pop()!)
    cpSync(fixture, service, { recursive: true })
    const { packageJson, commands } = readmeInstall()
    writeFileSync(
      join(service, 'package.json'),
      JSON.stringify({ name: 'user-service', private: true, type: 'module', ...packageJson }, null, 2),
    )
    await timed('npm install (README commands)', async () => {
      for (const command of commands) {
        const [bin, ...args] = command.split(/\s+/)
        if (bin !== 'npm') throw new Error(`README install command ${JSON.stringify(command)} is not an npm command`)
        // The published name resolves to the tarball under test.
        // --prefer-offline: a second run (CI's Node 22 pass) takes the packages from npm's cache.
        const argv = [...args.map((a) => (a === 'middy-etcd' ? tarball : a)), '--no-audit', '--no-fund', '--prefer-offline']
        await run('npm', argv, { cwd: service, timeout: 300_000, maxBuffer: 16 << 20 })
      }
    })
  }, 600_000)

  afterAll(() => {
    console.log(`user-service timings (ms): ${JSON.stringify(timings)}; tarball ${(readFileSyncSize(tarball) / 1024).toFixed(0)} KiB`)
    if (service) rmSync(service, { recursive: true, force: true })
    if (tarball) rmSync(dirname(tarball), { recursive: true, force: true })
  })

  it('installs what the README lists: the tarball, Middy, osls (for serverless-offline) and esbuild', () => {
    const pkg = JSON.parse(readFileSync(join(service, 'package.json'), 'utf8'))
    expect(Object.keys(pkg.dependencies).sort()).toEqual(['@middy/core', 'middy-etcd'])
    expect(Object.keys(pkg.devDependencies).sort()).toEqual(['esbuild', 'osls', 'serverless-offline'])
    expect(pkg.overrides).toEqual({ serverless: 'npm:osls@4.3.1' })
    // README "Which Middy": npm gives Middy 7 on Node 22 and Middy 6 on Node 20 (7 needs Node 22).
    const middy = JSON.parse(readFileSync(join(service, 'node_modules', '@middy', 'core', 'package.json'), 'utf8')) as { version: string }
    expect(Number(middy.version.split('.')[0])).toBe(Number(process.versions.node.split('.')[0]) >= 22 ? 7 : 6)
    const installed = JSON.parse(readFileSync(join(service, 'node_modules', 'middy-etcd', 'package.json'), 'utf8'))
    expect(installed.version).toBe(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version)
    // The package ships its licence, its compiled code and types, and no source maps.
    const shipped = listFiles(join(service, 'node_modules', 'middy-etcd'))
    // etcd/: the pinned releases the launcher reads and the builder a user runs for the default etcd.
    expect(shipped).toEqual(
      expect.arrayContaining([
        'LICENSE',
        'README.md',
        'dist/lib/index.js',
        'dist/lib/index.d.ts',
        'dist/dispatch/index.js',
        'dist/cli/main.js',
        // The operations page's static files, read next to its compiled server.
        'dist/cli/ui/assets/index.html',
        'dist/cli/ui/assets/app.js',
        'dist/cli/ui/assets/app.css',
        'etcd/releases.json',
        'etcd/build.mjs',
      ]),
    )
    // The builder the README names runs from the installed package (a no-op here: the set-up built 3.7).
    const built = execFileSync(process.execPath, [join(service, 'node_modules', 'middy-etcd', 'etcd', 'build.mjs'), '3.7'], {
      encoding: 'utf8',
    })
    expect(built).toMatch(/^3\.7\t3\.7\.\d+\t\/.+\/etcd\n$/)
    expect(shipped.filter((f) => f.endsWith('.map'))).toEqual([])
    expect(shipped.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([])
    // serverless-offline's peer `serverless` is osls, not the licensed CLI.
    expect(JSON.parse(readFileSync(join(service, 'node_modules', 'serverless', 'package.json'), 'utf8')).name).toBe('osls')
  })

  it('`npx middy-etcd ui` serves the operations page from the installed package', async () => {
    const child = spawn(join(service, 'node_modules', '.bin', 'middy-etcd'), ['ui'], {
      cwd: service,
      env: { ...process.env, ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') },
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    try {
      const url = (await until('the address line', 20_000, () => /middy-etcd ui: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out)))![1]
      expect(await (await fetch(url)).text()).toContain('<title>middy-etcd · operations</title>')
      expect((await fetch(`${url}app.css`)).status).toBe(200)
    } finally {
      child.kill('SIGINT')
    }
  })

  it('loads the installed package with require() and import, and its types check under strict', async () => {
    const env = { PATH: process.env.PATH ?? '' }
    const cjs = await run(
      process.execPath,
      [
        '-e',
        "const m = require('middy-etcd'); const d = require('middy-etcd/dispatcher'); console.log(typeof m.Mutex, typeof m.createClient, typeof d.handler)",
      ],
      { cwd: service, env },
    )
    expect(cjs.stdout.trim()).toBe('function function function')
    const esm = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('middy-etcd/middleware'); const o = await import('middy-etcd/offline'); console.log(typeof m.etcdLock, typeof o.default)",
      ],
      { cwd: service, env },
    )
    expect(esm.stdout.trim()).toBe('function function')
    // The TypeScript handler against the published .d.ts files (aws-lambda types come with the package).
    writeFileSync(
      join(service, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          target: 'ES2022',
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [join(root, 'node_modules', '@types')],
        },
        files: ['handlers/typed.ts'],
      }),
    )
    const tsc = await run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], {
      cwd: service,
    }).catch((err) => err)
    expect(`${tsc.stdout ?? ''}${tsc.stderr ?? ''}`).toBe('')
  }, 60_000)

  it('without @opentelemetry/api (an optional peer: npm does not install it) the package loads and emits nothing', async () => {
    expect(existsSync(join(service, 'node_modules', '@opentelemetry', 'api'))).toBe(false)
    const env = { PATH: process.env.PATH ?? '' }
    const esm = await run(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('middy-etcd'); console.log(await m.telemetryReady(), m.MESSAGING_SYSTEM)"],
      { cwd: service, env },
    )
    expect(esm.stdout.trim()).toBe('false etcd')
  }, 60_000)

  describe('osls offline start', () => {
    let cli: ChildProcess
    let output = ''
    let lambda: LambdaClient
    let local: EtcdClient
    let etcdPid: number

    const invoke = async (fn: string, event: unknown = {}) => {
      const res = await lambda.send(
        new InvokeCommand({ FunctionName: `user-service-dev-${fn}`, Payload: Buffer.from(JSON.stringify(event)) }),
      )
      const body = JSON.parse(Buffer.from(res.Payload!).toString('utf8'))
      if (res.FunctionError) throw new Error(`${fn} failed: ${JSON.stringify(body)}\n${output}`)
      return body
    }

    beforeAll(async () => {
      const [httpPort, lambdaPort] = [await freePort(), await freePort()]
      await timed('offline start', async () => {
        cli = spawn(
          process.execPath,
          [
            join(service, 'node_modules', '.bin', 'osls'),
            'offline',
            'start',
            '--httpPort',
            String(httpPort),
            '--lambdaPort',
            String(lambdaPort),
          ],
          {
            cwd: service,
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        )
        for (const stream of [cli.stdout!, cli.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()))
        // No HTTP events: serverless-offline serves only its Lambda Invoke API.
        await until('the Invoke API from the CLI', 120_000, () => {
          if (cli.exitCode !== null) throw new Error(`osls exited with ${cli.exitCode}:\n${output}`)
          return output.includes(`[http for lambda] listening on http://localhost:${lambdaPort}`)
        }).catch((err: Error) => Promise.reject(new Error(`${err.message}\n${output}`)))
      })
      const m = /etcd: listening on (http:\/\/127\.0\.0\.1:\d+) \(1 member, pid (\d+), etcd 3\.\d+\.\d+\)/.exec(output)
      if (!m) throw new Error(`no etcd line in the CLI output:\n${output}`)
      etcdPid = Number(m[2])
      local = createClient({ endpoints: m[1] })
      lambda = new LambdaClient({
        endpoint: `http://127.0.0.1:${lambdaPort}`,
        region: 'us-east-1',
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      })
    }, 180_000)

    afterAll(() => {
      local?.close()
      lambda?.destroy()
      if (cli && cli.exitCode === null && cli.signalCode === null) cli.kill('SIGKILL')
      if (etcdPid && alive(etcdPid)) process.kill(etcdPid, 'SIGKILL')
    })

    it('bundles the functions that use middy-etcd and leaves the plain and Python ones alone', () => {
      expect(output).toMatch(/etcd: bundled lock, consumer, primitives, typed, dispatcher into \.etcd-offline\/build\/\d+/)
    })

    it('runs the etcdLock .mjs handler: fencing tokens grow across invocations', async () => {
      const first = await invoke('lock')
      const second = await invoke('lock')
      expect(first.key).toMatch(/^user-service\/lock\/[0-9a-f]+$/)
      expect(BigInt(second.fence)).toBeGreaterThan(BigInt(first.fence))
    }, 60_000)

    it('runs the TypeScript handler without any TypeScript loader pinned', async () => {
      expect(await invoke('typed', { who: 'ts' })).toMatchObject({
        hello: 'ts',
        errorBase: 'MiddyEtcdError',
        fence: expect.stringMatching(/^\d+$/),
      })
    }, 60_000)

    it('runs the .cjs primitives handler, which reads the file package.patterns ships', async () => {
      const result = await invoke('primitives', { value: 'offline' })
      expect(result).toMatchObject({ greeting: 'from package.patterns', enqueued: expect.stringMatching(/^user-service\/from-cjs\//) })
      expect(await local.get(result.enqueued).string()).toBe('offline')
    }, 60_000)

    it('delivers queued messages to the etcdQueue consumer', async () => {
      const values = [uniqueName('job'), uniqueName('job'), uniqueName('job')]
      const queue = new Queue(local, 'user-service/jobs')
      for (const v of values) await queue.enqueue(v)
      await timed('queue delivery', () =>
        until('the consumer to process every message', 30_000, async () => {
          const done = await Promise.all(values.map((v) => local.get(`user-service/done/${v}`).string()))
          return done.every((d) => d === '1')
        }),
      )
      await until('the queue to drain', 10_000, async () => (await queue.size()) === 0)
    }, 60_000)

    it("the installed CLI finds this session's etcd by itself", async () => {
      const env = { PATH: process.env.PATH ?? '' }
      // No ETCD_ENDPOINTS: the CLI reads .etcd-offline/ in the service directory.
      const cli = await run(join(service, 'node_modules', '.bin', 'middy-etcd'), ['queue', 'stats', 'user-service/jobs', '--json'], {
        cwd: service,
        env,
      })
      expect(JSON.parse(cli.stdout)).toMatchObject({ queue: 'user-service/jobs', items: expect.any(Number) })
      expect(cli.stderr).toContain('using the local etcd of serverless offline')
      const version = await run(join(service, 'node_modules', '.bin', 'middy-etcd'), ['--version'], { cwd: service, env })
      expect(version.stdout.trim()).toBe(`middy-etcd ${JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version}`)
    })

    it('stops on SIGINT and leaves no etcd, pid file or build behind', async () => {
      const exited = new Promise<void>((r) => cli.once('exit', () => r()))
      cli.kill('SIGINT')
      await Promise.race([exited, sleep(30_000).then(() => Promise.reject(new Error(`the CLI did not exit after SIGINT:\n${output}`)))])
      await until(`etcd ${etcdPid} to exit`, 5_000, () => !alive(etcdPid))
      const state = join(service, '.etcd-offline')
      expect(existsSync(state) ? readdirSync(state) : []).toEqual([])
      expect(output).toContain('etcd: stopped')
    }, 40_000)
  })

  describe('osls package', () => {
    let output = ''
    let artifacts: string
    let unpacked: string
    let files: string[]
    let template: { Resources: Record<string, { Properties: Record<string, any> }> }

    beforeAll(async () => {
      // Packaged without ETCD_ENDPOINTS: the plugin warns.
      const res = await timed('osls package', () => osls(['package'], { ETCD_ENDPOINTS: '' }))
      output = res.stdout + res.stderr
      artifacts = join(service, '.serverless')
      unpacked = mkdtempSync(join(tmpdir(), 'middy-etcd-user-artifact-'))
      files = unzip(readFileSync(join(artifacts, 'user-service-middy-etcd.zip')), unpacked)
      template = JSON.parse(readFileSync(join(artifacts, 'cloudformation-template-update-stack.json'), 'utf8'))
    }, 240_000)

    afterAll(() => {
      const kib = (name: string) => (readFileSyncSize(join(artifacts, name)) / 1024).toFixed(0)
      if (artifacts)
        console.log(`user-service artifacts (KiB): middy-etcd ${kib('user-service-middy-etcd.zip')}, framework ${kib('user-service.zip')}`)
      if (unpacked) rmSync(unpacked, { recursive: true, force: true })
    })

    it("packages the functions that use middy-etcd into one artifact: bundles (etcd3's protos built in), package.patterns files", () => {
      expect(files.sort()).toEqual(
        [
          'config/settings.json',
          'handlers/consumer.js',
          'handlers/dispatcher.js',
          'handlers/lock.js',
          'handlers/primitives.js',
          'handlers/typed.js',
          'package.json',
        ].sort(),
      )
      const code = (fn: string) => template.Resources[`${fn}LambdaFunction`].Properties.Code.S3Key as string
      for (const fn of ['Lock', 'Consumer', 'Primitives', 'Typed', 'Dispatcher'])
        expect(code(fn)).toMatch(/\/user-service-middy-etcd\.zip$/)
      expect(template.Resources.LockLambdaFunction.Properties.Handler).toBe('handlers/lock.handler')
      // The dispatcher may invoke the service's functions (README "Queues in the cloud").
      expect(JSON.stringify(template.Resources.IamRoleLambdaExecution.Properties.Policies)).toContain('lambda:InvokeFunction')
      expect(template.Resources.DispatcherLambdaFunction.Properties.Environment.Variables.ETCD_QUEUE_SUBSCRIPTIONS).toBe(
        JSON.stringify([
          { function: 'user-service-dev-consumer', functionKey: 'consumer', queue: 'user-service/jobs', priority: false, batchSize: 5 },
        ]),
      )
    })

    it('leaves the Python and the plain function to the framework, which honours package.patterns', () => {
      const code = (fn: string) => template.Resources[`${fn}LambdaFunction`].Properties.Code.S3Key as string
      expect(code('Hello')).toMatch(/\/user-service\.zip$/)
      expect(code('Plain')).toMatch(/\/user-service\.zip$/)
      expect(template.Resources.HelloLambdaFunction.Properties.Runtime).toBe('python3.12')
      const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-framework-artifact-'))
      try {
        const framework = unzip(readFileSync(join(artifacts, 'user-service.zip')), dir)
        expect(framework).toEqual(expect.arrayContaining(['py/handler.py', 'handlers/plain.mjs', 'config/settings.json']))
        expect(framework.some((f) => f.startsWith('node_modules/'))).toBe(false)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    })

    it('warns that the functions would deploy with an empty ETCD_ENDPOINTS', () => {
      expect(output).toMatch(/ETCD_ENDPOINTS is empty for lock, consumer, primitives, typed, dispatcher/)
    })

    it('runs every packaged handler from the zip in a fresh Node process against etcd', async () => {
      const env = { ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') }
      const first = await invokePackaged(unpacked, 'handlers/lock.js', 'handler', {}, env)
      const second = await invokePackaged(unpacked, 'handlers/lock.js', 'handler', {}, env)
      expect(BigInt(second.fence)).toBeGreaterThan(BigInt(first.fence))
      expect(await invokePackaged(unpacked, 'handlers/typed.js', 'handler', { who: 'zip' }, env)).toMatchObject({
        hello: 'zip',
        errorBase: 'MiddyEtcdError',
      })
      const cjs = await invokePackaged(unpacked, 'handlers/primitives.js', 'handler', { value: 'zipped' }, env)
      expect(cjs.greeting).toBe('from package.patterns')
      expect(await etcd.client.get(cjs.enqueued).string()).toBe('zipped')

      // The consumer, with a batch claimed the way the dispatcher claims it.
      const queue = new Queue(etcd.client, 'user-service/jobs')
      const value = uniqueName('zipped-job')
      await queue.enqueue(value)
      const [claimed] = await queue.receive({ max: 1, wait: false })
      const event: QueueDispatchEvent = {
        etcdQueue: {
          queue: 'user-service/jobs',
          messages: [
            { id: claimed.id, key: claimed.key, value: claimed.value, receiveCount: claimed.receiveCount, receipt: claimed.receipt },
          ],
        },
      }
      expect(await invokePackaged(unpacked, 'handlers/consumer.js', 'handler', event, env)).toEqual({ batchItemFailures: [] })
      expect(await etcd.client.get(`user-service/done/${value}`).string()).toBe('1')
      expect(await queue.size()).toBe(0)
    }, 90_000)

    it('packages one function on its own for `osls deploy function -f typed` (the package:function hook)', async () => {
      // osls cannot run `deploy function` without AWS: drive the installed plugin's hook directly.
      const { default: Plugin } = (await import(
        pathToFileURL(join(service, 'node_modules', 'middy-etcd', 'dist', 'offline', 'index.js')).href
      )) as { default: new (...args: unknown[]) => { hooks: Record<string, () => Promise<void>> } }
      const config = yaml.load(readFileSync(join(service, 'serverless.yml'), 'utf8')) as {
        functions: Record<string, Record<string, any>>
        custom: Record<string, unknown>
        provider: Record<string, any>
        package: Record<string, any>
      }
      const logged: string[] = []
      const log = Object.assign((m: string) => logged.push(m), {
        notice: (m: string) => logged.push(m),
        info: () => {},
        warning: (m: string) => logged.push(m),
        error: (m: string) => logged.push(m),
        verbose: () => {},
      })
      const serverless = {
        serviceDir: service,
        service: {
          service: 'user-service',
          custom: config.custom,
          provider: config.provider,
          package: config.package,
          getAllFunctions: () => Object.keys(config.functions),
          getFunction: (k: string) => config.functions[k],
        },
      }
      const plugin = new Plugin(serverless, { function: 'typed' }, { log })
      await plugin.hooks['before:package:function:package']()
      const artifact = config.functions.typed.package?.artifact as string
      expect(artifact).toBe(join(service, '.serverless', 'typed.zip'))
      expect(config.functions.lock.package?.artifact).toBeUndefined()
      const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-one-function-'))
      try {
        expect(unzip(readFileSync(artifact), dir).sort()).toEqual(['config/settings.json', 'handlers/typed.js', 'package.json'])
        expect(
          await invokePackaged(dir, 'handlers/typed.js', 'handler', { who: 'one' }, { ETCD_ENDPOINTS: etcd.cluster.endpoints.join(',') }),
        ).toMatchObject({ hello: 'one' })
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }, 60_000)

    it('runs the packaged dispatcher: it invokes the consumer through the Invoke API', async () => {
      const queue = new Queue(etcd.client, 'user-service/jobs')
      const value = uniqueName('dispatched')
      await queue.enqueue(value)
      const invoked: { fn: string; event: QueueDispatchEvent }[] = []
      // A stand-in for the Lambda Invoke API that acks what it is given.
      const server = createServer((req, res) => {
        let body = ''
        req.on('data', (c) => (body += c))
        req.on('end', async () => {
          const event = JSON.parse(body) as QueueDispatchEvent
          invoked.push({ fn: decodeURIComponent(req.url!.split('/')[3]), event })
          await queue.ackMany(event.etcdQueue.messages.map((m) => m.receipt))
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ batchItemFailures: [] }))
        })
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
      try {
        const env = {
          ETCD_ENDPOINTS: etcd.cluster.endpoints.join(','),
          MIDDY_ETCD_LAMBDA_ENDPOINT: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          ETCD_QUEUE_SUBSCRIPTIONS: template.Resources.DispatcherLambdaFunction.Properties.Environment.Variables.ETCD_QUEUE_SUBSCRIPTIONS,
          ETCD_DISPATCH_TAIL_MS: '0',
        }
        const result = await invokePackaged(unpacked, 'handlers/dispatcher.js', 'handler', {}, env, 2_000)
        expect(result).toEqual({ leader: true, dispatched: 1, failed: 0 })
        expect(invoked.map((i) => [i.fn, i.event.etcdQueue.messages.map((m) => m.value)])).toEqual([['user-service-dev-consumer', [value]]])
      } finally {
        server.close()
      }
    }, 60_000)
  })
})

function readFileSyncSize(path: string): number {
  return existsSync(path) ? readFileSync(path).length : 0
}

function listFiles(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = prefix ? `${prefix}/${e.name}` : e.name
    return e.isDirectory() ? (e.name === 'node_modules' ? [] : listFiles(dir, rel)) : [rel]
  })
}
