// One refresh of a rate-limited upstream at a time, across every instance of every function:
// the callers that arrive while it runs share its answer (and keep it for 60 s).
import { sharedClient, singleFlight, type EtcdClient } from '../lib/index.js'

/** The exchange rates at `ratesUrl`, fetched once for all concurrent callers. */
export function exchangeRates(ratesUrl: string, client: EtcdClient = sharedClient()): Promise<Record<string, number>> {
  return singleFlight(
    client,
    'rates/EUR',
    async (signal) => {
      const res = await fetch(ratesUrl, { signal })
      if (!res.ok) throw new Error(`rates: HTTP ${res.status}`)
      return (await res.json()) as Record<string, number>
    },
    { ttl: 60 },
  )
}
