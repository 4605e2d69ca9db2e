/**
 * Per-request state of our middlewares, kept on Middy's `request.internal` (as Powertools keeps
 * its idempotency handler there) behind one get/set pair: never in a middleware's closure,
 * which concurrent invocations share, and never in a module-level map keyed by the request.
 *
 * Each slot is a key of its own, a fresh Symbol: no other middleware's key (theirs are strings,
 * e.g. the names @middy/ssm stores parameters under), nor another copy of this library, can be
 * the same key, and `getInternal(true, request)` from @middy/util, which reads the string keys,
 * does not see ours.
 *
 * Middy gives each request a fresh `internal` object, except when the plugin option `internal`
 * is set: Middy then gives every request that same object (`internal: plugin.internal ?? {}`).
 * So an entry names its request, and a slot keeps one entry per live request: a request reads
 * back only its own state, also when concurrent requests share one `internal`. Setting a slot
 * to `undefined` removes the request's entry, so nothing outlives the request's state.
 */

/** What a slot needs of a Middy request. */
export interface RequestLike {
  internal?: object
}

/** One piece of per-request state, e.g. the invocation's scopes, or one middleware instance's uses of them. */
export interface RequestSlot<T> {
  /** This request's value, if it has one. */
  get(request: RequestLike): T | undefined
  /** Sets this request's value; `undefined` removes it. */
  set(request: RequestLike, value: T | undefined): void
}

interface Entry<T> {
  request: RequestLike
  value: T
}

/** A slot of per-request state named `name` (the name only shows in a debugger). */
export function requestSlot<T>(name: string): RequestSlot<T> {
  const key = Symbol(`middy-etcd: ${name}`)
  const entries = (request: RequestLike): Entry<T>[] | undefined =>
    (request.internal as Record<symbol, Entry<T>[] | undefined> | undefined)?.[key]
  return {
    get(request) {
      return entries(request)?.find((e) => e.request === request)?.value
    },
    set(request, value) {
      const list = entries(request)
      const i = list ? list.findIndex((e) => e.request === request) : -1
      if (value === undefined) {
        if (list && i >= 0) list.splice(i, 1)
        if (list?.length === 0) delete (request.internal as Record<symbol, unknown>)[key]
        return
      }
      if (list && i >= 0) list[i].value = value
      else if (list) list.push({ request, value })
      else {
        // A request made by hand (not by Middy) may have no `internal` yet.
        if (typeof request.internal !== 'object' || request.internal === null) request.internal = {}
        ;(request.internal as Record<symbol, Entry<T>[]>)[key] = [{ request, value }]
      }
    },
  }
}
