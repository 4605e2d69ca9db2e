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

/** How a target compares ours with the peer. */
export type Goal = { kind: 'max-ratio'; ratio: number } | { kind: 'min-ratio'; ratio: number } | { kind: 'none' }

/** Builds an entry, computing ratio and whether the goal is met. */
export function entry(
  name: string,
  metric: string,
  ours: number | null,
  peer: string,
  peerValue: number | null,
  goal: Goal,
  note?: string,
): Entry {
  const ratio = ours !== null && peerValue !== null && peerValue !== 0 ? ours / peerValue : null
  let target = 'reported'
  let met: boolean | null = null
  if (goal.kind === 'max-ratio') {
    target = `<= ${goal.ratio}x`
    met = ratio === null ? null : ratio <= goal.ratio
  } else if (goal.kind === 'min-ratio') {
    target = `>= ${goal.ratio}x`
    met = ratio === null ? null : ratio >= goal.ratio
  }
  const e: Entry = { name, metric, ours: round(ours), peer, peerValue: round(peerValue), ratio: round(ratio), target, met }
  if (note) e.note = note
  return e
}

export function round(x: number | null): number | null {
  if (x === null || !Number.isFinite(x)) return null
  const digits = Math.abs(x) >= 100 ? 1 : Math.abs(x) >= 1 ? 3 : 4
  return Number(x.toFixed(digits))
}
