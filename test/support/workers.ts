/**
 * Spawns `worker.ts` child processes and talks to them (one JSON line each way). A test can
 * then SIGKILL (crash), SIGSTOP (freeze, like a paused VM or a GC pause) and SIGCONT them.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { isAbsolute } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const script = fileURLToPath(new URL('./worker.ts', import.meta.url))

export type WorkerEvent = Record<string, any> & { event: string }

/** Options of {@link Worker.start}. */
export interface WorkerOptions {
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string
  /** The worker program: a path, or a file name under test/support (default `worker.ts`). */
  script?: string
  /** Modules loaded before it (paths or file names under test/support). */
  preload?: string[]
  /** Extra environment. */
  env?: Record<string, string>
}

const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL')
})

export class Worker {
  readonly events: WorkerEvent[] = []
  private waiters: { accept: (e: WorkerEvent) => boolean; resolve: (e: WorkerEvent) => void }[] = []
  stderr = ''

  private constructor(readonly proc: ChildProcess) {
    live.add(proc)
    proc.on('exit', () => live.delete(proc))
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let event: WorkerEvent
      try {
        event = JSON.parse(line) as WorkerEvent
      } catch {
        return // not ours (e.g. a warning)
      }
      this.events.push(event)
      this.waiters = this.waiters.filter((w) => {
        if (!w.accept(event)) return true
        w.resolve(event)
        return false
      })
    })
    proc.stderr!.setEncoding('utf8')
    proc.stderr!.on('data', (d: string) => (this.stderr += d))
  }

  /**
   * Starts a worker connected to `endpoints` and waits until it is ready. `options.netns` runs
   * it inside that network namespace (`ip netns exec`, as root); `options.script` runs another
   * program that speaks the same protocol (a path, or a file name under test/support);
   * `options.preload` modules are loaded before it (e.g. a skewed wall clock); `options.env` is
   * extra environment.
   */
  static async start(endpoints: string[], namespace = '', options: WorkerOptions = {}): Promise<Worker> {
    if (!existsSync(`${root}node_modules/.bin/tsx`)) {
      throw new Error('test workers need tsx (node_modules/.bin/tsx): run npm ci')
    }
    const here = (file: string) => (isAbsolute(file) ? file : fileURLToPath(new URL(`./${file}`, import.meta.url)))
    const preload = (options.preload ?? []).flatMap((file) => ['--import', here(file)])
    const node = [
      process.execPath,
      '--import',
      'tsx',
      ...preload,
      options.script ? here(options.script) : script,
      JSON.stringify({ endpoints, namespace }),
    ]
    // `ip netns exec` execs the program: the pid (and so SIGSTOP/SIGKILL) is the program's own.
    const [command, ...args] = options.netns ? ['ip', 'netns', 'exec', options.netns, ...node] : node
    const proc = spawn(command, args, {
      cwd: root,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ETCD_ENDPOINTS: '', ETCD_NAMESPACE: '', ...options.env },
    })
    const worker = new Worker(proc)
    await worker.next('ready', 30_000)
    return worker
  }

  get pid(): number {
    return this.proc.pid!
  }

  /** The next event of `type` (or one already received and not yet taken), within `timeoutMs`. */
  next(type: string, timeoutMs = 20_000, accept: (e: WorkerEvent) => boolean = () => true): Promise<WorkerEvent> {
    const matches = (e: WorkerEvent) => (e.event === type || e.event === 'error') && accept(e)
    const seen = this.events.findIndex(matches)
    if (seen >= 0) return settle(this.events.splice(seen, 1)[0], type)
    return new Promise<WorkerEvent>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done)
        reject(new Error(`worker ${this.pid}: no ${type} event within ${timeoutMs} ms; stderr: ${this.stderr.slice(-2000)}`))
      }, timeoutMs)
      const done = (e: WorkerEvent) => {
        clearTimeout(timer)
        this.events.splice(this.events.indexOf(e), 1)
        settle(e, type).then(resolve, reject)
      }
      this.waiters.push({ accept: matches, resolve: done })
    })
  }

  /** Sends a command; returns its answer event of `type`. */
  async request(cmd: Record<string, unknown>, type: string, timeoutMs?: number): Promise<WorkerEvent> {
    this.send(cmd)
    return this.next(type, timeoutMs)
  }

  send(cmd: Record<string, unknown>): void {
    this.proc.stdin!.write(`${JSON.stringify(cmd)}\n`)
  }

  signal(sig: NodeJS.Signals): void {
    this.proc.kill(sig)
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    const exited = new Promise((r) => this.proc.once('exit', r))
    this.proc.kill('SIGKILL')
    await exited
  }
}

function settle(e: WorkerEvent, type: string): Promise<WorkerEvent> {
  if (e.event === 'error' && type !== 'error') return Promise.reject(new Error(`worker ${e.op} failed: ${e.name}: ${e.message}`))
  return Promise.resolve(e)
}
