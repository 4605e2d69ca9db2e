import { spawn } from 'node:child_process'

/**
 * A child process that connects, prints `{"ready":true}`, starts its timed work when a line
 * arrives on its stdin, and prints its result as the last JSON line of its stdout: several of
 * them are started together once all are ready (the Go interop program with `-gate`, and
 * bench/util/lock-process.ts).
 */
export interface GatedProcess {
  ready: Promise<void>
  start(): void
  /** The last line it printed, parsed, once it exits with 0. */
  result: Promise<Record<string, unknown>>
}

export function gatedProcess(command: string, args: string[], env: Record<string, string> = {}, timeoutMs = 180_000): GatedProcess {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  let onReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (onReady = resolve))
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
    if (out.includes('{"ready":true}')) onReady()
  })
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const result = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`${command} ${args.join(' ')} exited with ${code ?? signal}: ${err.trim().slice(-500)}`))
      const last = out.trim().split('\n').pop() ?? ''
      try {
        resolve(JSON.parse(last) as Record<string, unknown>)
      } catch {
        reject(new Error(`${command} ${args.join(' ')} printed no JSON result: ${out.slice(-300)} ${err.slice(-300)}`))
      }
    })
  })
  // A child that dies before it is ready must not leave the caller waiting on `ready`.
  result.catch(() => onReady())
  return { ready, start: () => child.stdin.end('go\n'), result }
}
