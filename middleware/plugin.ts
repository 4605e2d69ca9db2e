import type middy from '@middy/core'
import type { Request } from '@middy/core'
import { InvalidArgumentError } from '../lib/errors.js'
import { endInvocation } from './scope.js'

/** Middy's plugin options (the second argument of `middy()`). */
export type PluginObject = middy.PluginObject

/**
 * The Middy plugin that lets every hold go on every path: `middy(handler, etcdPlugin())`.
 *
 * Middy skips every `after` when some middleware's `before` answers early (a cache hit, a
 * validator's 400, a warm-up ping), and stops the `onError` chain when one throws: an etcd
 * hold taken before then would stay until the invocation's deadline plus the lease TTL. Middy
 * awaits a plugin's `requestEnd` in a `finally` on every path (success, early response, error,
 * early timeout), so this releases and ends every scope of the request there. Pass your own
 * plugin options in `options`; your `requestEnd` runs after ours.
 */
export function etcdPlugin(options: PluginObject = {}): PluginObject {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(
      `etcdPlugin: options must be Middy plugin options (an object), got ${options === null ? 'null' : typeof options}`,
    )
  }
  const own = options.requestEnd
  if (own !== undefined && typeof own !== 'function') throw new InvalidArgumentError('etcdPlugin: options.requestEnd must be a function')
  return {
    ...options,
    requestEnd: async (request: Request) => {
      try {
        await endInvocation(request)
      } finally {
        await own?.(request)
      }
    },
  }
}
