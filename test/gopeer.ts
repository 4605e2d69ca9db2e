import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

/** The Go reference peer's sources: `GOPEER_DIR`, else `shared/peer-go` beside this repository. */
export function goPeerDir(): string {
  return process.env.GOPEER_DIR ?? resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared', 'peer-go')
}

/**
 * Builds the Go peer into `bin` with its own build.sh (cached by Go's build cache). Fails loudly,
 * saying what to install, when the sources or the Go toolchain are missing: interop with Go is
 * a feature, so its tests never skip.
 */
export async function buildGoPeer(bin: string): Promise<string> {
  const dir = goPeerDir()
  if (!existsSync(join(dir, 'build.sh'))) {
    throw new Error(`Go peer sources not found in ${dir}: check out shared/ beside this repository or set GOPEER_DIR`)
  }
  try {
    await promisify(execFile)('bash', [join(dir, 'build.sh'), bin], { timeout: 240_000 })
  } catch (err) {
    throw new Error(`building the Go peer failed (needs Debian golang-go and golang-etcd-server-dev; npm test installs them as root): ${(err as Error).message}`)
  }
  return bin
}
