// The version-aware launcher: which etcd runs (etcd/releases.json pins each release, etcd/build.mjs
// builds 3.5-3.7, Debian ships 3.4), the flags each release takes, and what a user is told when
// the etcd asked for is missing or refuses a flag. Needs every release built or installed
// (`node scripts/setup.mjs --all-releases`, which .ci/run does): a missing one fails here.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { InvalidArgumentError, createClient } from '../lib/index.js'
import { mergeFlags, releaseFlags } from '../offline/etcd-release.js'
import { readConfig } from '../offline/config.js'
import { EtcdNotFoundError, etcdReleases, resolveEtcd, startEtcd, type EtcdCluster, type EtcdLine } from '../testing/index.js'
import { alive } from './helpers.js'

const LINES: EtcdLine[] = ['3.7', '3.6', '3.5', '3.4']
const root = join(import.meta.dirname, '..')

/** The command line etcd member `pid` runs with. */
const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)

/** Runs `fn` with environment variables set (undefined: unset), restoring them after. */
function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const before = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]))
  for (const [k, v] of Object.entries(vars))
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  try {
    return fn()
  } finally {
    for (const [k, v] of Object.entries(before))
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
  }
}

const clusters: EtcdCluster[] = []
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.stop()
})

describe('etcd/releases.json', () => {
  it('pins one exact version per release line, 3.7 the default, 3.4 from Debian', () => {
    const { default: newest, versions } = etcdReleases()
    expect(newest).toBe('3.7')
    for (const line of LINES) expect(versions[line]).toMatch(new RegExp(`^${line.replace('.', '\\.')}\\.\\d+$`))
    const file = JSON.parse(readFileSync(join(root, 'etcd', 'releases.json'), 'utf8'))
    expect(file.releases['3.4'].source).toBe('debian')
    for (const line of ['3.5', '3.6', '3.7']) expect(file.releases[line].source).toBe('go')
  })

  it('each release resolves to a binary that reports exactly the pinned version, with its own etcdctl', () => {
    const { versions } = etcdReleases()
    for (const line of LINES) {
      const release = withEnv({ ETCD_BIN: undefined }, () => resolveEtcd({ version: line }))
      expect(release.version).toBe(versions[line])
      expect(release.line).toBe(line)
      expect(release.etcdctl && existsSync(release.etcdctl)).toBeTruthy()
      expect(execFileSync(release.etcdctl!, ['version'], { encoding: 'utf8' })).toContain(`etcdctl version: ${versions[line]}`)
    }
  })

  it('a second build of a built release is a no-op that prints where it is', () => {
    const started = Date.now()
    const out = execFileSync(process.execPath, [join(root, 'etcd', 'build.mjs'), '3.7'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const { versions } = etcdReleases()
    expect(out).toBe(`3.7\t${versions['3.7']}\t${withEnv({ ETCD_BIN: undefined }, () => resolveEtcd({ version: '3.7' })).bin}\n`)
    // No go command ran: a build takes tens of seconds, reading releases.json milliseconds.
    expect(Date.now() - started).toBeLessThan(5_000)
  })
})

describe('startEtcd({ version })', () => {
  for (const line of LINES) {
    it(`${line}: starts that release with the flags it takes, lease checkpointing on`, async () => {
      const cluster = await withEnv({ ETCD_BIN: undefined }, () => startEtcd({ version: line }))
      clusters.push(cluster)
      expect(cluster.release.line).toBe(line)
      expect(cluster.release.version).toBe(etcdReleases().versions[line])
      const args = cmdline(cluster.pids()[0]!)
      expect(args[0]).toBe(cluster.release.bin)
      if (line === '3.6' || line === '3.7') {
        expect(args).toContain('--feature-gates=LeaseCheckpoint=true,LeaseCheckpointPersist=true')
        expect(args.filter((a) => a.startsWith('--experimental-'))).toEqual([])
      } else {
        expect(args).toContain('--experimental-enable-lease-checkpoint=true')
        expect(args.includes('--experimental-enable-lease-checkpoint-persist=true')).toBe(line === '3.5')
      }
      const client = createClient({ endpoints: cluster.endpoints })
      try {
        await client.put('k').value(line)
        expect(await client.get('k').string()).toBe(line)
        // The server says the same version over its own API.
        const served = (await (await fetch(`${cluster.endpoints[0]}/version`)).json()) as { etcdserver: string }
        expect(served.etcdserver).toBe(cluster.release.version)
      } finally {
        client.close()
      }
    })
  }

  it('leaseCheckpoint: false runs etcd without any checkpoint flag', async () => {
    const cluster = await withEnv({ ETCD_BIN: undefined }, () => startEtcd({ version: '3.7', leaseCheckpoint: false }))
    clusters.push(cluster)
    expect(cmdline(cluster.pids()[0]!).filter((a) => /checkpoint|feature-gates/i.test(a))).toEqual([])
  })

  it("a caller's --feature-gates is merged with the launcher's into the one flag etcd takes", async () => {
    const cluster = await withEnv({ ETCD_BIN: undefined }, () =>
      startEtcd({ version: '3.7', args: ['--feature-gates=CompactHashCheck=true,LeaseCheckpointPersist=false'] }),
    )
    clusters.push(cluster)
    const gates = cmdline(cluster.pids()[0]!).filter((a) => a.startsWith('--feature-gates='))
    expect(gates).toEqual(['--feature-gates=LeaseCheckpoint=true,LeaseCheckpointPersist=false,CompactHashCheck=true'])
  })

  it('3.7 refuses an --experimental-* flag: the error says to use --feature-gates and quotes etcd; no process is left', async () => {
    const err = await withEnv({ ETCD_BIN: undefined }, () =>
      startEtcd({ version: '3.7', args: ['--experimental-enable-lease-checkpoint=true'] }),
    ).catch((e: Error) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(/etcd 3\.7 member m0 exited during start-up/)
    expect((err as Error).message).toMatch(/--feature-gates/)
    expect((err as Error).message).toMatch(/experimental-enable-lease-checkpoint/)
    const left = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return (
            readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('--experimental-enable-lease-checkpoint=true') &&
            readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('v3.7')
          )
        } catch {
          return false
        }
      })
    expect(left).toEqual([])
  })

  it('ETCD_BIN of another release than the one asked for is an InvalidArgumentError naming both', () => {
    const bin34 = withEnv({ ETCD_BIN: undefined }, () => resolveEtcd({ version: '3.4' })).bin
    const err = (() => {
      try {
        withEnv({ ETCD_BIN: bin34 }, () => resolveEtcd({ version: '3.7' }))
      } catch (e) {
        return e as Error
      }
    })()
    expect(err).toBeInstanceOf(InvalidArgumentError)
    expect(err!.message).toContain('etcd 3.7 was asked for')
    expect(err!.message).toContain('3.4.23')
  })

  it('a release we do not run on is an InvalidArgumentError listing those we do', () => {
    expect(() => resolveEtcd({ version: '3.3' })).toThrow(InvalidArgumentError)
    expect(() => withEnv({ ETCD_VERSION: '4.0', ETCD_BIN: undefined }, () => resolveEtcd())).toThrow(
      /ETCD_VERSION "4\.0" is not one this project runs on: use one of 3\.4, 3\.5, 3\.6, 3\.7/,
    )
  })

  it('a release that is not built says how to build it, and nothing is started', async () => {
    const err = await withEnv({ ETCD_BIN: undefined, MIDDY_ETCD_CACHE: '/nonexistent/middy-etcd' }, () =>
      startEtcd({ version: '3.6' }),
    ).catch((e: Error) => e)
    expect(err).toBeInstanceOf(EtcdNotFoundError)
    expect((err as Error).message).toContain('etcd 3.6 (')
    expect((err as Error).message).toContain('etcd/build.mjs 3.6')
    expect((err as Error).message).toContain('ETCD_BIN')
  })

  it('with no version asked and the default not built, etcd on PATH runs, whatever its release', () => {
    const release = withEnv({ ETCD_BIN: undefined, ETCD_VERSION: undefined, MIDDY_ETCD_CACHE: '/nonexistent/middy-etcd' }, () =>
      resolveEtcd(),
    )
    // This machine's PATH has Debian's 3.4 (our own builds are never put on PATH by the set-up).
    expect(release.bin).toMatch(/\/etcd$/)
    expect(alive(process.pid)).toBe(true)
    expect(LINES).toContain(release.line)
  })
})

describe('flags by release', () => {
  it('3.4 and 3.5 take --experimental-* checkpoint flags, 3.6 and 3.7 feature gates; all use zap', () => {
    expect(releaseFlags('3.4')).toEqual(['--logger=zap', '--experimental-enable-lease-checkpoint=true'])
    expect(releaseFlags('3.5')).toEqual([
      '--logger=zap',
      '--experimental-enable-lease-checkpoint=true',
      '--experimental-enable-lease-checkpoint-persist=true',
    ])
    expect(releaseFlags('3.6')).toEqual(['--logger=zap', '--feature-gates=LeaseCheckpoint=true,LeaseCheckpointPersist=true'])
    expect(releaseFlags('3.7', { leaseCheckpoint: false })).toEqual(['--logger=zap'])
  })

  it("mergeFlags keeps every other flag and lets the caller's gate values win", () => {
    expect(mergeFlags(['--a', '--feature-gates=X=true,Y=true'], ['--feature-gates=Y=false', '--b'])).toEqual([
      '--a',
      '--b',
      '--feature-gates=X=true,Y=false',
    ])
    expect(mergeFlags(['--a'], ['--b'])).toEqual(['--a', '--b'])
  })
})

describe('custom.etcd.version and leaseCheckpoint (the offline plugin)', () => {
  const service = (etcd: unknown) =>
    ({ service: { custom: { etcd }, provider: {}, functions: {}, getAllFunctions: () => [], getFunction: () => ({}) } }) as never
  it("accepts each release line and a boolean; YAML's `version: 3.7` (a number) is read as 3.7", () => {
    for (const version of LINES)
      expect(readConfig(service({ version, leaseCheckpoint: false }))).toEqual({ version, leaseCheckpoint: false })
    expect(readConfig(service({ version: 3.6 }))).toEqual({ version: '3.6' })
  })
  it('refuses another version or a non-boolean, naming the setting', () => {
    expect(() => readConfig(service({ version: '3.3' }))).toThrow(/custom\.etcd\.version "3\.3" is not one this project runs on/)
    expect(() => readConfig(service({ version: 3.3 }))).toThrow(InvalidArgumentError)
    expect(() => readConfig(service({ leaseCheckpoint: 'yes' }))).toThrow(/custom\.etcd\.leaseCheckpoint must be true or false/)
  })
})
