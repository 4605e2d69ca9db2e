/**
 * The rate limiter's safety argument, checked on its real token policy (`ExpiredTokens`)
 * in a simulated system: processes whose clocks are offset by up to ±1,000 s and run up to
 * 0.05 % fast or slow (NTP's bound), random latencies for every request, answer and watch
 * event, demand that always exceeds the rate. However fast-check picks them, no window of
 * `per` ms may hold more than `rate + burst` admissions (commit times, the one clock etcd has).
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { KeyValue } from '../../lib/core/kv.js'
import { permitKeys } from '../../lib/core/keys.js'
import type { View } from '../../lib/permits/permit-queue.js'
import { CLOCK_RATE_MARGIN, ExpiredTokens } from '../../lib/permits/token-policy.js'

const SLOTS = permitKeys.tokens('model')

interface Params {
  rate: number
  burst: number
  clocks: { offset: number; speed: number }[]
  /** Largest one-way latency, ms. */
  latency: number
  seed: number
}

/** A tiny deterministic random source (fast-check picks the seed). */
function random(seed: number) {
  let x = seed || 1
  return () => (x = (x * 48271) % 2147483647) / 2147483647
}

/** Runs `ms` of simulated time; returns the commit times of the admissions. */
function simulate(p: Params, ms: number): number[] {
  const rnd = random(p.seed)
  const lag = () => rnd() * p.latency
  const per = 1000
  const pacing = (per / p.rate) * (1 + CLOCK_RATE_MARGIN)
  const capacity = p.burst + 1
  let now = 0
  const events: { at: number; run: () => void }[] = []
  const at = (t: number, run: () => void) => events.push({ at: Math.max(t, now), run })
  // The store: slot key → mod revision; snapshots by revision for reads "as of" a revision.
  let revision = 1n
  const slots = new Map<string, bigint>()
  const history = new Map<bigint, KeyValue[]>([[1n, []]])
  const kvs = (): KeyValue[] =>
    [...slots].map(([key, mod]) => ({ key, value: Buffer.alloc(0), createRevision: mod, modRevision: mod, version: 1n, lease: '0' }))
  const commit = () => history.set(++revision, kvs())
  const admissions: number[] = []
  let onDelete: ((key: string, rev: bigint) => void) | undefined
  const processes = p.clocks.map((c) => {
    const local = () => c.offset + now * c.speed
    const toReal = (l: number) => (l - c.offset) / c.speed
    return { local, toReal, speed: c.speed, policy: new ExpiredTokens(SLOTS, capacity, pacing, local) }
  })
  const pick = () => processes[Math.floor(rnd() * processes.length)]

  /** A Txn sent now: at commit, take the first option whose mods match; then its answer. */
  const txn = (
    proc: (typeof processes)[number],
    options: { key: string; mod: bigint }[][],
    answered: (taken: boolean, view: Omit<View, 'receivedAt'>) => void,
  ) => {
    at(now + lag(), () => {
      const option = options.find((o) => o.length > 0 && o.every((c) => (slots.get(c.key) ?? 0n) === c.mod))
      if (option) {
        for (const c of option) slots.set(c.key, revision + 1n)
        commit()
        admissions.push(now)
        nextHead(revision)
      }
      const view = { slots: kvs(), revision }
      const mod = revision
      at(now + lag(), () => {
        if (option)
          holder(
            proc,
            option.map((c) => c.key),
            mod,
          )
        answered(option !== undefined, view)
      })
    })
  }

  /** The admitting process deletes its tokens `capacity × pacing` after the answer, by its clock. */
  const holder = (proc: (typeof processes)[number], keys: string[], mod: bigint) => {
    at(now + (capacity * pacing) / proc.speed + lag(), () => {
      for (const key of keys) {
        if (slots.get(key) !== mod) continue
        slots.delete(key)
        commit()
        const rev = revision
        const notify = onDelete
        at(now + lag(), () => notify?.(key, rev))
      }
    })
  }

  /** The next waiter (in some process) hears its predecessor's key went at `goneAt`. */
  const nextHead = (goneAt: bigint) => {
    const proc = pick()
    at(now + lag(), () => {
      const seenAt = proc.local()
      txn(
        proc,
        proc.policy.guesses().map((c) => [c]),
        (taken, view) => {
          if (taken) return
          head(proc, { ...view, receivedAt: proc.local(), before: { slots: history.get(goneAt)!, receivedAt: seenAt } })
        },
      )
    })
  }

  const head = (proc: (typeof processes)[number], view: View) => {
    const decision = proc.policy.decide(view, 1)
    if (decision.kind === 'take')
      return txn(
        proc,
        [decision.slots, ...proc.policy.guesses().map((c) => [c])],
        (taken, v) => taken || head(proc, { ...v, receivedAt: proc.local() }),
      )
    if (decision.kind !== 'wait') throw new Error('one token at a time: nothing to expire')
    let woken = false
    const wake = (next: View) => {
      if (woken) return
      woken = true
      onDelete = undefined
      head(proc, next)
    }
    onDelete = (key, rev) => wake({ slots: view.slots.filter((kv) => kv.key !== key), revision: rev, receivedAt: proc.local() })
    // As the real timer (AbortSignal.timeout(Math.ceil(ms))): never before wakeAt by this clock.
    if (decision.wakeAt !== undefined) at(proc.toReal(decision.wakeAt) + 0.001, () => wake(view))
  }

  head(pick(), { slots: [], revision: 1n, receivedAt: processes[0].local() })
  for (let steps = 0; events.length > 0; steps++) {
    if (steps > 1_000_000) throw new Error('the simulation does not advance')
    events.sort((a, b) => a.at - b.at)
    const next = events.shift()!
    if (next.at > ms) break
    now = next.at
    next.run()
  }
  return admissions
}

function mostInWindow(times: number[], per: number): number {
  let most = 0
  for (let i = 0, j = 0; i < times.length; i++) {
    while (j < times.length && times[j] < times[i] + per) j++
    most = Math.max(most, j - i)
  }
  return most
}

describe('rate limiter model: skewed clocks, random latencies', () => {
  it('never more than rate + burst admissions in any window of per, and it keeps admitting', () => {
    const clock = fc.record({
      offset: fc.double({ min: -1e6, max: 1e6, noNaN: true }),
      speed: fc.double({ min: 1 - 0.0005, max: 1 + 0.0005, noNaN: true }),
    })
    fc.assert(
      fc.property(
        fc.record({
          rate: fc.integer({ min: 2, max: 60 }),
          burst: fc.integer({ min: 0, max: 6 }),
          clocks: fc.array(clock, { minLength: 1, maxLength: 5 }),
          latency: fc.double({ min: 0, max: 40, noNaN: true }),
          seed: fc.integer({ min: 1, max: 2 ** 31 - 2 }),
        }),
        (p) => {
          const ms = 4000
          const admitted = simulate(p, ms)
          expect(mostInWindow(admitted, 1000)).toBeLessThanOrEqual(p.rate + p.burst)
          // Liveness: a handoff costs at most a few latencies on top of the refill interval.
          const worst = (1000 / p.rate) * (1 + CLOCK_RATE_MARGIN) + 4 * p.latency + 1
          expect(admitted.length).toBeGreaterThanOrEqual(Math.floor(ms / worst) - 1)
        },
      ),
      { numRuns: 300 },
    )
  })
})
