import type { Namespace } from 'etcd3'

/**
 * State kept per client object (a keyspace, its keepalive stream, the delete feeds of its
 * prefixes, ...): made by `create` on first use, held weakly, so a closed client that nobody
 * references takes its state with it. Every per-client registry of lib/ is one of these.
 */
export function perClient<T>(create: (client: Namespace) => T): (client: Namespace) => T {
  const state = new WeakMap<Namespace, T>()
  return (client) => {
    let value = state.get(client)
    if (value === undefined) {
      value = create(client)
      state.set(client, value)
    }
    return value
  }
}
