import { defineConfig } from 'vitest/config'

/** Files whose figures depend on the machine not being busy with another test file: run last, alone. */
const alone = ['test/rate-limiter.test.ts']

export default defineConfig({
  test: {
    // Every file starts its own etcd; two cores run two files at a time comfortably.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'suite', include: ['test/**/*.test.ts'], exclude: alone, sequence: { groupOrder: 0 } } },
      // The rate limiter's load check asserts that at least 90 % of the rate is used while demand
      // exceeds it: with another file's etcd and child processes on the same two cores, round
      // trips approach the 50 ms refill interval and the figure measures the machine instead.
      { extends: true, test: { name: 'alone', include: alone, sequence: { groupOrder: 1 } } },
    ],
  },
})
