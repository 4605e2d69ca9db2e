import { split, widening, windowEnd } from './key-windows.js'
import { Branch, type KeyValue, type Keyspace, type NamedResults, type RangeOp } from '../core/kv.js'

/**
 * Finding the keys of one prefix that lack their counterpart under another — queue items without
 * a claim marker (visible), delayed messages without a timer (due) — with reads whose answers
 * and server cost stay bounded however many keys are covered. Both prefixes sort in step (the
 * cover of `<a><suffix>` is `<b><suffix>…`), so one window of suffixes selects the keys and
 * their covers alike, and two count-only reads of a window tell whether it holds an uncovered
 * key: more keys than covers. Windows with none are skipped by their counts; a window with one
 * is cut into sixteen and counted again until it is small enough to read, so a receive behind
 * 100,000 claimed items reads a few hundred keys, not 100,000.
 *
 * A cover without its key (a claim marker whose item a Go `Dequeue` took) makes a window look
 * fully covered: the uncovered key beside it is found once the orphan is gone (its lease ends,
 * or a sweep removes it) — or by a reader whose window reads the keys themselves.
 */

/** Two prefixes in step: keys under `a`, each covered while its key under `b` exists. */
export interface Pair {
  a: string
  b: string
  /** The `b` key that covers an `a` key (sorting, within `b`, where the key sorts within `a`). */
  coverOf(kv: KeyValue): string
}

/** What one window `[from, end)` (suffixes; `end` undefined: to the end of the prefix) holds. */
export interface WindowRead {
  from: string
  end: string | undefined
  /** Keys under `a` in the window, and under `b` (from the answers' counts). */
  count: number
  covers: number
  /** The `a` keys read (the first ones, when the window holds more than the limit). */
  kvs: KeyValue[]
  /** Of those, the ones known to lack their cover, in key order. */
  uncovered: KeyValue[]
  /** Where the part of the window this read could not decide on starts (a key it read), if anywhere. */
  rest?: string
}

/** The two reads of one window, for the caller's Txn: of the keys under `a`, of their covers under `b`. */
export type WindowOps = { keys: RangeOp; covers: RangeOp }

/** What the {@link WindowOps} of a window returned. */
export type WindowAnswers = NamedResults<WindowOps>

/** Windows a count round looks at: each pair of count-only reads costs two ops of the Txn. */
const PARTS = 16

/** Count and read rounds one search may take before it returns what it found. */
const MAX_ROUNDS = 24

/** A bounded search: a read round of one window, or a count round of several. */
export class CoverSearch {
  constructor(
    private readonly ks: Keyspace,
    readonly pair: Pair,
    /** Keys one read returns at most (its covers: twice as many, for orphans among them). */
    private readonly limit: number,
  ) {}

  /** The two reads of window `[from, end)` (keys only, at most `limit` keys), for the caller's Txn. */
  readOps(from: string, end: string | undefined, limit = this.limit): WindowOps {
    const { a, b } = this.pair
    return {
      keys: this.ks.get(`${a}${from}`, { ...windowEnd(a, end), keysOnly: true, limit }),
      covers: this.ks.get(`${b}${from}`, { ...windowEnd(b, end), keysOnly: true, limit: 2 * limit }),
    }
  }

  /** The two count-only reads of window `[from, end)`. */
  countOps(from: string, end: string | undefined): WindowOps {
    const { a, b } = this.pair
    return {
      keys: this.ks.get(`${a}${from}`, { ...windowEnd(a, end), countOnly: true }),
      covers: this.ks.get(`${b}${from}`, { ...windowEnd(b, end), countOnly: true }),
    }
  }

  /** What window `[from, end)` holds, from the answers of its {@link readOps}. */
  decode(from: string, end: string | undefined, { keys, covers }: WindowAnswers): WindowRead {
    const coverKeys = new Set(covers.kvs.map((kv) => kv.key))
    // Covers cut by the limit: keys whose cover would sort after the last one read are unknown.
    const coversCut = Number(covers.count) > covers.kvs.length
    const lastCover = coversCut ? covers.kvs[covers.kvs.length - 1]?.key : undefined
    const known = lastCover === undefined ? keys.kvs : keys.kvs.filter((kv) => this.pair.coverOf(kv) <= lastCover)
    const uncovered = known.filter((kv) => !coverKeys.has(this.pair.coverOf(kv)))
    const count = Number(keys.count)
    // The rest starts at a key (read again, not after it): a bound between a key and its
    // successor would sort the key's own cover (`<key>/<rev>`) on the wrong side of it.
    let rest: string | undefined
    if (known.length < keys.kvs.length) rest = this.suffix(keys.kvs[known.length])
    else if (count > keys.kvs.length) rest = this.suffix(keys.kvs[keys.kvs.length - 1])
    return { from, end, count, covers: Number(covers.count), kvs: keys.kvs, uncovered, rest }
  }

  /** Reads window `[from, end)` in a Txn of its own. */
  async read(from: string, end: string | undefined, limit = this.limit): Promise<WindowRead> {
    const res = await this.ks.reads(this.readOps(from, end, limit))
    return this.decode(from, end, res.results)
  }

  /** The suffix of an `a` key. */
  suffix(kv: KeyValue): string {
    return kv.key.slice(this.pair.a.length)
  }

  /**
   * Finds the first window in `[from, to)` (`to` undefined: to the end) that holds uncovered
   * keys and reads it; undefined when the counts say there are none. An open region is counted
   * in windows widening fourfold from `span`; a bounded one in sixteen equal ones (after
   * `lowest`, a suffix known to exist, when `from` is the start of the prefix). `coveredTo`
   * says up to where every key was found covered on the way.
   */
  async locate(
    from: string,
    to: string | undefined,
    options: { span?: bigint; lowest?: string; limit?: number } = {},
  ): Promise<{ read?: WindowRead; coveredTo: string }> {
    // A window of up to `this.limit` keys is read, `limit` of them at a time.
    const limit = Math.min(options.limit ?? this.limit, this.limit)
    let coveredTo = from
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const windows: [string, string | undefined][] =
        to === undefined ? widening(from, options.span ?? 1_000_000n, PARTS) : split(from, to, PARTS, options.lowest)
      if (windows.length === 1) {
        // Nothing to cut it by: read it, and go on after what the read decided.
        const read = await this.read(from, to, limit)
        if (read.uncovered.length > 0) return { read, coveredTo }
        if (read.rest === undefined || read.count <= read.covers) return { coveredTo: read.end ?? coveredTo }
        coveredTo = from = read.rest
        continue
      }
      const round = new Branch()
      const counts = windows.map(([s, e]) => round.add(this.countOps(s, e)))
      const res = await this.ks.namedTxn([], round.ops)
      const answers = counts.map((count) => count(res.results))
      const keys = answers.map((a) => Number(a.keys.count))
      const i = answers.findIndex((a, j) => keys[j] > Number(a.covers.count))
      if (i < 0) return { coveredTo: windows[windows.length - 1][0] }
      const s = windows[i][0]
      coveredTo = s
      if (keys[i] <= this.limit) {
        // Read on into the windows after it while their keys fit one read: more to choose from.
        let j = i
        for (let total = keys[i]; j + 1 < windows.length && total + keys[j + 1] <= this.limit; j++) total += keys[j + 1]
        const read = await this.read(s, windows[j][1], limit)
        if (read.uncovered.length > 0 || read.rest === undefined) return { read, coveredTo }
        ;[from, to] = [read.rest, windows[j][1]]
      } else [from, to] = [s, windows[i][1]]
    }
    return { coveredTo }
  }
}
