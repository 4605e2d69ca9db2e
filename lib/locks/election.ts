import type { ComparatorBuilder } from 'etcd3'
import { checkOptions, checkSession } from '../core/check.js'
import { InvalidArgumentError, InvalidStateError, NoLeaderError, NotLeaderError, SessionExpiredError, WatchLostError } from '../errors.js'
import { contenders } from '../core/keys.js'
import { IDEMPOTENT, checkName, checkValue, keyspace, type Compare, type KeyValue, type Keyspace } from '../core/kv.js'
import { CallGuard, createOnLease, OwnedKey, ownerCompareOf } from '../wait/owned-key.js'
import { heldSignal } from '../fencing.js'
import type { Session } from '../session/session.js'
import { AHEAD_READ_LIMIT, readAhead, type TurnView, waitTurn } from '../wait/turn.js'
import { waitFor, type WaitOptions } from '../wait/wait.js'
import { startHold, startWait, type HoldProbe } from '../telemetry/coordination.js'

/** A leader as {@link Election.leader} and {@link Election.observe} report it. */
export interface Leader {
  /** The leader's key, `<name>/<leaseHex>`. */
  key: string
  /** The leader's current proposal (its last campaign or proclaim value). */
  value: string
  /** The leader key's create revision: identifies this term of leadership. */
  rev: bigint
  /** The revision of the write that set `value` (the last campaign or proclaim). */
  modRevision: bigint
  /** How many times the leader key was written: 1 after campaign, +1 per proclaim. */
  version: bigint
}

/** The answer of {@link Election.campaignOnce}: elected or not, never thrown. */
export interface ElectionDecision {
  /** Whether this candidate leads now. */
  elected: boolean
  /** Who leads: this candidate when elected, else the leader it found. */
  leader: Leader
}

/** A watch that keeps ending (e.g. the client closed) is given up after this many restarts in a row. */
const MAX_WATCH_RESTARTS = 3

/**
 * A leader election, key-compatible with Go's `concurrency.Election` and `etcdctl elect`: each
 * candidate puts `<name>/<leaseHex>` (value = its proposal) with its session's lease, and the
 * key with the lowest create revision leads. Candidates queue FIFO, each watching only its
 * predecessor. As in Go, candidacy is per session: two Election objects on one session and name
 * share one key, and campaigning again resumes that key (proclaiming the new value).
 */
export class Election {
  private readonly ks: Keyspace
  private readonly prefix: string
  private readonly guard: CallGuard
  /** This object's candidacy key while campaigning or leading (Go: `leaderSession != nil`). */
  private own?: OwnedKey
  private elected = false
  /** The span and timer of the current term (undefined when telemetry is off). */
  private term?: HoldProbe

  constructor(
    readonly session: Session,
    /** The election name; candidate keys live under `<name>/`. */
    readonly name: string,
  ) {
    checkSession(session, 'Election')
    checkName(name, 'Election name')
    this.ks = keyspace(session.client)
    this.prefix = contenders.prefix(name)
    this.guard = new CallGuard(
      (op) =>
        new InvalidStateError(
          `Election ${JSON.stringify(name)}: ${op}() called while another campaign() on the same object is running; use one Election per concurrent caller`,
        ),
    )
  }

  /**
   * An Election object taking over an existing candidacy of `session` (Go's `ResumeElection`),
   * e.g. after a restart that adopted the lease with `Session.create(client, { leaseId })`.
   * `key` and `rev` are a {@link Leader}'s `key` and `rev`. Unlike Go, the resumed election keeps
   * the `<name>/` prefix (Go drops the "/", so its Leader/Observe also match sibling names).
   */
  static resume(session: Session, name: string, key: string, rev: bigint): Election {
    const election = new Election(session, name)
    const mine = contenders.key(name, session.leaseHex)
    if (typeof key !== 'string' || key !== mine) {
      throw new InvalidArgumentError(
        `Election.resume: key must be this session's candidate key ${JSON.stringify(mine)}, got ${JSON.stringify(key)}; resume with the session whose lease is in the key`,
      )
    }
    if (typeof rev !== 'bigint' || rev <= 0n) {
      throw new InvalidArgumentError(`Election.resume: rev must be the key's create revision as a positive bigint, got ${String(rev)}`)
    }
    election.own = new OwnedKey(session, key, rev)
    election.elected = true
    return election
  }

  /** This candidate's key, `<name>/<leaseHex>` ('' when not campaigning). */
  get key(): string {
    return this.own?.key ?? ''
  }

  /**
   * The term's fencing token, as every grant of the library names it: the candidate key's create
   * revision, strictly increasing across leaders. Throws {@link NotLeaderError} when this object
   * has no candidacy (as `Mutex.fence` throws when the lock is not held).
   */
  get fence(): bigint {
    if (!this.own) throw new NotLeaderError(`election ${JSON.stringify(this.name)}: fence needs a candidacy; campaign() first`)
    return this.own.createRevision
  }

  /**
   * The create revision of this candidate's key, -1n when not campaigning (Go's `Rev()`).
   * @deprecated Use {@link fence}: the same token under the name every grant uses.
   */
  get rev(): bigint {
    return this.own?.createRevision ?? -1n
  }

  /**
   * Aborted when this leader's lease is lost (the session's signal, {@link LeaseLostError} as
   * reason), and already aborted with a {@link NotLeaderError} when not leading: read it before
   * each write of the term.
   */
  get signal(): AbortSignal {
    return heldSignal(() => {
      if (!this.own || !this.elected)
        throw new NotLeaderError(`election ${JSON.stringify(this.name)}: signal needs leadership; campaign() first`)
      return this.own
    })
  }

  /** True between a successful campaign and resign (or a failed proclaim), as far as this process knows. */
  get leading(): boolean {
    return this.elected
  }

  /**
   * Blocks until this candidate leads, then resolves. Puts `<name>/<leaseHex>` = `value` (or,
   * if this session already has that key, keeps its place in the queue and proclaims `value`).
   * Rejects with {@link SessionExpiredError} if the key vanishes while waiting (Go would report
   * success here) and, when `signal` aborts, removes the key and rejects with its reason.
   */
  async campaign(value: string | Buffer, options?: WaitOptions): Promise<void> {
    const proposal = checkValue(value, 'campaign value')
    const { signal } = checkOptions(options, 'Election.campaign')
    const probe = startWait('election', this.name)
    try {
      await this.campaignOnceWaiting(proposal, signal)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired', this.own?.createRevision)
  }

  private campaignOnceWaiting(proposal: Buffer, signal: AbortSignal | undefined) {
    return this.guard.run('campaign', async () => {
      signal?.throwIfAborted()
      this.session.signal.throwIfAborted()
      const registered = await this.register(proposal, { readAhead: true })
      if (!registered.leads) {
        try {
          await this.waitForTurn(registered.own, registered.view!, signal)
        } catch (err) {
          if (this.own === registered.own) this.own = undefined
          await registered.own.abandon()
          throw err
        }
      }
      this.won()
    })
  }

  /**
   * Campaigns once, without waiting: leads at once if no older candidate exists, else withdraws
   * the key this call created and resolves `elected: false` with who leads. Losing is an answer,
   * not an error (a `try` method throws one: see docs/ARCHITECTURE.md, "Names"). One round trip
   * when it wins, two when it loses.
   */
  campaignOnce(value: string | Buffer): Promise<ElectionDecision> {
    return this.campaignOnceAs('campaignOnce', value)
  }

  /** @deprecated Use {@link campaignOnce}: the same decision; a `try` method throws when refused (Mutex.tryLock), this one never did. */
  tryCampaign(value: string | Buffer): Promise<ElectionDecision> {
    return this.campaignOnceAs('tryCampaign', value)
  }

  private async campaignOnceAs(op: string, value: string | Buffer): Promise<ElectionDecision> {
    const proposal = checkValue(value, 'campaign value')
    const probe = startWait('election', this.name)
    try {
      const decision = await this.decideOnce(op, proposal)
      probe?.end(decision.elected ? 'acquired' : 'locked', decision.elected ? decision.leader.rev : undefined)
      return decision
    } catch (err) {
      probe?.fail(err)
      throw err
    }
  }

  private decideOnce(op: string, proposal: Buffer): Promise<ElectionDecision> {
    return this.guard.run(op, async () => {
      this.session.signal.throwIfAborted()
      const attempt = await this.register(proposal)
      if (attempt.leads) {
        this.won()
        // The Txn read the leader (our key) after the put; a re-campaign may have proclaimed since.
        return { elected: true, leader: { ...toLeader(attempt.leader!), value: proposal.toString() } }
      }
      this.reset()
      // An existing key is this session's place in the queue through another Election object: keep it.
      // A failed withdrawal strands the key on the session (see OwnedKey.abandon), never silently.
      if (attempt.created) await attempt.own.abandon()
      return { elected: false, leader: toLeader(attempt.leader!) }
    })
  }

  /**
   * Sets a new value without a new election. Fenced by the key's create revision: throws
   * {@link NotLeaderError} if this object has no candidacy or its key is gone (lease lost,
   * resigned elsewhere). As in Go, it also updates a candidate that is still queued.
   */
  async proclaim(value: string | Buffer): Promise<void> {
    const proposal = checkValue(value, 'proclaim value')
    const own = this.own
    if (!own) {
      throw new NotLeaderError(`election ${JSON.stringify(this.name)}: proclaim() needs a candidacy; campaign() first`)
    }
    const res = await this.ks.txn([own.ownerCompare()], [this.ks.put(own.key, proposal, this.session.leaseId)], [], IDEMPOTENT)
    if (!res.succeeded) {
      this.term?.end('lost') // the key went under the term (its lease, or a resign elsewhere)
      this.reset()
      throw new NotLeaderError(`election ${JSON.stringify(this.name)}: ${own.key} is gone (session expired or resigned); campaign() again`)
    }
  }

  /**
   * Gives up leadership (or the place in the queue): deletes the key if it is still this term's.
   * No-op when not campaigning. A delete that fails is thrown; the key is then also recorded on
   * the session as stranded (the lease still ends it).
   */
  async resign(): Promise<void> {
    const own = this.own
    if (!own) return
    // As Go: forget the candidacy even if the delete fails.
    this.reset()
    try {
      await own.delete()
    } catch (err) {
      this.session.strand(own.key)
      throw err
    }
  }

  /** The current leader (lowest create revision under `<name>/`); throws {@link NoLeaderError} when there is none. */
  async leader(): Promise<Leader> {
    const res = await this.ks.range(this.prefix, { prefix: true, sort: ['Create', 'Ascend'], limit: 1 })
    if (res.kvs.length === 0) throw new NoLeaderError(`election ${JSON.stringify(this.name)} has no leader; nobody is campaigning`)
    return toLeader(res.kvs[0])
  }

  /**
   * The current leader, then every change: proclaims by the leader and each new leader, in
   * order. Leaderless gaps are not reported. Once a new leader is reported, nothing of an earlier
   * leader follows. Each emit is a fresh object. Like Go's unbuffered channel, the next change is
   * read only when the consumer asks for it (proclaims are not dropped meanwhile). Survives
   * compaction (the watches restart from a fresh read). Ends when `signal` aborts or the
   * consumer stops iterating.
   */
  observe(options?: WaitOptions): AsyncIterable<Leader> {
    return this.observeLoop(checkOptions(options, 'Election.observe').signal)
  }

  /**
   * A compare that holds while this candidacy's key is current: put it in your Txns to write
   * only while leading (Go's `Rev`-based fencing). A compare for etcd to evaluate, not a boolean.
   */
  ownerCompare(): Compare {
    return ownerCompareOf(this.own, this.ks)
  }

  /** @deprecated Use {@link ownerCompare}: the same compare under the name every grant uses. */
  leaderCompare(): Compare {
    return this.ownerCompare()
  }

  /**
   * An etcd3 transaction builder guarded by this term (see `Mutex.fenced`):
   * `await election.fenced().then(client.put('k').value('v')).commit()` writes only while leading.
   */
  fenced(): ComparatorBuilder {
    if (!this.own || !this.elected)
      throw new NotLeaderError(`election ${JSON.stringify(this.name)}: fenced() needs leadership; campaign() first`)
    return this.own.fenced()
  }

  private async *observeLoop(signal?: AbortSignal): AsyncGenerator<Leader> {
    let last: Leader | undefined
    let restarts = 0
    for (;;) {
      if (signal?.aborted) return
      try {
        const current = await this.ks.range(this.prefix, { prefix: true, sort: ['Create', 'Ascend'], limit: 1 })
        if (signal?.aborted) return
        if (current.kvs.length === 0) {
          // Leaderless: wait for any candidate to appear, then read who leads (never report a
          // candidate that the read would not pick).
          await waitFor(this.ks.client, { key: this.prefix, prefix: true }, current.revision + 1n, (type) => type === 'put', signal)
          restarts = 0
          continue
        }
        const leader = toLeader(current.kvs[0])
        if (!last || !sameWrite(last, leader)) {
          last = leader
          yield { ...leader }
          if (signal?.aborted) return
        }
        // Follow the leader key from the read's revision, not its mod revision: that one may be
        // compacted already (etcd #7815).
        let from = current.revision + 1n
        for (;;) {
          const ev = await waitFor(this.ks.client, { key: leader.key }, from, () => true, signal)
          restarts = 0
          if (ev.type === 'delete') break
          from = ev.kv.modRevision + 1n
          last = toLeader(ev.kv)
          yield { ...last }
          if (signal?.aborted) return
        }
      } catch (err) {
        if (signal?.aborted) return
        // A compaction (or a member restart) cancelled a watch: start over from a fresh read.
        if (err instanceof WatchLostError && err.reason !== 'client-closed' && ++restarts <= MAX_WATCH_RESTARTS) continue
        throw err
      }
    }
  }

  /**
   * One Txn: create the candidate key (or read it when this session already has one) and read
   * the current leader in the same round trip, so an uncontended campaign costs one RPC.
   * Returns whether we lead already, and the revision at which our key is known to exist.
   */
  private async register(proposal: Buffer, options: { readAhead?: boolean } = {}) {
    const key = contenders.key(this.name, this.session.leaseHex)
    const first = this.ks.get(this.prefix, { prefix: true, sort: ['Create', 'Ascend'], limit: 1 })
    // A campaign that may wait also reads the youngest candidates, to wait on the delete feed with
    // no read when its turn comes (lib/wait/turn.ts). Keys only: candidates' values are proposals of
    // any size, and the turn needs only their keys and create revisions.
    const youngest = this.ks.get(this.prefix, {
      prefix: true,
      sort: ['Create', 'Descend'],
      limit: options.readAhead ? AHEAD_READ_LIMIT : 1,
      keysOnly: true,
    })
    const absent = this.ks.compare(key, 'Create', '==', 0)
    const res = await createOnLease(
      this.session,
      key,
      [absent],
      { mine: this.ks.put(key, proposal, this.session.leaseId), first, youngest },
      { existing: this.ks.get(key), first, youngest },
    )
    const existing = res.succeeded ? undefined : res.results.existing.kvs[0]
    const own = new OwnedKey(this.session, key, existing?.createRevision ?? res.revision)
    this.own = own
    this.elected = false
    const leader = res.results.first.kvs[0]
    const read = res.results.youngest
    // A read cut by its limit (more candidates than it takes, or a re-campaign of an old key
    // behind younger ones) is read again by the turn before the last key it knows of goes.
    const view: TurnView | undefined = options.readAhead
      ? { ahead: read.kvs.filter((kv) => kv.createRevision < own.createRevision), complete: !read.more, revision: res.revision }
      : undefined
    if (existing && !existing.value.equals(proposal)) {
      try {
        await this.proclaim(proposal)
      } catch (err) {
        await this.resign().catch(() => {})
        throw err
      }
    }
    return {
      own,
      leads: leader !== undefined && leader.createRevision === own.createRevision,
      revision: res.revision,
      created: res.succeeded,
      leader,
      view,
    }
  }

  /**
   * Waits until every older candidate is gone, as a Mutex waiter does (lib/wait/turn.ts: on the
   * prefix's shared delete feed, no read when its turn comes if the campaign saw every key
   * ahead). Ends early when our own key vanishes (lease expired or revoked, or resign() called
   * meanwhile) instead of reporting a leadership the key no longer backs (Go returns nil there).
   */
  private async waitForTurn(own: OwnedKey, view: TurnView, signal?: AbortSignal): Promise<void> {
    await waitTurn({
      ks: this.ks,
      prefix: this.prefix,
      own,
      isAhead: (kv) => kv.createRevision < own.createRevision,
      view,
      reread: () => readAhead(this.ks, this.prefix, own),
      // Any key ahead goes with its lease or its resign; a key without a lease (someone's data
      // under the election's prefix) would block as it blocks Go's campaign: not checked here,
      // since a keys-only read carries no lease on etcd 3.7 (#22209).
      check: () => {},
      signal,
      lost: (cause) => this.lost(own, cause),
    })
  }

  private lost(own: OwnedKey, cause?: unknown): Error {
    if (this.own !== own) {
      return new NotLeaderError(`election ${JSON.stringify(this.name)}: resign() was called while campaign() was waiting`)
    }
    const why = cause instanceof Error ? `: ${cause.message}` : ''
    return new SessionExpiredError(
      `election ${JSON.stringify(this.name)}: candidate key of session ${this.session.leaseHex} vanished while campaigning (lease expired or revoked, or the key was deleted)${why}; create a new Session and campaign again`,
      { cause },
    )
  }

  private reset() {
    this.own = undefined
    this.elected = false
    this.term?.end()
    this.term = undefined
  }

  /** Leads from now on; the term's span runs until resign (or the lease's loss). */
  private won() {
    this.elected = true
    this.term?.end() // a re-campaign of a leader: the earlier term's span ends here
    this.term = startHold('election', this.name, this.own!.createRevision, this.session.signal)
  }
}

function toLeader(kv: KeyValue): Leader {
  return { key: kv.key, value: kv.value.toString(), rev: kv.createRevision, modRevision: kv.modRevision, version: kv.version }
}

function sameWrite(a: Leader, b: Leader): boolean {
  return a.key === b.key && a.rev === b.rev && a.modRevision === b.modRevision
}
