import type { EtcdClient } from '../../lib/index.js'
import type { GoPeer } from './gopeer.js'

/**
 * One row of docs/benchmarks.json: one scenario measured against one peer. `ours` and
 * `peerValue` are null when that side could not be measured (then `met` is null and `note`
 * says why) — never a made-up number.
 */
export interface Entry {
  name: string
  metric: string
  ours: number | null
  peer: string
  peerValue: number | null
  /** ours / peerValue. */
  ratio: number | null
  /** The target as text, e.g. "<= 1.1x Go"; "reported" when there is none. */
  target: string
  met: boolean | null
  note?: string
  /**
   * Repeated measurements behind `ours` (and `peerValue`): `ours` is then their median, and the
   * target is judged on the medians. A row without it comes from a single run.
   */
  spread?: { ours?: Spread; peer?: Spread }
}

/** Several runs (or internal repeats) of one measurement. */
export interface Spread {
  min: number
  median: number
  max: number
  /** How many runs. */
  runs: number
}

/** The spread of repeated measurements (median by the Go peer's percentile rule). */
export function spreadOf(xs: number[]): Spread {
  const sorted = [...xs].sort((a, b) => a - b)
  return {
    min: round(sorted[0])!,
    median: round(sorted[Math.floor((sorted.length - 1) / 2)])!,
    max: round(sorted[sorted.length - 1])!,
    runs: sorted.length,
  }
}

/** What a scenario hands back: its rows, prose notes for the report, raw numbers for the JSON. */
export interface ScenarioResult {
  entries: Entry[]
  notes: string[]
  details?: Record<string, unknown>
}

/** Everything a scenario may use; all scenarios run against the same etcd in one process. */
export interface BenchContext {
  endpoints: string[]
  /** A client shared by the scenarios (like a warm function's module-scope client). */
  client: EtcdClient
  /** A fresh client (closed by the runner at the end). */
  newClient(): EtcdClient
  gopeer: GoPeer
  /** Scale factor for operation counts: 1 for the real run, smaller with --quick. */
  scale: number
  /** A key prefix no other scenario uses. */
  prefix(label: string): string
  log(msg: string): void
  /** Results of scenarios that already ran (the floor is read by later ones). */
  results: Map<string, ScenarioResult>
}

export interface Scenario {
  name: string
  run(ctx: BenchContext): Promise<ScenarioResult>
}

/** How a target compares ours with the peer ('below': strictly less, e.g. fewer messages). */
export type Goal =
  | { kind: 'max-ratio'; ratio: number }
  | { kind: 'min-ratio'; ratio: number }
  | { kind: 'below'; ratio: number }
  | { kind: 'none' }

/** One measured value, or the runs of a repeated measurement (reported as their median and spread). */
export type Measured = number | number[] | null

/** Builds an entry, computing ratio and whether the goal is met (on the medians of repeated runs). */
export function entry(name: string, metric: string, ours: Measured, peer: string, peerValue: Measured, goal: Goal, note?: string): Entry {
  const o = measured(ours)
  const p = measured(peerValue)
  const ratio = o.value !== null && p.value !== null && p.value !== 0 ? o.value / p.value : null
  let target = 'reported'
  let met: boolean | null = null
  if (goal.kind === 'max-ratio') {
    target = `<= ${goal.ratio}x`
    met = ratio === null ? null : ratio <= goal.ratio
  } else if (goal.kind === 'min-ratio') {
    target = `>= ${goal.ratio}x`
    met = ratio === null ? null : ratio >= goal.ratio
  } else if (goal.kind === 'below') {
    target = `< ${goal.ratio}x`
    met = ratio === null ? null : ratio < goal.ratio
  }
  const e: Entry = { name, metric, ours: round(o.value), peer, peerValue: round(p.value), ratio: round(ratio), target, met }
  if (o.spread || p.spread) e.spread = { ...(o.spread ? { ours: o.spread } : {}), ...(p.spread ? { peer: p.spread } : {}) }
  if (note) e.note = note
  return e
}

function measured(x: Measured): { value: number | null; spread?: Spread } {
  if (x === null || typeof x === 'number') return { value: x }
  if (x.length === 0) return { value: null }
  const spread = spreadOf(x)
  return { value: spread.median, spread }
}

export function round(x: number | null): number | null {
  if (x === null || !Number.isFinite(x)) return null
  const digits = Math.abs(x) >= 100 ? 1 : Math.abs(x) >= 1 ? 3 : 4
  return Number(x.toFixed(digits))
}
