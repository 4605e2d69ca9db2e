import type { Span } from '@opentelemetry/api'
import {
  ClaimLostError,
  IdempotencyClaimLostError,
  LeaseLostError,
  LockedError,
  LockTimeoutError,
  RateLimitedError,
  SessionExpiredError,
  WaitTimeoutError,
} from '../errors.js'
import { ATTR, LEASE_LOST_EVENT, type Outcome, type Primitive } from './names.js'
import { activeInstruments, activeTracer, otelApi, revisionAttribute, type Instruments } from './otel.js'

/**
 * Spans and metrics of the coordination primitives: a span per wait (its duration is the wait,
 * whatever the wait ended with), a span per hold (from the grant to its release, or to the loss
 * of its lease, recorded as an event with the reason), one span per STM transaction. Each
 * `start…` returns undefined when no tracer nor meter provider is registered, so a primitive's
 * hot path costs one branch (`probe?.end(…)`) and allocates nothing.
 */

/** The outcome a failed wait ended with, read from what it threw. */
export function outcomeOf(err: unknown): Outcome {
  if (err instanceof LockTimeoutError || err instanceof WaitTimeoutError) return 'timeout'
  if (err instanceof LockedError) return 'locked'
  if (err instanceof RateLimitedError) return 'rejected'
  if (err instanceof SessionExpiredError || err instanceof ClaimLostError || err instanceof IdempotencyClaimLostError) return 'lost'
  // An aborted signal's reason: lib/timers.ts `timeoutSignal` aborts with a DOMException TimeoutError.
  if (err instanceof Error && err.name === 'TimeoutError') return 'timeout'
  if (err instanceof Error && err.name === 'AbortError') return 'aborted'
  return 'error'
}

/** Outcomes that are an answer, not a failure: their spans keep an unset status. */
const EXPECTED: ReadonlySet<Outcome> = new Set([
  'acquired',
  'locked',
  'rejected',
  'duplicate',
  'in_progress',
  'gone',
  'released',
  'timeout',
  'aborted',
])

function markError(span: Span, outcome: Outcome, err: unknown): void {
  if (EXPECTED.has(outcome)) return
  const api = otelApi()
  if (err instanceof Error) span.recordException(err)
  span.setStatus({ code: api ? api.SpanStatusCode.ERROR : 2, message: err instanceof Error ? err.message : String(err) })
}

/** One wait, from the call to its grant or failure. */
export class WaitProbe {
  private readonly started = performance.now()
  private done = false

  constructor(
    private readonly primitive: Primitive,
    private readonly span: Span | undefined,
    private readonly instruments: Instruments | undefined,
  ) {}

  /** Ends the wait with `outcome`; `fence` is the grant's fencing token, when granted. */
  end(outcome: Outcome, fence?: bigint): void {
    if (this.done) return
    this.done = true
    if (this.span) {
      this.span.setAttribute(ATTR.outcome, outcome)
      if (fence !== undefined) this.span.setAttribute(ATTR.fence, revisionAttribute(fence))
      this.span.end()
    }
    this.instruments?.waitDuration.record((performance.now() - this.started) / 1000, {
      [ATTR.primitive]: this.primitive,
      [ATTR.outcome]: outcome,
    })
  }

  /** Ends the wait with what `err` says it ended with. */
  fail(err: unknown): void {
    const outcome = outcomeOf(err)
    if (this.span && !this.done) markError(this.span, outcome, err)
    this.end(outcome)
  }
}

/** Starts the span of a wait on `name` (undefined when telemetry is off). */
export function startWait(primitive: Primitive, name: string): WaitProbe | undefined {
  const tracer = activeTracer()
  const instruments = activeInstruments()
  if (tracer === undefined && instruments === undefined) return undefined
  const span = tracer?.startSpan(`wait ${primitive}`, { attributes: { [ATTR.primitive]: primitive, [ATTR.name]: name } })
  return new WaitProbe(primitive, span, instruments)
}

/** A reason's words for a span event: a lease loss's cause, else its error code or message. */
function lossReason(reason: unknown): string {
  if (reason instanceof LeaseLostError) return reason.reason
  if (reason instanceof Error) return (reason as { code?: unknown }).code?.toString() ?? reason.message
  return String(reason)
}

/** One hold, from its grant to its release, or to the loss of its lease (the event and the `lost` outcome). */
export class HoldProbe {
  private readonly started = performance.now()
  private done = false

  constructor(
    private readonly primitive: Primitive,
    private readonly signal: AbortSignal,
    private readonly span: Span | undefined,
    private readonly instruments: Instruments | undefined,
  ) {
    if (signal.aborted) this.lost()
    else signal.addEventListener('abort', this.lost, { once: true })
  }

  /** Ends the hold (the holder released it). */
  end(outcome: Outcome = 'released'): void {
    if (this.done) return
    this.done = true
    this.signal.removeEventListener('abort', this.lost)
    if (this.span) {
      this.span.setAttribute(ATTR.outcome, outcome)
      this.span.end()
    }
    this.instruments?.holdDuration.record((performance.now() - this.started) / 1000, {
      [ATTR.primitive]: this.primitive,
      [ATTR.outcome]: outcome,
    })
  }

  /** The lease went while held: the event says why, and the hold ends there (it can no longer be trusted). */
  private readonly lost = () => {
    if (this.done) return
    const reason = lossReason(this.signal.reason)
    if (this.span) {
      const message = this.signal.reason instanceof Error ? this.signal.reason.message : String(this.signal.reason)
      this.span.addEvent(LEASE_LOST_EVENT, { [ATTR.reason]: reason, 'exception.message': message })
      markError(this.span, 'lost', this.signal.reason)
    }
    this.instruments?.leaseLosses.add(1, { [ATTR.primitive]: this.primitive, [ATTR.reason]: reason })
    this.end('lost')
  }
}

/**
 * Starts the span of a hold of `name` granted with `fence`, ended by {@link HoldProbe.end} or
 * when `signal` (the grant's lease signal) aborts (undefined when telemetry is off).
 */
export function startHold(primitive: Primitive, name: string, fence: bigint, signal: AbortSignal): HoldProbe | undefined {
  const tracer = activeTracer()
  const instruments = activeInstruments()
  if (tracer === undefined && instruments === undefined) return undefined
  const span = tracer?.startSpan(`hold ${primitive}`, {
    attributes: { [ATTR.primitive]: primitive, [ATTR.name]: name, [ATTR.fence]: revisionAttribute(fence) },
  })
  return new HoldProbe(primitive, signal, span, instruments)
}

/** One STM transaction: its attempts and conflicts. */
export class StmProbe {
  /** Attempts that conflicted so far. */
  conflicts = 0
  constructor(
    private readonly span: Span | undefined,
    private readonly instruments: Instruments | undefined,
  ) {}

  /** An attempt conflicted and runs again. */
  conflicted(): void {
    this.conflicts++
    this.instruments?.stmConflicts.add(1)
  }

  end(attempts: number, err?: unknown): void {
    if (!this.span) return
    this.span.setAttribute(ATTR.attempts, attempts)
    this.span.setAttribute(ATTR.conflicts, this.conflicts)
    if (err !== undefined) {
      this.span.setAttribute(ATTR.outcome, outcomeOf(err))
      markError(this.span, outcomeOf(err), err)
    }
    this.span.end()
  }
}

/** Starts the span of one `runSTM` (undefined when telemetry is off). */
export function startStm(): StmProbe | undefined {
  const tracer = activeTracer()
  const instruments = activeInstruments()
  if (tracer === undefined && instruments === undefined) return undefined
  return new StmProbe(tracer?.startSpan('stm'), instruments)
}

/** Counts a rate limiter's answer. */
export function countRateDecision(admitted: boolean, cost: number): void {
  const instruments = activeInstruments()
  if (instruments === undefined) return
  ;(admitted ? instruments.rateAdmissions : instruments.rateRejections).add(cost)
}
