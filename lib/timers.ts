/**
 * Every timer of the library is armed here, so that no setting can ask Node for a delay it
 * cannot keep. Node arms at most 2^31 − 1 ms (~24.8 days): a longer `setTimeout` or
 * `setInterval` fires after 1 ms (with a `TimeoutOverflowWarning`), and `AbortSignal.timeout()`
 * throws a `RangeError` past 2^32 − 1 ms. Settings we accept ask for more: a lease TTL up to
 * `MAX_TTL_S` (a keepalive every TTL/3 = 3,000,000 s), a rate limiter's token life of months.
 * A long delay is armed in steps of at most {@link MAX_TIMER_MS} and re-armed until it is due.
 *
 * Times are `performance.now()`'s, and a timer never fires before its delay has passed on that
 * clock (Node may wake a timer up to a millisecond early): a rate limiter's token must not go
 * before its time. A delay of `Infinity` never fires. Timers do not keep the process alive
 * unless armed with `{ ref: true }`.
 */

/** The longest delay Node's timers take. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** A timer armed by {@link startTimer} or {@link startInterval}. */
export interface Timer {
  /** Stops it; it will not fire (again). */
  cancel(): void
}

export interface TimerOptions {
  /** Keep the process alive while the timer is armed (default false). */
  ref?: boolean
}

/** Calls `fire` once, no sooner than `ms` from now, however long `ms` is. */
export function startTimer(ms: number, fire: () => void, options: TimerOptions = {}): Timer {
  const due = performance.now() + Math.max(0, ms)
  let handle: NodeJS.Timeout | undefined
  let cancelled = false
  const arm = (left: number) => {
    handle = setTimeout(
      () => {
        if (cancelled) return
        const rest = due - performance.now()
        // NaN (a NaN delay) compares false: as Node does, such a timer fires at once.
        if (rest > 0) arm(rest)
        else fire()
      },
      Math.min(MAX_TIMER_MS, Math.ceil(left)),
    )
    if (!options.ref) handle.unref()
  }
  if (due !== Infinity) arm(due - performance.now())
  return {
    cancel() {
      cancelled = true
      clearTimeout(handle)
    },
  }
}

/** Calls `fire` every `ms` (the first time `ms` from now), however long `ms` is. */
export function startInterval(ms: number, fire: () => void, options: TimerOptions = {}): Timer {
  let current: Timer
  const next = () => {
    current = startTimer(
      ms,
      () => {
        // Re-armed before `fire` runs, as setInterval is: a `fire` that cancels stops it for good.
        next()
        fire()
      },
      options,
    )
  }
  next()
  return { cancel: () => current.cancel() }
}

/** A signal that aborts `ms` from now with the reason `AbortSignal.timeout()` gives; `cancel()` disarms it. */
export function timeoutSignal(ms: number): { signal: AbortSignal; cancel(): void } {
  const controller = new AbortController()
  const timer = startTimer(ms, () => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')))
  return { signal: controller.signal, cancel: () => timer.cancel() }
}

/** Resolves `ms` from now; keeps the process alive meanwhile only with `{ ref: true }`. */
export function sleep(ms: number, options: TimerOptions = {}): Promise<void> {
  return new Promise((resolve) => startTimer(ms, resolve, options))
}
