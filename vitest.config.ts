import { dirname } from 'node:path'
import { defineConfig } from 'vitest/config'
import { resolveEtcd } from './offline/etcd-release.js'

/** Files whose figures depend on the machine not being busy with another test file: run last, alone. */
const alone = ['test/permits/rate-limiter.test.ts', 'test/ui/scale.test.ts']

/**
 * The etcd every test file runs (ETCD_VERSION, default 3.7; or ETCD_BIN), resolved once here so
 * that each worker, and each process a test starts (osls offline, the netns harness, etcdctl),
 * runs the same release: ETCD_BIN names the server, and its own etcdctl comes first on PATH.
 * When none can be found the tests that need etcd fail with the resolver's advice.
 */
function etcdEnv(): Record<string, string> {
  try {
    const release = resolveEtcd()
    process.stderr.write(`[test] etcd ${release.version} (${release.bin})\n`)
    const env: Record<string, string> = { ETCD_BIN: release.bin, MIDDY_ETCD_TEST_VERSION: release.version }
    // Only a folder of our own builds goes first on PATH: /usr/bin (Debian's 3.4) would also put
    // its node before the Node 22 that .ci/run puts first.
    if (release.etcdctl && dirname(release.etcdctl) === dirname(release.bin) && dirname(release.bin) !== '/usr/bin') {
      env.PATH = `${dirname(release.bin)}:${process.env.PATH ?? ''}`
    }
    return env
  } catch (err) {
    process.stderr.write(`[test] no etcd to run: ${(err as Error).message}\n`)
    return {}
  }
}

export default defineConfig({
  test: {
    // Every file starts its own etcd; two cores run two files at a time comfortably.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    env: etcdEnv(),
    projects: [
      // Not test/.readme-blocks: the README's own test file is run there by test/readme.test.ts, as a user would run it.
      {
        extends: true,
        test: { name: 'suite', include: ['test/**/*.test.ts'], exclude: [...alone, 'test/.*/**'], sequence: { groupOrder: 0 } },
      },
      // Then each of these files alone (a group of its own: files of one group run side by side).
      // The rate limiter's load check asserts that at least 90 % of the rate is used while demand
      // exceeds it: with another file's etcd and child processes on the same two cores, round
      // trips approach the 50 ms refill interval and the figure measures the machine instead.
      // The operations page's scale test bounds how long 10,000 locks take to render (the issue's
      // 2 s) while its etcd, server and Chromium share the two cores.
      ...alone.map((file, i) => ({
        extends: true,
        test: { name: i === 0 ? 'alone' : `alone-${i + 1}`, include: [file], sequence: { groupOrder: i + 1 } },
      })),
    ],
  },
})
