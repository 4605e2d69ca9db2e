import { execFile } from 'node:child_process'
import { buildGoPeer as buildInteropProgram } from '../../test/gopeer.js'

/** One JSON line printed by the Go interop program's timing scenarios. */
export interface GoResult {
  scenario: string
  ops: number
  seconds: number
  ops_per_s: number
  p50_ms?: number
  p99_ms?: number
  extra?: Record<string, number>
}

/** The Go interop program (`interop/go/`, etcd 3.4's Go recipes), built on demand. */
export interface GoPeer {
  /** Null when it can be run; otherwise why not (no Go, build failed, ...). */
  unavailable: string | null
  run(args: string[]): Promise<GoResult>
  /** The binary and the arguments that point it at the bench's etcd (null when unavailable). */
  command(args: string[]): [string, string[]] | null
}

/**
 * Builds the Go interop program (cached by the hash of its sources, as the tests build it).
 * A build failure does not stop the benchmark: the Go columns then say why they are empty.
 */
export async function buildGoPeer(endpoints: string[], log: (m: string) => void): Promise<GoPeer> {
  let bin: string
  try {
    log('building the Go interop program (interop/go)')
    bin = await buildInteropProgram()
  } catch (err) {
    const why = `${(err as Error).message.split('\n').slice(-3).join(' | ')}; Go columns are not measured`
    return { unavailable: why, run: () => Promise.reject(new Error(why)), command: () => null }
  }
  return {
    unavailable: null,
    command: (args) => [bin, ['-endpoints', endpoints.join(','), ...args]],
    run(args) {
      return new Promise((resolve, reject) => {
        execFile(bin, ['-endpoints', endpoints.join(','), ...args], { timeout: 180_000 }, (err, stdout, stderr) => {
          if (err) return reject(new Error(`interop-go ${args.join(' ')} failed: ${err.message} ${stderr}`))
          const line = stdout.trim().split('\n').pop() ?? ''
          try {
            resolve(JSON.parse(line) as GoResult)
          } catch {
            reject(new Error(`interop-go ${args.join(' ')} printed no JSON: ${stdout} ${stderr}`))
          }
        })
      })
    },
  }
}
