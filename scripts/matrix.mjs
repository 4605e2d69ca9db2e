#!/usr/bin/env node
// The etcd version matrix of CI (`.ci/run`): the whole suite (npm test, the README's test
// command) on the default release under Node 22 and the machine's Node, then the compatibility
// set on every other release of etcd/releases.json; one table at the end, version x group ->
// passed/failed, and a non-zero exit when any row failed.
//
//   node scripts/matrix.mjs                 # everything above
//   node scripts/matrix.mjs --compat 3.5    # the compatibility set on one release
//   node scripts/matrix.mjs --full          # only the whole-suite rows
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { etcdReleases } from '../etcd/build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/**
 * The compatibility set: what depends on the server's behaviour — every primitive, the Go and
 * etcdctl interop, session expiry and lease-loss signalling, the fault suite, one partition
 * scenario. The README's support table names the same groups.
 */
export const COMPAT_GROUPS = [
  {
    group: 'primitives',
    files: [
      'test/locks/mutex.test.ts',
      'test/locks/rwmutex.test.ts',
      'test/locks/election.test.ts',
      'test/queue/queue.test.ts',
      'test/queue/priority-queue.test.ts',
      'test/barriers/barrier.test.ts',
      'test/barriers/double-barrier.test.ts',
      'test/permits/semaphore.test.ts',
      'test/permits/rate-limiter.test.ts',
      'test/stm/stm.test.ts',
      'test/idempotency/idempotency.test.ts',
      'test/idempotency/single-flight.test.ts',
      'test/session/session.test.ts',
      'test/wait/delete-feed.test.ts',
    ],
  },
  {
    group: 'Go + etcdctl interop',
    files: ['test/interop-go.test.ts', 'test/locks/mutex-interop.test.ts', 'test/locks/election-interop.test.ts'],
  },
  {
    group: 'session expiry, lease loss',
    files: [
      'test/session/session-expiry.test.ts',
      'test/crash.test.ts',
      'test/core/client-close.test.ts',
      'test/session/lease-server.test.ts',
    ],
  },
  { group: 'faults', files: ['test/faults.test.ts'] },
  // `osls offline start` on the example service, its etcd given by ETCD_BIN (as a user's own etcd would be).
  { group: 'serverless offline', files: ['test/offline.test.ts'] },
  // One scenario of the partition file: a client cut off from every member.
  { group: 'partition', files: ['test/partitions.test.ts'], filter: 'a client cut off from every member' },
]

const log = (msg) => process.stderr.write(`[matrix] ${msg}\n`)

/**
 * Runs a command, its output passed through; resolves its exit code and the last lines it wrote
 * (a run that fails before any test, on lint or types, is explained by those lines after the table).
 */
function run(cmd, args, env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let tail = ''
    const keep = (out) => (chunk) => {
      out.write(chunk)
      tail = (tail + chunk).slice(-20_000)
    }
    child.stdout.on('data', keep(process.stdout))
    child.stderr.on('data', keep(process.stderr))
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), tail: lastLines(tail) }))
  })
}

/** Colour codes and Biome's frame characters off; the last `n` non-blank lines. */
function lastLines(text, n = 25) {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping the ANSI colour codes the tools write
  const plain = String(text).replace(/\u001b\[[0-9;]*m/g, '')
  return plain
    .split('\n')
    .filter((l) => l.trim())
    .slice(-n)
}

/** Node 22's bin directory (scripts/node22.mjs installs it from the npm registry when missing). */
async function node22Bin() {
  const out = await new Promise((resolve, reject) => {
    let text = ''
    const child = spawn(process.execPath, [join(root, 'scripts', 'node22.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] })
    child.stdout.on('data', (d) => (text += d))
    child.on('exit', (code) => (code === 0 ? resolve(text.trim()) : reject(new Error(`scripts/node22.mjs exited ${code}`))))
  })
  return out
}

/** The first lines of a failure message, without colour codes: enough to tell which check broke. */
function firstLines(text, n = 6) {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping the ANSI colour codes vitest writes
  const plain = String(text ?? '').replace(/\u001b\[[0-9;]*m/g, '')
  return plain
    .split('\n')
    .filter((l) => l.trim())
    .slice(0, n)
}

/**
 * Counts of a vitest JSON report, per file, and each failure by name. CI shows only the tail of
 * the log, so the table's closing list is where a failure must be readable.
 */
function readReport(path) {
  if (!existsSync(path)) return undefined
  const report = JSON.parse(readFileSync(path, 'utf8'))
  return report.testResults.map((file) => {
    const failures = file.assertionResults
      .filter((a) => a.status === 'failed')
      .map((a) => ({ name: a.fullName ?? a.title, lines: firstLines((a.failureMessages ?? []).join('\n')) }))
    // A file that failed outside any test (an import error, a hook) has no assertion to name.
    if (file.status === 'failed' && failures.length === 0) failures.push({ name: '(the file itself)', lines: firstLines(file.message) })
    return {
      file: relative(root, file.name),
      passed: file.assertionResults.filter((a) => a.status === 'passed').length,
      failed: failures.length,
      failures,
      skipped: file.assertionResults.filter((a) => a.status === 'skipped' || a.status === 'pending' || a.status === 'todo').length,
    }
  })
}

/** Every test file of the repository, as vitest would find it: a file missing from a report did not run. */
function testFiles(dir = join(root, 'test')) {
  // Not test/.readme-blocks (vitest.config.ts excludes dot folders): files written there by test/readme.test.ts.
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.'))
    .flatMap((e) =>
      e.isDirectory() ? testFiles(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [relative(root, join(dir, e.name))] : [],
    )
}

/**
 * The Middy packages the repository's code and tests import. The lock file has Middy 6, which
 * installs on Node 20 and 22 alike; Middy 7 requires Node 22, and is what npm gives a Node 22
 * user. So the Node 22 row runs the suite on Middy 7 (installed by npm under Node 22, without
 * touching package.json or the lock file), and the machine's Node row on Middy 6 again.
 */
const MIDDY = ['@middy/core', '@middy/http-error-handler', '@middy/ssm']
async function installMiddy(major, env) {
  log(`Middy ${major} for the next row (npm install --no-save ${MIDDY.map((p) => `${p}@${major}`).join(' ')})`)
  const { code } = await run('npm', ['install', '--no-save', '--no-audit', '--no-fund', ...MIDDY.map((p) => `${p}@${major}`)], env)
  if (code !== 0) throw new Error(`installing Middy ${major} failed (npm exited ${code})`)
}

const rows = []
/** What failed, by row: printed after the table. */
const failures = []
const scratch = mkdtempSync(join(tmpdir(), 'middy-etcd-matrix-'))

/** One vitest run (`npm test` for the whole suite); adds a row per group it covers. */
async function runRow({ line, node, label, groups, files, filter, env }) {
  // Under -t, vitest reports the file's other tests as skipped: they were filtered out, not skipped.
  const report = join(scratch, `${rows.length}.json`)
  const started = Date.now()
  log(`${label} on etcd ${line}, Node ${node} …`)
  const reporters = ['--reporter=default', '--reporter=json', `--outputFile=${report}`]
  const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs')
  const { code, tail } = files
    ? await run(process.execPath, [vitest, 'run', ...files, ...(filter ? ['-t', filter] : []), ...reporters], env)
    : await run('npm', ['test', '--', ...reporters], env)
  const seconds = Math.round((Date.now() - started) / 1000)
  const results = readReport(report) ?? []
  const where = `${line}, Node ${node}, ${label}`
  // A run that failed without naming a failure (type errors, lint, a crash) fails every group it
  // covers; one that named its failures fails only the groups they are in.
  const unexplained = code !== 0 && results.every((r) => r.failed === 0)
  if (unexplained)
    failures.push({ where, file: '', name: `exited ${code} without a failed test (lint, types, a crash); its last lines:`, lines: tail })
  for (const r of results) for (const f of r.failures) failures.push({ where, file: r.file, ...f })
  const expected = files ?? testFiles()
  const missing = expected.filter((f) => !results.some((r) => r.file === f))
  if (results.length > 0 && missing.length > 0) {
    for (const file of missing) failures.push({ where, file, name: 'not in the report: the file did not run', lines: [] })
  }
  for (const [i, { group, files: groupFiles }] of groups.entries()) {
    const mine = groupFiles ? results.filter((r) => groupFiles.includes(r.file)) : results
    const sum = (k) => mine.reduce((n, r) => n + r[k], 0)
    const absent = missing.filter((f) => !groupFiles || groupFiles.includes(f)).length
    const failed = sum('failed') + (results.length > 0 ? absent : 0) + (unexplained ? 1 : 0)
    rows.push({
      line,
      node,
      group,
      files: mine.length,
      passed: sum('passed'),
      failed,
      skipped: filter ? 0 : sum('skipped'),
      seconds: i === 0 ? seconds : undefined,
    })
  }
  return code
}

function printTable() {
  const { releases } = etcdReleases()
  // time: of the vitest run, on the first group it covered (the compatibility set is one run).
  const header = ['etcd', 'group', 'Node', 'files', 'passed', 'failed', 'skipped', 'time', 'result']
  const body = rows.map((r) => [
    `${r.line} (${releases[r.line].version})`,
    r.group,
    r.node,
    String(r.files),
    String(r.passed),
    String(r.failed),
    String(r.skipped),
    r.seconds === undefined ? '' : `${Math.floor(r.seconds / 60)}m${String(r.seconds % 60).padStart(2, '0')}s`,
    r.failed === 0 ? 'passed' : 'FAILED',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)))
  const fmt = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  process.stdout.write(`\netcd version matrix\n${fmt(header)}\n${fmt(widths.map((w) => '-'.repeat(w)))}\n${body.map(fmt).join('\n')}\n`)
  const passed = rows.reduce((n, r) => n + r.passed, 0)
  const failed = rows.reduce((n, r) => n + r.failed, 0)
  for (const f of failures) {
    process.stdout.write(`\nFAILED (${f.where}) ${f.file}${f.file ? ' > ' : ''}${f.name}\n${f.lines.map((l) => `    ${l}\n`).join('')}`)
  }
  // The plain closing line CI reads: every test of every row.
  process.stdout.write(`\n${passed} passed, ${failed} failed\n`)
}

async function main() {
  const { default: newest, releases } = etcdReleases()
  const argv = process.argv.slice(2)
  const onlyFull = argv.includes('--full')
  const compatAt = argv.indexOf('--compat')
  const compatLines =
    compatAt >= 0 ? argv.slice(compatAt + 1).filter((a) => !a.startsWith('--')) : Object.keys(releases).filter((l) => l !== newest)
  const onlyCompat = compatAt >= 0
  const baseEnv = { ...process.env }
  delete baseEnv.ETCD_BIN // each row names its release
  const nodeVersion = (bin) => (bin ? '22' : process.versions.node.split('.')[0])

  if (!onlyCompat) {
    const bin22 = await node22Bin()
    const lockedMiddy = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')).packages[
      'node_modules/@middy/core'
    ].version.split('.')[0]
    for (const bin of [bin22, undefined]) {
      const env = { ...baseEnv, ETCD_VERSION: newest, ...(bin ? { PATH: `${bin}:${baseEnv.PATH}` } : {}) }
      if (bin) await installMiddy('7', env)
      try {
        await runRow({
          line: newest,
          node: nodeVersion(bin),
          label: `npm test (the whole suite, Middy ${bin ? 7 : lockedMiddy})`,
          groups: [{ group: 'whole suite' }],
          env,
        })
      } finally {
        if (bin) await installMiddy(lockedMiddy, baseEnv)
      }
    }
  }
  if (!onlyFull) {
    for (const line of compatLines) {
      if (!releases[line]) throw new Error(`--compat ${line}: not a release of etcd/releases.json (${Object.keys(releases).join(', ')})`)
      const env = { ...baseEnv, ETCD_VERSION: line }
      const plain = COMPAT_GROUPS.filter((g) => !g.filter)
      await runRow({ line, node: nodeVersion(), label: 'the compatibility set', groups: plain, files: plain.flatMap((g) => g.files), env })
      for (const g of COMPAT_GROUPS.filter((g) => g.filter)) {
        await runRow({ line, node: nodeVersion(), label: g.group, groups: [g], files: g.files, filter: g.filter, env })
      }
    }
  }
  printTable()
  rmSync(scratch, { recursive: true, force: true })
  process.exitCode = rows.every((r) => r.failed === 0) ? 0 : 1
}

await main()
