import { spawnSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
/** Build outputs live under node_modules/.cache so bundles with external imports still resolve them. */
export const cacheDir = join(root, 'node_modules', '.cache', 'middy-etcd-bench')

/** Runs esbuild (from devDependencies) with `args`; throws with its output when it fails. */
export function esbuild(args: string[]): void {
  mkdirSync(cacheDir, { recursive: true })
  const r = spawnSync(join(root, 'node_modules', '.bin', 'esbuild'), args, { cwd: root, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`esbuild ${args.join(' ')} failed: ${r.stderr}`)
}
