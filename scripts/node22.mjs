#!/usr/bin/env node
// Prints the bin directory of a Node 22 (the nodejs22.x runtime), installing it first when it is
// missing: the npm registry's node-<os>-<arch> package ships the official binary, so no other
// download is needed. It goes into node_modules/.cache/node22, outside the project's own tree.
import { execFileSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = `node-${process.platform}-${process.arch}`
const prefix = join(root, 'node_modules', '.cache', 'node22')
const bin = join(prefix, 'node_modules', pkg, 'bin')

function version() {
  try {
    return execFileSync(join(bin, 'node'), ['--version'], { encoding: 'utf8' }).trim()
  } catch {
    return ''
  }
}

if (!version().startsWith('v22.')) {
  mkdirSync(prefix, { recursive: true })
  process.stderr.write(`[node22] installing ${pkg}@22 from the npm registry…\n`)
  execFileSync('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', `${pkg}@22`], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
}
const installed = version()
if (!installed.startsWith('v22.')) {
  process.stderr.write(`[node22] ${pkg}@22 did not give a working Node 22 in ${bin} (got ${JSON.stringify(installed)})\n`)
  process.exit(1)
}
process.stderr.write(`[node22] ${installed} at ${bin}\n`)
process.stdout.write(`${bin}\n`)
