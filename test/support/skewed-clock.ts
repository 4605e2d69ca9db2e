/**
 * Preloaded into a worker (`--import`) to skew its wall clock by `CLOCK_SKEW_MS`: `Date.now()`
 * and `new Date()` read that far off, as on a machine whose clock is wrong. The monotonic clock
 * (`performance.now()`, `process.hrtime`) is left alone, as no VM setting moves it.
 */
const skewMs = Number(process.env.CLOCK_SKEW_MS ?? '0')
if (!Number.isFinite(skewMs)) throw new Error(`CLOCK_SKEW_MS must be a number of ms, got ${process.env.CLOCK_SKEW_MS}`)

const RealDate = Date
const realNow = RealDate.now.bind(RealDate)

class SkewedDate extends RealDate {
  constructor(...args: unknown[]) {
    if (args.length === 0) super(realNow() + skewMs)
    else super(...(args as [string | number | Date]))
  }

  static override now(): number {
    return realNow() + skewMs
  }
}

globalThis.Date = SkewedDate as DateConstructor
