/**
 * Secured etcd for the security tests: certificates made with `openssl` at test time, an etcd
 * started with client TLS (and client-certificate auth), and RBAC set up with `etcdctl`.
 *
 * `testing/etcd.ts`'s `startEtcd` cannot start a TLS member: it builds the client URLs with
 * http:// itself (so `args` cannot switch them to https) and polls `http://…/health`. So this
 * file spawns a single TLS member itself; see docs/RELIABILITY.md.
 */
import { etcdProcessEnv } from '../../offline/etcd-release.js'
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Etcd3 } from 'etcd3'
import { createClient } from '../../lib/index.js'
import { freePort } from '../../testing/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Paths of a CA, a server certificate for 127.0.0.1, a client certificate, and an unrelated CA. */
export interface Certs {
  dir: string
  ca: string
  serverCert: string
  serverKey: string
  clientCert: string
  clientKey: string
  /** A CA that signed nothing here: trusting only it must fail. */
  otherCa: string
}

function openssl(dir: string, args: string[]) {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
}

/** Makes the certificates with openssl in a fresh temp dir (fails loudly if openssl is missing). */
export function makeCerts(): Certs {
  if (spawnSync('sh', ['-c', 'command -v openssl']).status !== 0) {
    throw new Error('the TLS tests need openssl on PATH (Debian: apt-get install -y openssl)')
  }
  const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-tls-'))
  const ca = (name: string) => {
    openssl(dir, [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}.pem`,
    ])
  }
  const leaf = (name: string, signer: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext)
    openssl(dir, ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`])
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${signer}.pem`,
      '-CAkey',
      `${signer}-key.pem`,
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    ])
  }
  ca('ca')
  ca('other-ca')
  leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n')
  leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n')
  const p = (f: string) => join(dir, f)
  return {
    dir,
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server-key.pem'),
    clientCert: p('client.pem'),
    clientKey: p('client-key.pem'),
    otherCa: p('other-ca.pem'),
  }
}

/** One etcd member started by the test. */
export interface Member {
  endpoint: string
  pid: number
  stop(): Promise<void>
}

/** Starts one etcd member; with `tls`, its client URL is https and it requires client certificates. */
export async function startMember(options: { tls?: Certs } = {}): Promise<Member> {
  const dir = mkdtempSync(join(tmpdir(), 'middy-etcd-sec-'))
  const clientPort = await freePort()
  const peerPort = await freePort()
  const scheme = options.tls ? 'https' : 'http'
  const endpoint = `${scheme}://127.0.0.1:${clientPort}`
  const args = [
    '--name=sec',
    `--data-dir=${join(dir, 'data')}`,
    `--listen-client-urls=${endpoint}`,
    `--advertise-client-urls=${endpoint}`,
    `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
    `--initial-cluster=sec=http://127.0.0.1:${peerPort}`,
    '--logger=zap',
    '--log-level=error',
  ]
  if (options.tls) {
    args.push(
      `--cert-file=${options.tls.serverCert}`,
      `--key-file=${options.tls.serverKey}`,
      '--client-cert-auth',
      `--trusted-ca-file=${options.tls.ca}`,
    )
  }
  const proc: ChildProcess = spawn(process.env.ETCD_BIN ?? 'etcd', args, { stdio: 'ignore', env: etcdProcessEnv() })
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  process.once('exit', () => proc.kill('SIGKILL'))
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  }
  // Ready when the Status RPC answers (over TLS with the client certificate, when TLS is on).
  const deadline = Date.now() + 20_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`etcd exited during start-up (code ${proc.exitCode}); is it installed (ETCD_BIN)?`)
    const client = createClient({
      endpoints: endpoint,
      callTimeoutMs: 1000,
      env: {},
      ...(options.tls ? { caFile: options.tls.ca, certFile: options.tls.clientCert, keyFile: options.tls.clientKey } : {}),
    }) as unknown as Etcd3
    try {
      await client.maintenance.status()
      break
    } catch (err) {
      if (Date.now() > deadline) {
        await stop()
        throw new Error(`etcd at ${endpoint} not ready after 20 s: ${(err as Error).message}`)
      }
      await sleep(100)
    } finally {
      client.close()
    }
  }
  return { endpoint, pid: proc.pid!, stop }
}

/** Runs etcdctl against `endpoint`; returns stdout, throws with stderr on failure. */
export function etcdctl(endpoint: string, args: string[]): string {
  const res = spawnSync('etcdctl', [`--endpoints=${endpoint}`, ...args], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } })
  if (res.status !== 0) throw new Error(`etcdctl ${args.join(' ')} failed: ${res.stderr}`)
  return res.stdout
}
