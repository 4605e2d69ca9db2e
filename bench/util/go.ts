import type { BenchContext } from './types.js'
import type { GoResult } from './gopeer.js'

/** Runs a Go peer scenario; returns null (and logs why) when the peer is unavailable or fails. */
export async function runGo(ctx: BenchContext, args: string[]): Promise<{ result: GoResult | null; why?: string }> {
  if (ctx.gopeer.unavailable) return { result: null, why: ctx.gopeer.unavailable }
  try {
    return { result: await ctx.gopeer.run([...args, '-prefix', ctx.prefix('go')]) }
  } catch (err) {
    ctx.log(String(err))
    return { result: null, why: `Go peer failed: ${(err as Error).message.slice(0, 200)}` }
  }
}

/** The floor (one put, p50 ms) measured by the floor scenario earlier in the run. */
export function floorP50(ctx: BenchContext): number | null {
  const d = ctx.results.get('floor')?.details as { ours?: { p50: number } } | undefined
  return d?.ours?.p50 ?? null
}
