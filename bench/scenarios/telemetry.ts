import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { root } from '../util/build.js'
import { median } from '../util/stats.js'
import { entry, type BenchContext, type Scenario } from '../util/types.js'

const run = promisify(execFile)

/**
 * Issue 26: what the OpenTelemetry support costs a warm `etcdLock` invocation. The same child
 * program (bench/util/lock-invocations.ts) runs three ways, interleaved, each in a process of its
 * own (OTel's globals are per process):
 *
 *   - without the API: `@opentelemetry/api` made unresolvable (bench/util/no-otel.mjs), as in a
 *     service that never installed the optional peer — the library's telemetry door shut, what
 *     the library cost before it had telemetry (one undefined check per probe is left);
 *   - the API installed, no SDK registered: every probe asks the API's globals and finds no provider;
 *   - the OTel SDK registered with in-memory exporters and a SimpleSpanProcessor
 *     (scripts/otel-register.mjs): a span per wait and hold, exported as each ends.
 */

type Mode = 'without the API' | 'API, no SDK' | 'SDK, in-memory exporter'
const PRELOAD: Record<Mode, string[]> = {
  'without the API': ['--import', join(root, 'bench/util/no-otel.mjs')],
  'API, no SDK': [],
  'SDK, in-memory exporter': ['--import', join(root, 'scripts/otel-register.mjs')],
}

async function child(ctx: BenchContext, mode: Mode, n: number): Promise<{ p50: number[]; cpuMs: number[]; telemetry: boolean }> {
  const args = ['--import', 'tsx', ...PRELOAD[mode], join(root, 'bench/util/lock-invocations.ts')]
  const { stdout } = await run(process.execPath, [...args, ctx.endpoints[0], ctx.prefix('otel'), String(n), '1'], {
    cwd: root,
    maxBuffer: 1 << 20,
  })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

export const telemetry: Scenario = {
  name: 'telemetry',
  async run(ctx) {
    const n = Math.max(300, Math.round(2000 * ctx.scale))
    const modes = Object.keys(PRELOAD) as Mode[]
    const runs = Object.fromEntries(modes.map((m) => [m, { p50: [] as number[], cpuMs: [] as number[] }])) as Record<
      Mode,
      { p50: number[]; cpuMs: number[] }
    >
    // The order turns each round (a machine that slows down over the run would otherwise always
    // favour the mode that goes first).
    for (let round = 0; round < 3; round++) {
      for (const mode of [...modes.slice(round), ...modes.slice(0, round)]) {
        const r = await child(ctx, mode, n)
        // Each mode proves it ran as labelled: the API is found except where it was hidden.
        if (r.telemetry !== (mode !== 'without the API')) throw new Error(`${mode}: the library reported telemetryReady() ${r.telemetry}`)
        runs[mode].p50.push(...r.p50)
        runs[mode].cpuMs.push(...r.cpuMs)
      }
    }
    const base = runs['without the API']
    const label = 'warm invocation, etcdLock no-op handler'
    const f = (m: Mode) => `${m}: CPU ${median(runs[m].cpuMs).toFixed(3)} ms, p50 ${median(runs[m].p50).toFixed(3)} ms`
    return {
      entries: [
        entry(
          `${label}, @opentelemetry/api installed, no SDK`,
          'CPU ms/invocation',
          runs['API, no SDK'].cpuMs,
          'without the API',
          median(base.cpuMs),
          {
            kind: 'max-ratio',
            ratio: 1.02,
          },
        ),
        entry(`${label}, @opentelemetry/api installed, no SDK`, 'p50 ms', runs['API, no SDK'].p50, 'without the API', median(base.p50), {
          kind: 'max-ratio',
          ratio: 1.02,
        }),
        entry(
          `${label}, OTel SDK + in-memory exporter`,
          'CPU ms/invocation',
          runs['SDK, in-memory exporter'].cpuMs,
          'without the API',
          median(base.cpuMs),
          {
            kind: 'none',
          },
        ),
        entry(
          `${label}, OTel SDK + in-memory exporter`,
          'p50 ms',
          runs['SDK, in-memory exporter'].p50,
          'without the API',
          median(base.p50),
          {
            kind: 'none',
          },
        ),
      ],
      notes: [
        `Warm etcdLock invocations of a no-op handler, ${n} per process, 3 processes per mode, interleaved in an order that turns each round (medians): ${modes.map(f).join('; ')}. ` +
          '"Without the API" hides @opentelemetry/api from the resolver (bench/util/no-otel.mjs): the library as a service without the optional peer runs it, the cost it had before telemetry plus one undefined check per probe. ' +
          'The SDK row uses scripts/otel-register.mjs (SimpleSpanProcessor, in-memory exporter: every wait and hold span exported as it ends).',
      ],
      details: runs,
    }
  },
}
