/**
 * A private network for partition tests: Linux network namespaces made by the test, one per
 * host (etcd member, client process, database), joined by veth pairs to a bridge that lives in
 * a namespace of its own. Addresses (one 10.x.y.0/24 per network) exist only inside these
 * namespaces: nothing is added to, or sent through, the machine's own network. Links are cut
 * and healed with nftables rules inside the receiving host's namespace, one direction at a time.
 *
 * Everything made here is torn down by `destroy()`, by an exit hook if the test process exits
 * without it, by a watchdog process if the test process is killed, and — for anything a killed
 * run still left — by the reaper that runs before each new network is made. Names carry the
 * creating process's pid (`mep-<pid>-<n>-<host>`), which is how the reaper knows what is stale.
 */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { mkdirSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const PREFIX = 'mep'

/** The machine cannot run partition tests; the message says what is missing and how to get it. */
export class NetnsUnavailableError extends Error {
  constructor(message: string) {
    super(
      `${message}\nPartition tests need root, iproute2 (ip netns) and nftables; they fail rather than skip without them (CI runs them as root).`,
    )
    this.name = 'NetnsUnavailableError'
  }
}

function onPath(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0
}

let checked = false

/** Throws {@link NetnsUnavailableError} unless namespaces, veth pairs and nft rules can be made here. */
export function requireNetns(): void {
  if (checked) return
  if (process.platform !== 'linux') throw new NetnsUnavailableError(`network namespaces are Linux-only; this is ${process.platform}.`)
  if (process.getuid?.() !== 0)
    throw new NetnsUnavailableError(
      'not running as root: creating network namespaces needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN). Run the tests as root, e.g. sudo npm test.',
    )
  if (!onPath('ip')) throw new NetnsUnavailableError("the 'ip' command (iproute2) is not on PATH: apt-get install -y iproute2.")
  if (!onPath('nft'))
    throw new NetnsUnavailableError(
      "the 'nft' command is not on PATH: apt-get install -y nftables (npm test's set-up installs it when run as root).",
    )
  const probe = `${PREFIX}-${process.pid}-probe`
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' })
  } catch (err) {
    throw new NetnsUnavailableError(
      `'ip netns add' failed (${stderrOf(err)}): this kernel or container does not allow network namespaces (a container needs --privileged or CAP_SYS_ADMIN).`,
    )
  }
  try {
    execFileSync('ip', ['-n', probe, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1'], { stdio: 'pipe' })
    execFileSync('ip', ['netns', 'exec', probe, 'nft', 'add', 'table', 'inet', PREFIX], { stdio: 'pipe' })
  } catch (err) {
    throw new NetnsUnavailableError(
      `a veth pair or an nftables table could not be made inside a namespace (${stderrOf(err)}): the kernel needs veth and nf_tables support.`,
    )
  } finally {
    spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore' })
  }
  checked = true
}

function stderrOf(err: unknown): string {
  const e = err as { stderr?: Buffer | string; message?: string }
  return (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Kills every process inside `ns` and deletes it (synchronous: also used from exit hooks). */
function removeNamespace(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? ''
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL')
    } catch {
      // already gone
    }
  }
  spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
}

/** Our namespaces and temp dirs whose creating process is dead (a killed run): removes them. */
export function reapStale(): string[] {
  const reaped: string[] = []
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? ''
  for (const ns of listed.split('\n').map((l) => l.split(' ')[0])) {
    const pid = new RegExp(`^${PREFIX}-(\\d+)-`).exec(ns)?.[1]
    if (!pid || pidAlive(Number(pid))) continue
    removeNamespace(ns)
    reaped.push(ns)
  }
  for (const dir of readdirSync(tmpdir())) {
    const pid = new RegExp(`^${PREFIX}-(\\d+)-`).exec(dir)?.[1]
    if (pid && !pidAlive(Number(pid))) rmSync(join(tmpdir(), dir), { recursive: true, force: true })
  }
  return reaped
}

const liveNetworks = new Set<Network>()
let hooksInstalled = false

/** Last lines of defence when the test process ends without `destroy()`. */
function installExitHooks() {
  if (hooksInstalled) return
  hooksInstalled = true
  process.once('exit', () => {
    for (const net of liveNetworks) net.destroySync()
  })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const net of liveNetworks) net.destroySync()
      // Our handler was a `once`: with no other listener, re-raising runs the default action.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    })
  }
}

/**
 * A detached process that outlives a SIGKILLed test process: once `pid` is gone it kills what
 * runs in our namespaces and deletes them. Killed by `destroy()` when not needed.
 */
function startWatchdog(prefix: string, dir: string): ChildProcess {
  const script = [
    `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done`,
    `for ns in $(ip netns list | cut -d' ' -f1 | grep '^${prefix}-'); do`,
    '  for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null; done',
    '  ip netns del "$ns"',
    'done',
    `rm -rf '${dir}'`,
  ].join('\n')
  const child = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' })
  child.unref()
  return child
}

/** One host of the network: its namespace and its address. */
export interface Host {
  name: string
  ns: string
  ip: string
}

let networks = 0

/** A set of namespaces on one bridge; see the file comment. */
export class Network {
  readonly hosts = new Map<string, Host>()
  /** A directory for this network's data (etcd and Postgres data dirs), removed by destroy(). */
  readonly dir: string
  private readonly prefix: string
  private readonly hub: string
  private readonly children = new Set<ChildProcess>()
  /** Blocked one-way links, `${from}>${to}`. */
  private readonly blocked = new Set<string>()
  private watchdog?: ChildProcess
  private destroyed = false

  private constructor(readonly subnet: string) {
    this.prefix = `${PREFIX}-${process.pid}-${++networks}`
    this.hub = `${this.prefix}-hub`
    this.dir = join(tmpdir(), this.prefix)
  }

  /**
   * Makes a namespace per host name (at most 250), all on one bridge, on a 10.x.y.0/24 chosen per
   * run. Removes what killed earlier runs left behind first.
   */
  static async create(hostNames: string[]): Promise<Network> {
    requireNetns()
    reapStale()
    installExitHooks()
    if (new Set(hostNames).size !== hostNames.length || hostNames.length > 250)
      throw new Error(`Network.create: host names must be distinct and at most 250: ${hostNames.join(', ')}`)
    // An unusual subnet, different per process and network; it is private to our namespaces anyway.
    const subnet = `10.${200 + (process.pid % 50)}.${(process.pid * 7 + networks) % 250}`
    const net = new Network(subnet)
    liveNetworks.add(net)
    mkdirSync(net.dir, { recursive: true })
    net.watchdog = startWatchdog(net.prefix, net.dir)
    try {
      await net.sh('ip', ['netns', 'add', net.hub])
      await net.sh('ip', ['-n', net.hub, 'link', 'add', 'br0', 'type', 'bridge'])
      await net.sh('ip', ['-n', net.hub, 'link', 'set', 'br0', 'up'])
      let index = 0
      for (const name of hostNames) await net.addHost(name, ++index)
    } catch (err) {
      await net.destroy()
      throw err
    }
    return net
  }

  private async addHost(name: string, index: number) {
    const host: Host = { name, ns: `${this.prefix}-${name}`, ip: `${this.subnet}.${index}` }
    await this.sh('ip', ['netns', 'add', host.ns])
    this.hosts.set(name, host)
    // The veth is made inside the hub namespace and its peer moved straight into the host's.
    const port = `v${index}`
    await this.sh('ip', ['-n', this.hub, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns])
    await this.sh('ip', ['-n', this.hub, 'link', 'set', port, 'master', 'br0', 'up'])
    await this.sh('ip', ['-n', host.ns, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0'])
    await this.sh('ip', ['-n', host.ns, 'link', 'set', 'eth0', 'up'])
    await this.sh('ip', ['-n', host.ns, 'link', 'set', 'lo', 'up'])
    await this.applyRules(host)
  }

  /** The host called `name` (throws if there is none). */
  host(name: string): Host {
    const host = this.hosts.get(name)
    if (!host) throw new Error(`no host ${JSON.stringify(name)} in this network (hosts: ${[...this.hosts.keys()].join(', ')})`)
    return host
  }

  /** The address of host `name` (inside the namespaces only). */
  ip(name: string): string {
    return this.host(name).ip
  }

  /** Starts `command` inside the host's namespace; it is SIGKILLed by destroy() if still running. */
  spawn(hostName: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    if (this.destroyed) throw new Error('Network.spawn after destroy()')
    const child = spawn('ip', ['netns', 'exec', this.host(hostName).ns, command, ...args], options)
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  /** Runs `command` inside the host's namespace to completion; resolves with its stdout. */
  async exec(hostName: string, command: string, args: string[], timeoutMs = 10_000): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', this.host(hostName).ns, command, ...args], {
      timeout: timeoutMs,
      maxBuffer: 16 << 20,
    })
    return stdout
  }

  /** Drops every packet from each host of `from` to each host of `to` (one way). */
  async block(from: string | string[], to: string | string[]): Promise<void> {
    await this.change(from, to, (link) => this.blocked.add(link))
  }

  /** Lets packets from each of `from` to each of `to` through again. */
  async unblock(from: string | string[], to: string | string[]): Promise<void> {
    await this.change(from, to, (link) => this.blocked.delete(link))
  }

  /** Cuts every link between the two groups, both ways. */
  async partition(a: string[], b: string[]): Promise<void> {
    await this.change(a, b, (link) => this.blocked.add(link), true)
  }

  /** Removes every cut. */
  async heal(): Promise<void> {
    const affected = new Set([...this.blocked].map((link) => link.split('>')[1]))
    this.blocked.clear()
    await Promise.all([...affected].map((name) => this.applyRules(this.host(name))))
  }

  /** The one-way links cut right now, as `from>to`. */
  cuts(): string[] {
    return [...this.blocked].sort()
  }

  private async change(from: string | string[], to: string | string[], edit: (link: string) => void, bothWays = false) {
    const froms = [from].flat()
    const tos = [to].flat()
    const affected = new Set<string>()
    for (const f of froms) {
      for (const t of tos) {
        if (f === t) continue
        this.host(f)
        this.host(t)
        edit(`${f}>${t}`)
        affected.add(t)
        if (bothWays) {
          edit(`${t}>${f}`)
          affected.add(f)
        }
      }
    }
    await Promise.all([...affected].map((name) => this.applyRules(this.host(name))))
  }

  /** Rewrites the host's input filter in one nft transaction: drop what comes from blocked senders. */
  private async applyRules(host: Host) {
    const senders = [...this.blocked].filter((link) => link.endsWith(`>${host.name}`)).map((link) => this.ip(link.split('>')[0]))
    const drop = senders.length > 0 ? `ip saddr { ${senders.join(', ')} } drop` : ''
    const ruleset = [
      `add table inet ${PREFIX}`,
      `flush table inet ${PREFIX}`,
      `table inet ${PREFIX} {`,
      '  chain input {',
      '    type filter hook input priority 0; policy accept;',
      `    ${drop}`,
      '  }',
      '}',
    ].join('\n')
    await new Promise<void>((resolve, reject) => {
      const nft = spawn('ip', ['netns', 'exec', host.ns, 'nft', '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] })
      let err = ''
      nft.stderr!.on('data', (d) => (err += d))
      nft.on('error', reject)
      nft.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nft in ${host.ns} failed (${code}): ${err.trim()}`))))
      nft.stdin!.end(ruleset)
    })
  }

  private async sh(command: string, args: string[]) {
    try {
      await run(command, args)
    } catch (err) {
      throw new Error(`${command} ${args.join(' ')} failed: ${stderrOf(err)}`)
    }
  }

  /** Kills every process of the network, deletes its namespaces and its directory. */
  async destroy(): Promise<void> {
    if (this.destroyed) return
    const exits = [...this.children].map(
      (c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r))),
    )
    for (const child of this.children) child.kill('SIGKILL')
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 3000))])
    this.destroySync()
  }

  /** destroy() without waiting (exit hooks). */
  destroySync(): void {
    if (this.destroyed) return
    this.destroyed = true
    liveNetworks.delete(this)
    for (const child of this.children) child.kill('SIGKILL')
    for (const host of this.hosts.values()) removeNamespace(host.ns)
    removeNamespace(this.hub)
    rmSync(this.dir, { recursive: true, force: true })
    this.watchdog?.kill('SIGKILL')
  }

  /** Names of the namespaces this network made (for tests of the harness itself). */
  namespaces(): string[] {
    return [this.hub, ...[...this.hosts.values()].map((h) => h.ns)]
  }
}

/** Every namespace on the machine whose name starts with ours (for tests of the harness itself). */
export function listOurNamespaces(pid = process.pid): string[] {
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? ''
  return listed
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((ns) => ns.startsWith(`${PREFIX}-${pid}-`))
}
