// `package.patterns` as osls reads them: globs applied in order over the service's files, a
// leading `!` excluding what earlier patterns included. Here they add files to an artifact whose
// code is bundled, so node_modules is never walked (dependencies are in the bundles).
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

/** Directories never shipped: build output, VCS data, installed packages, offline state. */
const NEVER = new Set(['.git', 'node_modules', '.serverless', '.etcd-offline'])

/** A glob (`*`, `**`, `?`, `{a,b}`) as a regular expression over `/`-separated relative paths. */
export function globToRegExp(glob: string): RegExp {
  let re = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]
    if (c === '*' && glob[i + 1] === '*') {
      // `**/` matches zero or more whole directories; a trailing `**` matches everything below.
      if (glob[i + 2] === '/') {
        re += '(?:.*/)?'
        i += 2
      } else {
        re += '.*'
        i += 1
      }
    } else if (c === '*') re += '[^/]*'
    else if (c === '?') re += '[^/]'
    else if (c === '{') {
      const close = glob.indexOf('}', i)
      if (close < 0) re += '\\{'
      else {
        re += `(?:${glob
          .slice(i + 1, close)
          .split(',')
          .map((alt) => globToRegExp(alt).source.slice(1, -1))
          .join('|')})`
        i = close
      }
    } else re += /[.+^$()|[\]\\]/.test(c) ? `\\${c}` : c
  }
  return new RegExp(`^${re}$`)
}

/** Every file under `root` (relative, `/`-separated), outside the directories never shipped. */
export function serviceFiles(root: string, dir = ''): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((e) => {
      const rel = dir ? `${dir}/${e.name}` : e.name
      if (e.isDirectory()) return NEVER.has(e.name) ? [] : serviceFiles(root, rel)
      return e.isFile() ? [rel] : []
    })
}

/**
 * The files of `root` that `patterns` select, in path order. A pattern that names a directory
 * selects everything in it (`certs` as `certs/**`).
 */
export function selectFiles(root: string, patterns: string[]): string[] {
  if (patterns.length === 0) return []
  const rules = patterns.map((p) => {
    const exclude = p.startsWith('!')
    const glob = (exclude ? p.slice(1) : p).replace(/^\.\//, '').replace(/\/$/, '')
    return { exclude, file: globToRegExp(glob), dir: globToRegExp(`${glob}/**`) }
  })
  return serviceFiles(root).filter((file) => {
    let selected = false
    for (const r of rules) if (r.file.test(file) || r.dir.test(file)) selected = !r.exclude
    return selected
  })
}
