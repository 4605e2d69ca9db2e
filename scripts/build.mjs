#!/usr/bin/env node
// `npm run build` (and `npm pack`, through prepack): compiles lib, middleware, dispatch, offline,
// testing and cli into a clean dist/, so no file of an earlier build (a moved module) ships.
import { execFileSync } from 'node:child_process'
import { cpSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
rmSync(join(root, 'dist'), { recursive: true, force: true })
execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
  cwd: root,
  stdio: 'inherit',
})
// The operations page's static files (cli/ui/assets: HTML, script, style) are read at run time
// next to the compiled server, so they ship in dist/ beside it.
cpSync(join(root, 'cli', 'ui', 'assets'), join(root, 'dist', 'cli', 'ui', 'assets'), { recursive: true })
