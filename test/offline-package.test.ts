// The plugin's packaging pieces on their own: which functions it builds, the package.patterns
// matcher, the zip writer (read back as Lambda would), and the files it refuses to overwrite.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigurationError } from '../lib/index.js'
import type { FunctionObject, PluginLog, ServerlessLike } from '../offline/config.js'
import { hasOwnBundler, nodeFunctions, nodeTarget } from '../offline/functions.js'
import { patternFiles } from '../offline/package.js'
import { globToRegExp, selectFiles } from '../offline/patterns.js'
import { writeZip } from '../offline/zip.js'
import { unzip } from './support/artifact.js'

const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** A service directory holding `files` (path → content). */
function service(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-pkg-unit-'))
  dirs.push(dir)
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true })
    writeFileSync(join(dir, path), content)
  }
  return dir
}

function serverless(
  dir: string,
  functions: Record<string, FunctionObject>,
  extra: Partial<ServerlessLike['service']> = {},
): ServerlessLike {
  return {
    serviceDir: dir,
    service: {
      service: 's',
      provider: { name: 'aws', runtime: 'nodejs22.x' },
      getAllFunctions: () => Object.keys(functions),
      getFunction: (k) => functions[k],
      ...extra,
    },
  }
}

describe('which functions the plugin builds', () => {
  it('takes Node functions with a handler file, leaving other runtimes, images, disabled ones and own artifacts', () => {
    const dir = service({ 'h/a.mjs': '', 'h/b.ts': '', 'h/c.cjs': '', 'py/p.py': '' })
    const found = nodeFunctions(
      serverless(dir, {
        a: { handler: 'h/a.handler' },
        b: { handler: 'h/b.handler', runtime: 'nodejs20.x' },
        c: { handler: 'h/c.handler' },
        py: { handler: 'py/p.handler', runtime: 'python3.12' },
        image: { image: 'repo:tag' },
        off: { handler: 'h/a.handler', package: { disable: true } },
        own: { handler: 'h/a.handler', package: { artifact: 'prebuilt.zip' } },
      }),
    )
    expect(found.map((f) => [f.key, f.module, f.typescript])).toEqual([
      ['a', 'h/a', false],
      ['b', 'h/b', true],
      ['c', 'h/c', false],
    ])
  })

  it('a Node handler whose file is missing is a ConfigurationError naming the function and the paths tried', () => {
    const dir = service({})
    expect(() => nodeFunctions(serverless(dir, { gone: { handler: 'h/gone.handler' } }))).toThrow(ConfigurationError)
    expect(() => nodeFunctions(serverless(dir, { gone: { handler: 'h/gone.handler' } }))).toThrow(
      /function gone: no source for handler h\/gone.handler \(looked for h\/gone\{\.js,\.mjs,\.cjs,\.ts/,
    )
    expect(() => nodeFunctions(serverless(dir, { bad: { handler: 'nodot' } }))).toThrow(/must look like path\/to\/file.exportName/)
  })

  it('steps aside for serverless-esbuild, and targets the runtime', () => {
    const dir = service({})
    expect(hasOwnBundler(serverless(dir, {}, { plugins: ['serverless-esbuild', 'serverless-offline'] }))).toBe('serverless-esbuild')
    expect(hasOwnBundler(serverless(dir, {}, { plugins: { modules: ['middy-etcd/offline'] } }))).toBeUndefined()
    expect([nodeTarget('nodejs22.x'), nodeTarget('nodejs20.x'), nodeTarget(undefined)]).toEqual(['node22', 'node20', 'node20'])
  })
})

describe('package.patterns', () => {
  const dir = service({
    'config/a.json': '{}',
    'config/deep/b.json': '{}',
    'config/secret.pem': 'x',
    'certs/ca.pem': 'x',
    'handlers/x.js': '',
    'README.md': '',
    '.env': 'SECRET=1',
    'node_modules/pkg/index.js': '',
  })

  it('selects in order, `!` excluding what came before; a directory name selects its files; never node_modules', () => {
    expect(selectFiles(dir, ['config/**', '!config/*.pem'])).toEqual(['config/a.json', 'config/deep/b.json'])
    expect(selectFiles(dir, ['certs'])).toEqual(['certs/ca.pem'])
    expect(selectFiles(dir, ['**/*.{json,pem}', '!config/deep/**'])).toEqual(['certs/ca.pem', 'config/a.json', 'config/secret.pem'])
    expect(selectFiles(dir, ['**'])).not.toContain('node_modules/pkg/index.js')
    expect(selectFiles(dir, ['.env'])).toEqual(['.env'])
    expect(selectFiles(dir, [])).toEqual([])
  })

  it('globs match whole path segments', () => {
    expect(globToRegExp('config/*.json').test('config/deep/b.json')).toBe(false)
    expect(globToRegExp('config/**/*.json').test('config/a.json')).toBe(true)
    expect(globToRegExp('a?c').test('abc')).toBe(true)
    expect(globToRegExp('a.c').test('abc')).toBe(false)
  })

  it('never lets a pattern replace a bundle or the CommonJS package.json, and says so', () => {
    const warnings: string[] = []
    const log = Object.assign(() => {}, {
      notice() {},
      info() {},
      verbose() {},
      error() {},
      warning: (m: string) => warnings.push(m),
    }) as PluginLog
    const built = new Set(['handlers/x.js', 'package.json'])
    expect(patternFiles(dir, ['handlers/**', 'config/a.json'], built, log)).toEqual(['config/a.json'])
    expect(warnings).toEqual([expect.stringContaining('handlers/x.js')])
  })
})

describe('the zip writer', () => {
  it('writes what Lambda reads back: names, bytes, Unix modes, a fixed date (byte-identical when unchanged)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-zip-'))
    dirs.push(dir)
    const big = Buffer.alloc(200_000, 'abc')
    const entries = [
      { name: 'handlers/a.js', data: Buffer.from('exports.handler = async () => 1\n') },
      { name: 'bin/tool', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
      { name: 'data/big.txt', data: big },
      { name: 'ünïcode/name.txt', data: Buffer.from('x') },
    ]
    const first = join(dir, 'a.zip')
    const second = join(dir, 'b.zip')
    expect(writeZip(first, entries)).toBe(statSync(first).size)
    writeZip(second, entries)
    expect(readFileSync(first).equals(readFileSync(second))).toBe(true)
    const out = join(dir, 'out')
    expect(unzip(readFileSync(first), out)).toEqual(entries.map((e) => e.name))
    for (const e of entries) expect(readFileSync(join(out, e.name)).equals(e.data)).toBe(true)
    // The external attributes carry the mode: an executable stays executable.
    const zip = readFileSync(first)
    const modes: number[] = []
    for (
      let at = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
      at >= 0;
      at = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), at + 4)
    )
      modes.push((zip.readUInt32LE(at + 38) >>> 16) & 0o777)
    expect(modes).toEqual([0o644, 0o755, 0o644, 0o644])
  })
})
