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

/** The floor (one put, median p50 ms over its runs) measured by the floor scenario earlier in the run. */
export function floorP50(ctx: BenchContext): number | null {
  const d = ctx.results.get('floor')?.details as { p50?: number } | undefined
  return d?.p50 ?? null
}

/** The floor's raw lock + unlock Txn pair: p50 and Node CPU per pair (ms, medians), or null when it did not run. */
export function floorLockTxns(ctx: BenchContext): { p50: number; cpuMs: number } | null {
  const d = ctx.results.get('floor')?.details as { lockTxnsP50?: number; lockTxnsCpuMs?: number } | undefined
  return d?.lockTxnsP50 === undefined || d.lockTxnsCpuMs === undefined ? null : { p50: d.lockTxnsP50, cpuMs: d.lockTxnsCpuMs }
}

/** The floor's Node CPU per put (ms, median over its runs), or null when it did not run. */
export function floorCpu(ctx: BenchContext): number | null {
  const d = ctx.results.get('floor')?.details as { cpuMsPerPut?: number } | undefined
  return d?.cpuMsPerPut ?? null
}
