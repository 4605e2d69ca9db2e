import { randomUUID } from 'node:crypto'
import type { MiddlewareObj, Request } from '@middy/core'
import type { Context } from 'aws-lambda'
import type { ComparatorBuilder, Namespace } from 'etcd3'
import { sharedClient } from '../lib/core/client.js'
import { Election, type Leader } from '../lib/locks/election.js'
import type { Compare } from '../lib/core/kv.js'
import { NotLeaderError } from '../lib/errors.js'
import { Session } from '../lib/session/session.js'
import { emit, type OnEvent } from './events.js'
import { isHttpEvent, jsonResponse } from './http.js'
import { ScopeUses, shortCircuit, type ScopeUse } from './scope.js'
import { resolveName, type NameOption } from './name.js'
import { validateOptions, type Schema } from './options.js'

/** What the leader's handler gets as `context.etcd.leader`. */
export interface LeadershipGrant {
  /** The leader key, `<election>/<leaseHex>` (Go / `etcdctl elect` layout). */
  key: string
  /** The key's create revision: the term's fencing token, strictly increasing across leaders. */
  fence: bigint
  /** @deprecated The same as {@link fence}. */
  rev: bigint
  /** This leader's proposal. */
  value: string
  /** A compare that holds while this term lasts: put it in the compares of your etcd Txns (not a boolean). */
  ownerCompare: () => Compare
  /** @deprecated The same as {@link ownerCompare}. */
  leaderCompare: () => Compare
  /** An etcd3 transaction builder guarded by this term: `await grant.fenced().then(client.put('k').value('v')).commit()`. */
  fenced: () => ComparatorBuilder
  /** Aborted if the lease is lost while the handler runs. Reading it checks the lease's bound at once. */
  readonly signal: AbortSignal
}

export interface LeaderGuardOptions<TEvent = any, TResult = any> {
  /** The election name, or a function of the event and context. */
  election: NameOption<TEvent>
  /** This candidate's proposal (default `<functionName>:<instance id>`). */
  value?: NameOption<TEvent>
  /**
   * Seconds leadership outlives the invocation, so the next warm invocation of this instance
   * stays leader without a new campaign; a dead leader is replaced within `term` seconds.
   * Without it, leadership lasts one invocation.
   */
  term?: number
  /** Lease TTL without `term`, seconds (default 10). */
  ttl?: number
  /**
   * The response of a follower. Default: for an HTTP event (API Gateway REST or HTTP API,
   * function URL, ALB) a 409 with a JSON body `{ message, leader: false }`; for any other event
   * `{ leader: false, leaderValue }`.
   */
  onFollower?: (request: Request<TEvent, TResult>, leader: Leader | undefined) => TResult | Promise<TResult>
  /** Default: `sharedClient()`. */
  client?: Namespace
  onEvent?: OnEvent
}

const defaults = { ttl: 10 } as const

const schema: Schema = {
  election: { type: 'nameOrFunction', required: true },
  value: { type: 'nameOrFunction' },
  term: { type: 'seconds' },
  ttl: { type: 'seconds' },
  onFollower: { type: 'function' },
  client: { type: 'object' },
  onEvent: { type: 'function' },
}

/**
 * A follower's default answer. An HTTP caller would get an empty 200 from a plain object (API
 * Gateway reads no `statusCode` in it), as if the work had been done: it gets a 409 instead,
 * like a held lock's. The leader's proposal is left out of it: it names a function instance,
 * which is none of an outside caller's business.
 */
function followerResponse(event: unknown, leader: Leader | undefined): unknown {
  if (!isHttpEvent(event)) return { leader: false, leaderValue: leader?.value }
  return jsonResponse(event, 409, {
    message: 'Conflict: another invocation is the leader, so this one did not run; retry later',
    leader: false,
  })
}

/** Identifies this process (function instance) in default proposals. */
const instanceId = randomUUID().slice(0, 8)

/** A term of leadership kept by this instance between invocations. */
interface Term {
  leaseId: string
  key: string
  fence: bigint
  /** When the term's lease certainly ends, by `performance.now()`, */
  aliveUntil: number
  /** … and by `Date.now()` (the monotonic clock may stall while a frozen VM is paused): the sooner decides. */
  aliveUntilWall: number
}

/**
 * Runs the handler only in the leader's invocation (Go `Election` / `etcdctl elect`
 * compatible keys). A follower never waits: it short-circuits with `onFollower`'s response
 * (default: a 409 for an HTTP event, `{ leader: false, leaderValue }` for others), after
 * releasing what outer middlewares hold.
 */
export function leaderGuard<TEvent = any, TResult = any>(
  options: LeaderGuardOptions<TEvent, TResult>,
): MiddlewareObj<TEvent, TResult, Error, Context & { etcd: { leader: LeadershipGrant } }> {
  const opts = validateOptions<LeaderGuardOptions<TEvent, TResult> & typeof defaults>('leaderGuard', schema, defaults, options)
  const uses = new ScopeUses('leaderGuard')
  const client = () => opts.client ?? sharedClient()
  // Instance state on purpose: a term belongs to this process, not to one invocation.
  const terms = new Map<string, Term>()
  /** Elections an invocation of this instance is leading (or trying to) right now. */
  const leading = new Set<string>()

  const follow = async (request: Request<TEvent, TResult>, name: string, leader: Leader | undefined) => {
    emit(opts.onEvent, { type: 'skipped', primitive: 'leader', name, key: leader?.key })
    const { onFollower } = opts
    return shortCircuit(request, () => (onFollower ? onFollower(request, leader) : (followerResponse(request.event, leader) as TResult)))
  }

  /** Leadership for one invocation, on the invocation's session; resigned when it ends. */
  const leadOnce = async (use: ScopeUse, name: string, value: string) => {
    const { election, attempt } = await use.scope.withSession(opts.ttl, async (session) => {
      const election = new Election(session, name)
      return { election, attempt: await election.campaignOnce(value) }
    })
    if (!attempt.elected) return { follower: attempt.leader }
    use.onRelease(() => election.resign())
    return { election }
  }

  /** Leadership kept for `term` seconds across invocations of this instance. */
  const leadForTerm = async (use: ScopeUse, name: string, value: string, term: number) => {
    // One invocation of this instance leads at a time; the others are followers.
    if (leading.has(name)) return { follower: undefined }
    leading.add(name)
    try {
      const election = await renewTerm(name, value, term)
      if (!(election instanceof Election)) {
        leading.delete(name)
        return { follower: election }
      }
      const state: Term = { leaseId: election.session.leaseId, key: election.key, fence: election.fence, aliveUntil: 0, aliveUntilWall: 0 }
      terms.set(name, state)
      use.onRelease(async () => {
        leading.delete(name)
        state.aliveUntil = election.session.aliveUntil
        state.aliveUntilWall = Date.now() + (state.aliveUntil - performance.now())
        election.session.orphan() // leadership lapses `term` seconds from now unless the next invocation renews it
      })
      return { election }
    } catch (err) {
      leading.delete(name)
      throw err
    }
  }

  /** This instance's term, renewed (one fenced write) while its lease is certainly alive, else a new campaign. */
  const renewTerm = async (name: string, value: string, term: number): Promise<Election | Leader | undefined> => {
    const held = terms.get(name)
    terms.delete(name)
    const left = held ? Math.min(held.aliveUntil - performance.now(), held.aliveUntilWall - Date.now()) : 0
    if (held && left > 0) {
      const session = await Session.create(client(), { leaseId: held.leaseId, ttl: term, aliveUntil: performance.now() + left })
      const election = Election.resume(session, name, held.key, held.fence)
      try {
        await election.proclaim(value)
        return election
      } catch (err) {
        session.orphan()
        // A transient failure says nothing about the term: our key may still lead until its
        // lease runs out. Keep the term, so the next invocation renews it instead of
        // campaigning against its own key and leaving the election without a running leader.
        if (!(err instanceof NotLeaderError)) {
          terms.set(name, held)
          throw err
        }
      }
    }
    const session = await Session.create(client(), { ttl: term })
    const election = new Election(session, name)
    const attempt = await election.campaignOnce(value).catch(async (err) => {
      await session.close().catch(() => {})
      throw err
    })
    if (attempt.elected) return election
    await session.close()
    return attempt.leader
  }

  const before = async (request: Request<TEvent, TResult, Error, Context & { etcd: { leader: LeadershipGrant } }>) => {
    const name = resolveName('leaderGuard', opts.election, request)
    const value = opts.value
      ? resolveName('leaderGuard', opts.value, request)
      : `${request.context?.functionName ?? 'function'}:${instanceId}`
    const use = uses.enter(request, client(), request.context)
    const outcome = opts.term ? await leadForTerm(use, name, value, opts.term) : await leadOnce(use, name, value)
    if (!outcome.election) return follow(request, name, outcome.follower)
    const { election } = outcome
    request.context.etcd = {
      ...request.context.etcd,
      leader: {
        key: election.key,
        fence: election.fence,
        rev: election.fence,
        value,
        ownerCompare: () => election.ownerCompare(),
        leaderCompare: () => election.ownerCompare(),
        fenced: () => election.fenced(),
        get signal() {
          return election.session.signal
        },
      },
    }
    emit(opts.onEvent, { type: 'acquired', primitive: 'leader', name, key: election.key, fence: String(election.fence) })
    return undefined
  }

  const leave = (request: Request<TEvent, TResult>) => uses.leave(request)

  return { before, after: leave, onError: leave }
}
