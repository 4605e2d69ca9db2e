// Where the CLI finds etcd: --endpoints, else ETCD_ENDPOINTS / ETCDCTL_ENDPOINTS, else the local
// etcd that `npm start` (`serverless offline` with the middy-etcd plugin) started in this
// directory, which the plugin records in `.etcd-offline/<cli pid>.json`.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { liveSessions, STATE_DIR } from '../offline/local-etcd.js'

/** The endpoints to use and where they came from (for messages). */
export interface EndpointChoice {
  /** Comma-separated endpoints, or undefined to let createClient read the environment. */
  endpoints?: string
  /** `--endpoints`, `ETCD_ENDPOINTS`, `ETCDCTL_ENDPOINTS` or the offline session's pid file. */
  source: string
  /** Said on stderr when the endpoints came from a running offline session. */
  note?: string
}

/** Picks the endpoints: the flag, the environment, or the newest running offline session under `cwd`. */
export function chooseEndpoints(flag: string | undefined, env: Record<string, string | undefined>, cwd: string): EndpointChoice {
  if (flag !== undefined) return { endpoints: flag, source: '--endpoints' }
  if (env.ETCD_ENDPOINTS) return { source: 'ETCD_ENDPOINTS' }
  if (env.ETCDCTL_ENDPOINTS) return { source: 'ETCDCTL_ENDPOINTS' }
  const [session] = liveSessions(join(cwd, STATE_DIR))
  if (!session) return { source: 'ETCD_ENDPOINTS' }
  const file = `${STATE_DIR}/${session.cliPid}.json`
  return {
    endpoints: session.endpoints.join(','),
    source: file,
    note: `using the local etcd of serverless offline (pid ${session.cliPid}) at ${session.endpoints.join(',')}, from ${file}; set ETCD_ENDPOINTS or --endpoints for another`,
  }
}

/** This package's version, from the package.json above this file (source or dist/). */
export function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'middy-etcd' && pkg.version) return pkg.version
    } catch {
      // no package.json here: look further up
    }
    if (dirname(dir) === dir) return 'unknown'
  }
}
