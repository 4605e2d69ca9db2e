/**
 * Plain-text formatting for the CLI: aligned tables and safe one-line renderings of stored
 * values and lease TTLs. Node built-ins only.
 */

/** Column alignment: numbers read best right-aligned. */
export type Align = 'left' | 'right'

/**
 * An aligned table: a header row, then one line per row, columns separated by two spaces.
 * `align` gives each column's alignment (default left).
 */
export function table(headers: string[], rows: string[][], align: Align[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (align[i] === 'right' ? cell.padStart(widths[i]) : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}

/** `key  value` lines with the keys aligned, for single-object reports. */
export function fields(pairs: [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')
}

/** A stored value as it can go in JSON: text when it is valid UTF-8, else base64. */
export function jsonValue(value: Buffer): { value: string } | { valueBase64: string } {
  const text = value.toString('utf8')
  return Buffer.from(text, 'utf8').equals(value) ? { value: text } : { valueBase64: value.toString('base64') }
}

/**
 * A stored value on one table cell: quoted text (control characters escaped, long values cut
 * to `max` characters), or a byte count for binary data.
 */
export function showValue(value: Buffer, max = 40): string {
  const text = value.toString('utf8')
  if (!Buffer.from(text, 'utf8').equals(value)) return `<${value.length} bytes binary>`
  const quoted = JSON.stringify(text)
  return quoted.length <= max ? quoted : `${quoted.slice(0, max - 4)}..." (${value.length} bytes)`
}

/**
 * A stored value as plain text for a page (not quoted, unlike {@link showValue}): cut to `max`
 * characters with its size said, or a byte count for binary data.
 */
export function shortText(value: Buffer, max = 200): string {
  const text = value.toString('utf8')
  if (!Buffer.from(text, 'utf8').equals(value)) return `<${value.length} bytes binary>`
  return text.length <= max ? text : `${text.slice(0, max)}… (${value.length} bytes)`
}

/** A key on one table cell: control characters escaped, so odd keys cannot break the layout. */
export function showKey(key: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
  return /[\x00-\x1f\x7f]/.test(key) ? JSON.stringify(key) : key
}

/** Remaining/granted lease TTL, e.g. `8/10s`; `expired` once the server no longer knows the lease. */
export function showTtl(ttl: LeaseTtl | undefined): string {
  if (!ttl) return '-'
  if (ttl.remaining < 0) return 'expired'
  return `${ttl.remaining}/${ttl.granted}s`
}

/** A lease's remaining and granted TTL in seconds, as `LeaseTimeToLive` reports them (-1: gone). */
export interface LeaseTtl {
  remaining: number
  granted: number
}
