// A scheduler for a Lambda handler, as EventBridge's `rate(…)` schedule runs it in the cloud:
// a new invocation every `everyMs` (each possibly late by its jitter), each with a context whose
// getRemainingTimeInMillis() counts down from the function's timeout. Runs overlap whenever the
// timeout is longer than the rate. Used by test/dispatcher.test.ts and the bench's
// dispatcher-handover scenario.
import { lambdaContext } from '../../testing/index.js'

/** One invocation started by {@link scheduleRuns}; times are `performance.now()` ms. */
export interface ScheduledRun<R> {
  index: number
  startedAt: number
  /** When Lambda would end the invocation (start + timeout). */
  deadline: number
  endedAt: number
  result?: R
  error?: unknown
}

export interface ScheduleOptions {
  /** How many invocations to start. */
  runs: number
  /** The schedule's rate, ms between planned starts. */
  everyMs: number
  /** The function's timeout, ms: the context's remaining time at the start. */
  timeoutMs: number
  /** How late invocation `i` starts after its planned time, ms (default 0). */
  jitter?: (i: number) => number
  /** Called as invocation `i` starts (e.g. to enqueue a message exactly at the run boundary). */
  onStart?: (i: number) => void
}

/**
 * Starts `handler` on the schedule and resolves with every run once all have returned. A run
 * that returns after its deadline is still recorded (`endedAt > deadline`): in Lambda it would
 * have been stopped there, so callers should treat it as a failure.
 */
export async function scheduleRuns<R>(
  handler: (event: unknown, context: ReturnType<typeof lambdaContext>) => Promise<R>,
  options: ScheduleOptions,
): Promise<ScheduledRun<R>[]> {
  const t0 = performance.now()
  const started: Promise<ScheduledRun<R>>[] = []
  for (let i = 0; i < options.runs; i++) {
    const planned = t0 + i * options.everyMs + (options.jitter?.(i) ?? 0)
    await new Promise((r) => setTimeout(r, Math.max(0, planned - performance.now())))
    const startedAt = performance.now()
    const context = lambdaContext(options.timeoutMs, 'svc-prod-dispatcher')
    options.onStart?.(i)
    started.push(
      handler({ source: 'aws.events', 'detail-type': 'Scheduled Event' }, context).then(
        (result) => ({ index: i, startedAt, deadline: startedAt + options.timeoutMs, endedAt: performance.now(), result }),
        (error: unknown) => ({ index: i, startedAt, deadline: startedAt + options.timeoutMs, endedAt: performance.now(), error }),
      ),
    )
  }
  return Promise.all(started)
}

/** A repeatable jitter: run `i` starts 0..maxMs late, the same for every run of the program. */
export function seededJitter(maxMs: number, seed = 7): (i: number) => number {
  return (i) => {
    // mulberry32's output step on state seed + i·golden: spread over [0, 1), and reproducible.
    let t = (seed + Math.imul(i + 1, 0x6d2b79f5)) >>> 0
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * maxMs
  }
}
