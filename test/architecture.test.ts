// The layers hold: read from the source's import statements. lib/ knows nothing above it; the
// deployable dispatcher carries no Middy, plugin or build code; production code never imports
// test helpers; and no module imports itself back through others.
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const SOURCE_DIRS = ['lib', 'middleware', 'dispatch', 'offline', 'testing', 'cli', 'handlers']

function sourceFiles(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

/** Every module specifier a file imports or re-exports (static and dynamic). */
function specifiers(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8')
  const found = [
    ...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)|(?:^|\n)\s*import\s+'([^']+)'/g),
  ]
  return found.map((m) => m[1] ?? m[2] ?? m[3])
}

/** Project file a relative specifier names (`./x.js` → `dir/x.ts`), or the package name. */
function target(file: string, spec: string): string {
  if (!spec.startsWith('.'))
    return spec.startsWith('node:')
      ? spec
      : spec
          .split('/')
          .slice(0, spec.startsWith('@') ? 2 : 1)
          .join('/')
  return relative(root, resolve(root, dirname(file), spec)).replace(/\.js$/, '.ts')
}

const graph = new Map<string, string[]>(SOURCE_DIRS.flatMap(sourceFiles).map((f) => [f, specifiers(f).map((s) => target(f, s))]))

/**
 * The families of lib/, in the order they may import each other: a family imports only those
 * with a smaller rank (the primitives, rank 4, import none of each other; the barrel sees all).
 */
const FAMILY_RANK: Record<string, number> = {
  'errors.ts': 0,
  'limits.ts': 0,
  'timers.ts': 0,
  telemetry: 0.5,
  core: 1,
  session: 2,
  wait: 3,
  'fencing.ts': 3.5,
  locks: 4,
  barriers: 4,
  permits: 4,
  queue: 4,
  idempotency: 4,
  stm: 4,
  config: 4,
  'index.ts': 5,
}
const familyOf = (file: string) => file.split('/')[1]
const familyRank = (file: string) => FAMILY_RANK[familyOf(file)] ?? -1

/** Every module reachable from `start` (project files and package names). */
function reachable(start: string): Set<string> {
  const seen = new Set<string>()
  const visit = (m: string) => {
    if (seen.has(m)) return
    seen.add(m)
    for (const next of graph.get(m) ?? []) visit(next)
  }
  visit(start)
  return seen
}

describe('module layers', () => {
  it('finds the imports it checks', () => {
    expect(graph.size).toBeGreaterThan(40)
    expect(graph.get('dispatch/index.ts')).toContain('dispatch/handler.ts')
    expect(graph.get('dispatch/lambda-invoker.ts')).toContain('@aws-sdk/client-lambda')
  })

  it('lib/ imports nothing from the layers above it', () => {
    const bad = [...graph]
      .filter(([f]) => f.startsWith('lib/'))
      .flatMap(([f, deps]) => deps.filter((d) => /^(middleware|dispatch|offline|testing|cli|handlers)\//.test(d)).map((d) => `${f} → ${d}`))
    expect(bad).toEqual([])
  })

  it('inside lib/, each family imports only the families before it (docs/ARCHITECTURE.md, "lib/ by family")', () => {
    const bad = [...graph]
      .filter(([f]) => f.startsWith('lib/'))
      .flatMap(([f, deps]) =>
        deps.filter((d) => d.startsWith('lib/') && familyRank(d) >= familyRank(f) && familyOf(d) !== familyOf(f)).map((d) => `${f} → ${d}`),
      )
    expect(bad).toEqual([])
    // Every file of lib/ belongs to a family of the order: a new folder must be placed in it.
    expect([...graph.keys()].filter((f) => f.startsWith('lib/') && familyRank(f) < 0)).toEqual([])
  })

  it('the deployable dispatcher reaches only lib/, etcd3, the Lambda client and the optional OTel API: no Middy, plugin or build tool', () => {
    const deps = [...reachable('dispatch/index.ts')]
    expect(deps.filter((d) => /^(middleware|offline|testing|cli|handlers)\//.test(d))).toEqual([])
    expect(
      deps
        .filter((d) => !d.includes('/') || d.startsWith('@'))
        .filter((d) => !d.startsWith('node:'))
        .sort(),
      // @opentelemetry/api is an optional peer, imported only by lib/telemetry/otel.ts behind a guarded dynamic import.
    ).toEqual(['@aws-sdk/client-lambda', '@opentelemetry/api', 'cockatiel', 'etcd3'])
  })

  it('@opentelemetry/api, an optional peer, is loaded only by lib/telemetry/otel.ts, with a guarded dynamic import; elsewhere its types only', () => {
    const users = [...graph].filter(([, deps]) => deps.includes('@opentelemetry/api')).map(([f]) => f)
    expect(users).toContain('lib/telemetry/otel.ts')
    const loads = users.filter((f) => {
      const text = readFileSync(join(root, f), 'utf8')
      return (
        /^\s*import\s+(?!type\s)[^;]*from\s+'@opentelemetry\/api'/m.test(text) || /(?<!typeof )import\(\s*'@opentelemetry\/api'/.test(text)
      )
    })
    expect(loads).toEqual(['lib/telemetry/otel.ts'])
    expect(readFileSync(join(root, 'lib/telemetry/otel.ts'), 'utf8')).toMatch(
      /import\('@opentelemetry\/api'\)\.then\([\s\S]*?\(\) => false,?\s*\)/,
    )
  })

  it('production code (lib, middleware, dispatch, offline, cli) never imports testing/ or test/', () => {
    const bad = [...graph]
      .filter(([f]) => !f.startsWith('testing/') && !f.startsWith('handlers/'))
      .flatMap(([f, deps]) => deps.filter((d) => /^(testing|test)\//.test(d)).map((d) => `${f} → ${d}`))
    expect(bad).toEqual([])
  })

  it('no import cycle among the project modules', () => {
    const cycles: string[] = []
    const state = new Map<string, 'active' | 'done'>()
    const stack: string[] = []
    const visit = (m: string) => {
      state.set(m, 'active')
      stack.push(m)
      for (const next of graph.get(m) ?? []) {
        if (!graph.has(next)) continue
        if (state.get(next) === 'active') cycles.push([...stack.slice(stack.indexOf(next)), next].join(' → '))
        else if (!state.has(next)) visit(next)
      }
      stack.pop()
      state.set(m, 'done')
    }
    for (const m of graph.keys()) if (!state.has(m)) visit(m)
    expect(cycles).toEqual([])
  })
})
