import type { KeyValue, Keyspace, RangeResult } from '../core/kv.js'

/**
 * Bounded reads of a prefix in key order. etcd counts every key of a Range's interval for the
 * answer's `count`, whatever its limit (3.5+: `treeIndex.Range` walks the whole interval), so
 * even "the first 16 keys under <prefix>" costs the server as much as the prefix is long: ~8 ms
 * per 100,000 keys. Reads here are windows `[start, end)` whose end is computed from the start,
 * so that each holds about as many keys as it is meant to return.
 *
 * The arithmetic works on the decimal digits of a key's suffix (every queue key of ours and Go's
 * is fixed-width decimal: `<unixNano>`, `<%05d>/<%016d>`, due times), other characters kept in
 * place: `advance("00003/0000000000000009", 2n)` is `"00003/0000000000000011"`. Windows are only
 * ever laid end to end, so a key whose suffix has another shape is still read once, in its
 * place; only the size of the windows around it is off.
 */

/** The digits of a suffix, in order, as a number, and how many there are. */
function digitsOf(suffix: string): { n: bigint; count: number } {
  const digits = suffix.replace(/[^0-9]/g, '')
  return { n: digits === '' ? 0n : BigInt(digits), count: digits.length }
}

/** `template` with its digits replaced by those of `n` (zero-padded); undefined when `n` needs more digits than it has. */
function withDigits(template: string, n: bigint): string | undefined {
  const { count } = digitsOf(template)
  if (count === 0 || n < 0n) return undefined
  const digits = n.toString().padStart(count, '0')
  if (digits.length > count) return undefined
  let i = 0
  return template.replace(/[0-9]/g, () => digits[i++])
}

/** `suffix` moved on by `span` units of its digits; undefined past the last suffix of its shape (or for one without digits). */
export function advance(suffix: string, span: bigint): string | undefined {
  return withDigits(suffix, digitsOf(suffix).n + span)
}

/** How far `to` lies beyond `from` in units of their digits, when both have the same digit count. */
export function distance(from: string, to: string): bigint | undefined {
  const [a, b] = [digitsOf(from), digitsOf(to)]
  return a.count > 0 && a.count === b.count && b.n > a.n ? b.n - a.n : undefined
}

/** The key just after `key`: the start of a window that leaves `key` out. */
export function after(key: string): string {
  return `${key}\u0000`
}

/**
 * Splits `[from, to)` into at most `parts` windows of equal digit width, laid end to end. `from`
 * may be shorter than `to` in digits (e.g. the start of the prefix, ""): it then counts as 0 in
 * `to`'s shape, after `lowest` (a suffix known to exist, when given) is tried as the first cut.
 */
export function split(from: string, to: string, parts: number, lowest?: string): [string, string][] {
  const cuts: string[] = []
  let start = from
  if (
    lowest !== undefined &&
    lowest > from &&
    lowest < to &&
    digitsOf(lowest).count === digitsOf(to).count &&
    digitsOf(from).count !== digitsOf(to).count
  ) {
    cuts.push(lowest)
    start = lowest
  }
  const a = digitsOf(start)
  const b = digitsOf(to)
  if (b.count > 0 && (a.count === b.count || start === '')) {
    for (let i = 1; i < parts; i++) {
      const cut = withDigits(to, a.n + ((b.n - a.n) * BigInt(i)) / BigInt(parts))
      if (cut !== undefined && cut > (cuts.at(-1) ?? from) && cut < to) cuts.push(cut)
    }
  }
  const bounds = [from, ...cuts, to]
  return bounds.slice(0, -1).map((s, i) => [s, bounds[i + 1]])
}

/**
 * Windows from `from` growing fourfold from `span` (`parts` of them, the last one open: to the
 * end of the prefix). One window, open, when `from` has no digits to count with.
 */
export function widening(from: string, span: bigint, parts: number): [string, string | undefined][] {
  const ends: string[] = []
  for (let i = 0, width = span; i < parts - 1; i++, width *= 4n) {
    const end = advance(from, width)
    if (end === undefined) break
    ends.push(end)
  }
  const bounds: (string | undefined)[] = [from, ...ends, undefined]
  return bounds.slice(0, -1).map((s, i) => [s as string, bounds[i + 1]])
}

/**
 * The span that makes a window hold about `target` keys, from one that held `count` over
 * `width`: scaled by target/count, at most 16 times either way, at least 1.
 */
export function resized(width: bigint, count: number, target: number): bigint {
  const scaled = (width * BigInt(target)) / BigInt(Math.max(1, count))
  const [low, high] = [width / 16n, width * 16n]
  const span = scaled < low ? low : scaled > high ? high : scaled
  return span < 1n ? 1n : span
}

/**
 * The span of `target` keys, from a read that started at `from` and returned `kvs` (the first of
 * a longer run when it was cut): the digit distance they covered, per key, times `target`.
 * Undefined when they are too few, or of another shape, to say.
 */
export function spanFromRead(prefix: string, from: string, kvs: KeyValue[], target: number): bigint | undefined {
  if (kvs.length < 2) return undefined
  const first = kvs[0].key.slice(prefix.length)
  const last = kvs[kvs.length - 1].key.slice(prefix.length)
  const covered = distance(digitsOf(from).count === digitsOf(last).count ? from : first, last)
  if (covered === undefined) return undefined
  const span = (covered * BigInt(target)) / BigInt(kvs.length)
  return span < 1n ? 1n : span
}

/**
 * Pages through the keys of a prefix in key order (keys only, `limit` at a time), each read a
 * window sized from the ones before, so a page costs the server what it returns, not what the
 * prefix holds. A prefix that stays small is read open-ended (one read to its end).
 */
export class KeyPager {
  /** The suffix the next page starts at (inclusive). */
  private position = ''
  private span: bigint | undefined
  /** The last page reached the end of the prefix. */
  done = false

  constructor(
    private readonly ks: Keyspace,
    private readonly prefix: string,
    private readonly limit: number,
  ) {}

  /** Starts again from the first key. */
  rewind(): void {
    this.position = ''
    this.done = false
  }

  /** The next page (at most `limit` keys, possibly none before the end: then `done`). */
  async next(options: { revision?: bigint } = {}): Promise<{ kvs: KeyValue[]; revision: bigint }> {
    for (let reads = 0; ; reads++) {
      const from = this.position
      const end = this.span === undefined ? undefined : advance(from, this.span)
      const page = await this.ks.range(`${this.prefix}${from}`, {
        ...windowEnd(this.prefix, end),
        keysOnly: true,
        limit: this.limit,
        ...(options.revision === undefined ? {} : { revision: options.revision }),
      })
      this.learn(from, end, page)
      if (page.kvs.length > 0 || this.done || reads >= 8) return { kvs: page.kvs, revision: page.revision }
    }
  }

  /** Moves on past a page and resizes the windows from what it held. */
  private learn(from: string, end: string | undefined, page: RangeResult): void {
    const count = Number(page.count)
    const cut = count > page.kvs.length
    if (cut) this.position = after(page.kvs[page.kvs.length - 1].key.slice(this.prefix.length))
    else if (end === undefined) this.done = true
    else this.position = end
    const width = end === undefined ? undefined : distance(from, end)
    if (width !== undefined) this.span = count === 0 ? undefined : resized(width, count, this.limit)
    else if (cut) this.span = spanFromRead(this.prefix, from, page.kvs, this.limit)
    // An empty window: the next read is open-ended, to find where the keys go on.
  }
}

/** The range options that end a read of `prefix` at `end` (a suffix), or at the prefix's end when there is none. */
export function windowEnd(prefix: string, end: string | undefined): { end: string } | { endOfPrefix: string } {
  return end === undefined ? { endOfPrefix: prefix } : { end: `${prefix}${end}` }
}
