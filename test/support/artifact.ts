// Reading a Lambda artifact the way Lambda does: unzip it into an empty directory (no
// node_modules anywhere above it) and run one handler in a fresh Node process.
import { execFile } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { inflateRawSync } from 'node:zlib'

const run = promisify(execFile)

/** Extracts a zip (stored or deflated entries, as osls and the plugin write them) into `dir`; returns the file names. */
export function unzip(zip: Buffer, dir: string): string[] {
  let eocd = zip.length - 22
  while (eocd >= 0 && zip.readUInt32LE(eocd) !== 0x06054b50) eocd--
  if (eocd < 0) throw new Error('not a zip file')
  const entries = zip.readUInt16LE(eocd + 10)
  let at = zip.readUInt32LE(eocd + 16)
  const names: string[] = []
  for (let i = 0; i < entries; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error('bad central directory')
    const method = zip.readUInt16LE(at + 10)
    const size = zip.readUInt32LE(at + 20)
    const nameLen = zip.readUInt16LE(at + 28)
    const extraLen = zip.readUInt16LE(at + 30)
    const commentLen = zip.readUInt16LE(at + 32)
    const local = zip.readUInt32LE(at + 42)
    const name = zip.toString('utf8', at + 46, at + 46 + nameLen)
    at += 46 + nameLen + extraLen + commentLen
    const dataAt = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28)
    const data = zip.subarray(dataAt, dataAt + size)
    if (name.endsWith('/')) continue
    const target = join(dir, name)
    mkdirSync(dirname(target), { recursive: true })
    writeFileSync(target, method === 8 ? inflateRawSync(data) : data)
    names.push(name)
  }
  return names
}

/**
 * Runs `exportName` of a packaged module (a path relative to `dir`) in a fresh Node process,
 * with `dir` as working directory and only PATH, LAMBDA_TASK_ROOT and `env` in its environment,
 * as Lambda would; resolves with what the handler returned.
 */
export async function invokePackaged(
  dir: string,
  module: string,
  exportName: string,
  event: unknown,
  env: Record<string, string>,
  remainingMs = 15_000,
) {
  const script = `
    const mod = require(${JSON.stringify(join(dir, module))});
    const end = Date.now() + ${remainingMs};
    const context = { functionName: 'packaged', awsRequestId: 'r-' + Date.now(), getRemainingTimeInMillis: () => end - Date.now() };
    Promise.resolve(mod[${JSON.stringify(exportName)}](${JSON.stringify(event)}, context))
      .then((r) => { process.stdout.write(JSON.stringify(r)); process.exit(0) })
      .catch((e) => { console.error(e); process.exit(1) });
  `
  const { stdout } = await run(process.execPath, ['-e', script], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', LAMBDA_TASK_ROOT: dir, ...env },
    timeout: 30_000,
  })
  return JSON.parse(stdout)
}
