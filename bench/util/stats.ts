/** Percentile by the same rule as the Go peer (index floor(p * (n - 1)) of the sorted list). */
export function pct(samples: number[], p: number): number {
  if (samples.length === 0) return NaN
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.floor(p * (sorted.length - 1))]
}

export interface Latency {
  n: number
  p50: number
  p99: number
  mean: number
}

export function summarize(samples: number[]): Latency {
  return { n: samples.length, p50: pct(samples, 0.5), p99: pct(samples, 0.99), mean: samples.reduce((a, b) => a + b, 0) / samples.length }
}

/** Runs `op` `n` times sequentially after `warmup` untimed runs; returns per-op ms. */
export async function timeSequential(n: number, op: (i: number) => Promise<unknown>, warmup = Math.min(20, n)): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await op(-1 - i)
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await op(i)
    out.push(performance.now() - t0)
  }
  return out
}

/** Median of several runs of a number-producing measurement. */
export function median(xs: number[]): number {
  return pct(xs, 0.5)
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** p50 of each of `parts` consecutive, equal slices of `samples`: a latency's internal repeats. */
export function p50s(samples: number[], parts = 3): number[] {
  const size = Math.floor(samples.length / parts)
  return Array.from({ length: parts }, (_, i) => pct(samples.slice(i * size, (i + 1) * size), 0.5))
}
