// Every code block of README.md is checked, so the README cannot drift from the code:
// - ts: type-checked together under `strict` (as a user's project would import `middy-etcd/…`),
//   then each executed twice against a real etcd — a handler it exports is invoked twice, top-level
//   code runs twice — so an example that only works once (a deadlock on the second run) fails;
//   the "Testing your functions" blocks are files (named by their first line) that vitest runs;
// - ts and sql quoted from `examples/*.ts` (excerpts that need the rest of their file, or a
//   database): every line is in an example file that a test imports and runs;
// - sh: every line is a command this repository has (npm scripts, osls, the CLI's usage lines,
//   the example service's HTTP routes), and the Install commands are the ones
//   test/user-service.test.ts runs;
// - json / yaml: parsed and checked by the plugin's own config checks (and the dispatcher's
//   settings are the ones test/fixtures/user-service deploys);
// - text: the plugin's start-up lines.
import { spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import yaml from 'js-yaml'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { barrier } from '../cli/barrier.js'
import { config } from '../cli/config.js'
import { leader } from '../cli/leader.js'
import { locks } from '../cli/locks.js'
import { queue } from '../cli/queue.js'
import { semaphores } from '../cli/semaphores.js'
import { ui } from '../cli/ui/command.js'
import { resolveClientOptions } from '../lib/index.js'
import { queueSubscriptions, readConfig, type FunctionObject, type ServerlessLike } from '../offline/config.js'
import { lambdaContext } from '../testing/index.js'
import { useEtcd } from './helpers.js'
import { START_LINES } from './support/offline-log.js'
import { etcdctl, startMember, type Member } from './support/secure-etcd.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const readme = readFileSync(join(root, 'README.md'), 'utf8')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
/** Where the blocks are written: inside the repository, so their packages resolve from node_modules. */
const blockDir = join(root, 'test', '.readme-blocks')

/** What `import … from 'middy-etcd/…'` means inside this repository: the sources. */
const ENTRIES: Record<string, string> = {
  'middy-etcd': 'lib/index.ts',
  'middy-etcd/middleware': 'middleware/index.ts',
  'middy-etcd/dispatcher': 'dispatch/index.ts',
  'middy-etcd/offline': 'offline/index.ts',
  'middy-etcd/testing': 'testing/index.ts',
}

interface Block {
  lang: string
  code: string
  /** 1-based line of the opening fence. */
  line: number
  /** The `## ` section it is in. */
  section: string
}

function readmeBlocks(): Block[] {
  const blocks: Block[] = []
  let section = ''
  const lines = readme.split('\n')
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].startsWith('## ')) section = lines[i].slice(3)
    const open = /^```(\S*)\s*$/.exec(lines[i])
    if (!open) continue
    const start = i
    const body: string[] = []
    while (++i < lines.length && !lines[i].startsWith('```')) body.push(lines[i])
    blocks.push({ lang: open[1], code: `${body.join('\n')}\n`, line: start + 1, section })
  }
  return blocks
}

const examples = Object.fromEntries(
  readdirSync(join(root, 'examples'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => [f, readFileSync(join(root, 'examples', f), 'utf8')]),
)

/** The example files a block is quoted from (its lines other than imports and comments), or []. */
function quotedFrom(b: Block): string[] {
  const lines = b.code
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('import ') && !l.startsWith('//'))
  const files = Object.entries(examples)
    .filter(([, text]) => lines.some((l) => text.includes(l)))
    .map(([f]) => f)
  const all = files.map((f) => examples[f]).join('\n')
  return lines.length > 0 && lines.every((l) => all.includes(l)) ? files : []
}

const blocks = readmeBlocks()
const where = (b: Block) => `README.md:${b.line} (${b.section})`
const TESTING = 'Testing your functions'
/** The file a block of "Testing your functions" is: its first line, `// handlers/orders.ts`. */
const fileOf = (b: Block) => /^\/\/ (\S+\.ts)\n/.exec(b.code)?.[1] ?? `unnamed-${b.line}.ts`
const isVitestFile = (b: Block) => b.code.includes("from 'vitest'")
const byLang = (lang: string) => blocks.filter((b) => b.lang === lang && quotedFrom(b).length === 0)
const quoted = blocks.filter((b) => (b.lang === 'ts' || b.lang === 'sql') && quotedFrom(b).length > 0)

describe('README code blocks', () => {
  it('are all of a kind the suite checks', () => {
    expect(blocks.length).toBeGreaterThan(10)
    expect(blocks.filter((b) => !['ts', 'sh', 'json', 'yaml', 'text'].includes(b.lang) && !quoted.includes(b)).map(where)).toEqual([])
  })

  it('quoted from examples/: every line is in an example file that a test runs', () => {
    const tests = readdirSync(join(root, 'test'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.test.ts'))
      .map((f) => readFileSync(join(root, 'test', f), 'utf8'))
      .join('\n')
    for (const b of quoted)
      for (const file of quotedFrom(b))
        expect(tests, `${where(b)} quotes examples/${file}`).toContain(`examples/${file.replace(/\.ts$/, '.js')}`)
    // The quoted blocks are the idempotency, fencing and queue ones; everything else runs here.
    expect([...new Set(quoted.map((b) => b.section))].sort()).toEqual(['Fencing downstream', 'Idempotency and single flight', 'Queues'])
  })

  describe('ts', () => {
    const etcd = useEtcd(1)
    const tsBlocks = byLang('ts')
    let auth: Member
    let ssm: Server
    // A block of "Testing your functions" is the file its first line names (`// handlers/x.ts`):
    // the test imports the handler by its relative path.
    const files = tsBlocks.map((b, i) => (b.section === TESTING ? join(blockDir, 'testing', fileOf(b)) : join(blockDir, `block-${i}.ts`)))

    beforeAll(async () => {
      rmSync(blockDir, { recursive: true, force: true })
      mkdirSync(blockDir, { recursive: true })
      tsBlocks.forEach((b, i) => {
        mkdirSync(dirname(files[i]), { recursive: true })
        writeFileSync(files[i], b.code)
      })
      // For the credentials example: an etcd with auth, and an SSM stand-in that serves the
      // user's password as the SecureString parameter the example names.
      auth = await startMember()
      etcdctl(auth.endpoint, ['user', 'add', 'root:readme-root-pw'])
      etcdctl(auth.endpoint, ['user', 'grant-role', 'root', 'root'])
      etcdctl(auth.endpoint, ['role', 'add', 'billing'])
      etcdctl(auth.endpoint, ['role', 'grant-permission', '--prefix=true', 'billing', 'readwrite', 'billing/'])
      etcdctl(auth.endpoint, ['user', 'add', 'billing:readme-billing-pw'])
      etcdctl(auth.endpoint, ['user', 'grant-role', 'billing', 'billing'])
      etcdctl(auth.endpoint, ['auth', 'enable'])
      ssm = await ssmStandIn(JSON.stringify({ username: 'billing', password: 'readme-billing-pw' }))
    }, 60_000)

    afterAll(async () => {
      ssm?.close()
      await auth?.stop()
      rmSync(blockDir, { recursive: true, force: true })
    })

    it('type-check under strict, importing middy-etcd as a user does', () => {
      const program = ts.createProgram(files, {
        strict: true,
        noEmit: true,
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.NodeNext,
        moduleResolution: ts.ModuleResolutionKind.NodeNext,
        types: ['node'],
        skipLibCheck: true,
        esModuleInterop: true,
        paths: Object.fromEntries(Object.entries(ENTRIES).map(([name, file]) => [name, [join(root, file)]])),
      })
      const problems = ts.getPreEmitDiagnostics(program).map((d) => {
        const at = d.file ? files.indexOf(d.file.fileName) : -1
        const block =
          at >= 0
            ? `${where(tsBlocks[at])}, line ${d.file!.getLineAndCharacterOfPosition(d.start ?? 0).line + 1} of the block`
            : (d.file?.fileName ?? '')
        return `${block}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
      })
      expect(problems).toEqual([])
    }, 120_000)

    // A vitest file runs under vitest (below), not as a module.
    const runnable = tsBlocks.map((b, i) => [b, i] as const).filter(([b]) => !isVitestFile(b))
    it.each(runnable.map(([b, i]) => [where(b), i] as const))(
      '%s runs twice against etcd',
      async (_name, i) => {
        const block = tsBlocks[i]
        const runFile = join(blockDir, `run-${i}.ts`)
        // The same code, with middy-etcd/… pointing at this repository's sources.
        writeFileSync(
          runFile,
          block.code.replace(/from '(middy-etcd(?:\/\w+)?)'/g, (m, name: string) =>
            ENTRIES[name] ? `from '${relativeImport(runFile, ENTRIES[name])}'` : m,
          ),
        )
        const env = blockEnv(block.code, {
          endpoints: etcd.cluster.endpoints,
          auth: auth.endpoint,
          ssm: `http://127.0.0.1:${(ssm.address() as AddressInfo).port}`,
        })
        const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
        Object.assign(process.env, env)
        try {
          for (const run of [1, 2]) {
            const mod = await bounded(`run ${run}: import`, import(`${pathToFileURL(runFile).href}?run=${run}`))
            if (typeof mod.handler === 'function') {
              const result = await bounded(`run ${run}: handler`, mod.handler({}, lambdaContext(10_000)))
              expect(result, `${where(block)} handler result`).toBeDefined()
            }
          }
        } finally {
          for (const [k, v] of Object.entries(saved)) {
            if (v === undefined) delete process.env[k]
            else process.env[k] = v
          }
        }
      },
      60_000,
    )
  })

  it('Testing your functions: vitest runs the handler and its test file, with no ETCD_ENDPOINTS at import', async () => {
    const testing = blocks.filter((b) => b.lang === 'ts' && b.section === TESTING)
    expect(testing.map(fileOf)).toEqual(['handlers/orders.ts', 'handlers/orders.test.ts'])
    const dir = join(blockDir, 'testing-run')
    rmSync(dir, { recursive: true, force: true })
    for (const b of testing) {
      const file = join(dir, fileOf(b))
      mkdirSync(dirname(file), { recursive: true })
      writeFileSync(
        file,
        b.code.replace(/from '(middy-etcd(?:\/\w+)?)'/g, (m, name: string) =>
          ENTRIES[name] ? `from '${relativeImport(file, ENTRIES[name])}'` : m,
        ),
      )
    }
    // A config of its own: the repository's would run its own suite.
    writeFileSync(join(dir, 'vitest.config.mjs'), "export default { test: { include: ['**/*.test.ts'] } }\n")
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(ETCD_ENDPOINTS|ETCDCTL_ENDPOINTS|VITEST.*)$/.test(k)))
    const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', dir], {
        cwd: dir,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let out = ''
      for (const stream of [child.stdout, child.stderr]) stream.on('data', (d: Buffer) => (out += d.toString()))
      child.on('exit', (code) => resolve({ code, out }))
    }).finally(() => rmSync(dir, { recursive: true, force: true })) // a test file left here would join the next suite run
    expect(run.out).toMatch(/Tests\s+.*1 passed/)
    expect(run.code, run.out).toBe(0)
  }, 120_000)

  describe('sh', () => {
    const routes = serviceRoutes()
    const usages = [locks, leader, queue, barrier, semaphores, config, ui].flatMap((c) => c.usage.split('\n'))

    /** Why a line is a command this repository has, or undefined. */
    function known(line: string, section: string): string | undefined {
      const command = line.replace(/\s+#.*$/, '').trim()
      if (section === 'Install')
        return /^npm install (--save-dev )?[@\w/.-]+( [@\w/.-]+)*$/.test(command) ? 'run by test/user-service.test.ts' : undefined
      const script = /^npm (test|start|run (\S+))$/.exec(command)
      if (script) return pkg.scripts[script[2] ?? script[1]] ? 'an npm script' : undefined
      const deploy = /^ETCD_ENDPOINTS=(\S+) node_modules\/\.bin\/osls deploy --stage \w+$/.exec(command)
      if (deploy) return resolveClientOptions({ endpoints: deploy[1], env: {} }) && pkg.devDependencies.osls ? 'osls deploy' : undefined
      if (command.startsWith('middy-etcd ')) return usages.includes(command.slice('middy-etcd '.length)) ? 'a CLI usage line' : undefined
      if (command.startsWith('curl ')) {
        const calls = command
          .split(/;|&(?!&)/)
          .map((c) => c.trim())
          .filter(Boolean)
        const unknown = calls.filter((c) => {
          const m = /^curl (?:-X(\w+) )?'?localhost:3000(\/[^\s'?]*)/.exec(c)
          return !m || !routes.some((r) => r.method === (m[1] ?? 'GET') && r.path.test(m[2]))
        })
        return unknown.length === 0 ? 'routes of serverless.yml' : undefined
      }
      return undefined
    }

    it('every line is a command the repository has', () => {
      const unknown = byLang('sh').flatMap((b) =>
        b.code
          .split('\n')
          .filter((l) => l.trim() && !l.trim().startsWith('#'))
          .filter((l) => !known(l, b.section))
          .map((l) => `${where(b)}: ${l}`),
      )
      expect(unknown).toEqual([])
    })

    it('the Install commands are the ones test/user-service.test.ts runs', () => {
      const install = byLang('sh').filter((b) => b.section === 'Install')
      expect(install).toHaveLength(1)
      const test = readFileSync(join(root, 'test', 'user-service.test.ts'), 'utf8')
      expect(test).toContain('/\\n## Install\\n([\\s\\S]*?)\\n## /')
      expect(install[0].code).toMatch(/^npm install middy-etcd @middy\/core\n/)
    })
  })

  it('json: the Install override is the one this repository uses', () => {
    const [install, ...others] = byLang('json')
    expect(others).toEqual([])
    expect(JSON.parse(install.code)).toEqual({ overrides: { serverless: pkg.overrides.serverless } })
  })

  it("yaml: custom.etcd and the etcdQueue events pass the plugin's checks", () => {
    for (const b of byLang('yaml')) {
      const doc = yaml.load(b.code) as { plugins?: string[]; custom?: Record<string, unknown>; functions?: Record<string, FunctionObject> }
      const serverless = fakeServerless(doc)
      expect(() => readConfig(serverless), where(b)).not.toThrow()
      expect(() => queueSubscriptions(serverless), where(b)).not.toThrow()
      for (const plugin of doc.plugins ?? [])
        if (plugin.startsWith('middy-etcd')) expect(Object.keys(pkg.exports), where(b)).toContain(`.${plugin.slice('middy-etcd'.length)}`)
    }
  })

  it('yaml: the dispatcher settings are the ones test/fixtures/user-service deploys', () => {
    const dispatcher = byLang('yaml').find((b) => b.section === 'Deploying' && b.code.includes('dispatcher'))!
    const fixture = yaml.load(readFileSync(join(root, 'test', 'fixtures', 'user-service', 'serverless.yml'), 'utf8'))
    const missing = leaves(yaml.load(dispatcher.code)).filter(
      ([path, value]) => JSON.stringify(at(fixture, path)) !== JSON.stringify(value),
    )
    expect(missing.map(([path, value]) => `${path.join('.')} = ${JSON.stringify(value)}`)).toEqual([])
  })

  it("yaml: the VPC block is the one this repository's serverless.yml has (commented out)", () => {
    const vpc = byLang('yaml').filter((b) => b.section === 'Deploying' && b.code.includes('vpc:'))
    expect(vpc).toHaveLength(1)
    const service = readFileSync(join(root, 'serverless.yml'), 'utf8')
    const commented = /^ {2}# vpc:\n(?: {2}# .*\n)+/m.exec(service)?.[0]
    expect(commented, 'a commented provider.vpc block in serverless.yml').toBeDefined()
    const uncommented = `provider:\n${commented!.replace(/^ {2}# /gm, '  ')}`
    expect(yaml.load(vpc[0].code)).toEqual(yaml.load(uncommented))
    expect(yaml.load(vpc[0].code)).toEqual({
      provider: {
        vpc: {
          securityGroupIds: [expect.stringMatching(/^sg-/)],
          subnetIds: [expect.stringMatching(/^subnet-/), expect.stringMatching(/^subnet-/)],
        },
      },
    })
  })

  it('text: the offline start-up lines are the ones the plugin prints', () => {
    for (const b of byLang('text')) {
      const unknown = b.code
        .split('\n')
        .filter((l) => l && !START_LINES.some((re) => new RegExp(`^${re.source.replace(/^\^|\$$/g, '')}$`).test(l)))
      expect(unknown, where(b)).toEqual([])
    }
  })
})

/** The env a block runs with: the test etcd, and what the credentials and dispatcher examples need. */
function blockEnv(code: string, at: { endpoints: string[]; auth: string; ssm: string }): Record<string, string> {
  const env: Record<string, string> = { ETCD_ENDPOINTS: at.endpoints.join(',') }
  if (code.includes('credentials:')) {
    Object.assign(env, {
      ETCD_ENDPOINTS: at.auth,
      AWS_ENDPOINT_URL_SSM: at.ssm,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'readme',
      AWS_SECRET_ACCESS_KEY: 'readme',
    })
  }
  if (code.includes("'middy-etcd/dispatcher'")) {
    // A subscription to an empty queue: the dispatcher claims for its minimum window and returns.
    Object.assign(env, { ETCD_QUEUE_SUBSCRIPTIONS: JSON.stringify([{ function: 'readme-consumer', queue: 'readme/empty' }]) })
  }
  return env
}

/** Answers SSM's GetParameter(s) with `value` for any name (the JSON protocol the SDK speaks). */
function ssmStandIn(value: string): Promise<Server> {
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '')
      const input = JSON.parse(body || '{}') as { Name?: string; Names?: string[] }
      const param = (Name: string) => ({ Name, Type: 'SecureString', Value: value, Version: 1 })
      const out = target.endsWith('.GetParameters')
        ? { Parameters: (input.Names ?? []).map(param), InvalidParameters: [] }
        : { Parameter: param(input.Name ?? '') }
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' }).end(JSON.stringify(out))
    })
  })
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)))
}

function relativeImport(from: string, file: string): string {
  return relative(dirname(from), join(root, file)).replace(/\.ts$/, '.js')
}

/** A bound that only detects hangs (an example that deadlocks on its second run). */
function bounded<T>(what: string, work: Promise<T>, ms = 30_000): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    work,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer))
}

/** The httpApi routes of the example service, as method + path pattern. */
function serviceRoutes(): { method: string; path: RegExp }[] {
  const service = yaml.load(readFileSync(join(root, 'serverless.yml'), 'utf8')) as {
    functions: Record<string, { events?: { httpApi?: string }[] }>
  }
  return Object.values(service.functions).flatMap((fn) =>
    (fn.events ?? [])
      .filter((e) => typeof e.httpApi === 'string')
      .map((e) => {
        const [method, path] = e.httpApi!.split(' ')
        return { method, path: new RegExp(`^${path.replace(/\{[^}]+\}/g, '[^/]+')}$`) }
      }),
  )
}

/** A stand-in for osls's `serverless` object over a parsed serverless.yml fragment. */
function fakeServerless(doc: { custom?: Record<string, unknown>; functions?: Record<string, FunctionObject> }): ServerlessLike {
  const functions = doc.functions ?? {}
  return {
    serviceDir: root,
    service: {
      service: 'readme',
      custom: doc.custom,
      provider: { name: 'aws', stage: 'dev' },
      getAllFunctions: () => Object.keys(functions),
      getFunction: (key) => functions[key],
    },
  }
}

/** Every leaf of a parsed YAML document, as [path, value]. */
function leaves(value: unknown, path: (string | number)[] = []): [(string | number)[], unknown][] {
  if (Array.isArray(value)) return value.flatMap((v, i) => leaves(v, [...path, i]))
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([k, v]) => leaves(v, [...path, k]))
  return [[path, value]]
}

function at(value: unknown, path: (string | number)[]): unknown {
  return path.reduce<unknown>((v, k) => (v as Record<string | number, unknown> | undefined)?.[k], value)
}
