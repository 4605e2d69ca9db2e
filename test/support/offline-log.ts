// The lines the offline plugin prints on start, as patterns: test/offline.test.ts checks the real
// output against them and test/readme.test.ts the README's example output.

/** `etcd: listening on http://127.0.0.1:41273 (1 member, pid 48211, etcd 3.7.4)` */
export const LISTENING =
  /^etcd: listening on (http:\/\/127\.0\.0\.1:\d+(?:, http:\/\/127\.0\.0\.1:\d+)*) \((\d+) members?, pid (\d+(?:, \d+)*), etcd (3\.\d+\.\d+)\)$/m
/** `etcd: ETCD_ENDPOINTS=http://127.0.0.1:41273 injected into 24 functions` */
export const INJECTED = /^etcd: ETCD_ENDPOINTS=(\S+) injected into (\d+) functions$/m
/** `etcd: bundled ping, jobWorker into .etcd-offline/build/48190 (as \`package\` ships them)` */
export const BUNDLED = /^etcd: bundled ([\w-]+(?:, [\w-]+)*) into (\.etcd-offline\/build\/(\d+)) \(as `package` ships them\)$/m
/** `etcdQueue: example/jobs → jobWorker (batch 5)` */
export const SUBSCRIBED = /^etcdQueue: (\S+)( \(priority\))? → ([\w-]+) \(batch (\d+)\)$/m

/** `etcd: seeded 2 keys from custom.etcd.seed in 1 transaction, revision 3` (with a file: `… seed (config/seed.json) …`) */
export const SEEDED = /^etcd: seeded (\d+) keys? from custom\.etcd\.seed(?: \(([^)]+)\))? in (\d+) transactions?, revision (\d+)$/m

/** `etcd: operations page on http://127.0.0.1:3003/ (read-only)` */
export const UI_PAGE = /^etcd: operations page on (http:\/\/127\.0\.0\.1:\d+\/) \((read-only|actions allowed)\)$/m

/** Every start-up line pattern. */
export const START_LINES = [LISTENING, INJECTED, SEEDED, BUNDLED, SUBSCRIBED, UI_PAGE]
