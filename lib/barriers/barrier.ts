import type { Namespace } from 'etcd3'
import { checkClient, checkOptions } from '../core/check.js'
import { KeyExistsError } from '../errors.js'
import { checkName, keyspace, type Keyspace } from '../core/kv.js'
import { waitDelete, type WaitOptions } from '../wait/wait.js'
import { startWait } from '../telemetry/coordination.js'

/**
 * A barrier that blocks waiters until it is released, key-compatible with Go's
 * `recipe.Barrier`: the barrier is up while the single key `<name>` exists (empty value, no
 * lease, so it outlives whoever put it up). Anyone may release it.
 *
 * `wait()` follows Go 3.6+ rather than 3.4: it reads the exact key (3.4 matched it as a prefix,
 * so `a` blocked on `a0`) and then watches for its DELETE only, from the revision after that read
 * (3.4 waited for a PUT then a DELETE, so writes elsewhere after `hold()` made it hang).
 */
export class Barrier {
  private readonly ks: Keyspace

  constructor(
    /** An etcd client (`createClient()`) or a namespace of one. */
    readonly client: Namespace,
    /** The barrier key. */
    readonly name: string,
  ) {
    checkClient(client, 'Barrier')
    checkName(name, 'Barrier name')
    this.ks = keyspace(client)
  }

  /**
   * Puts the barrier up: creates the key if absent (one Txn). Throws {@link KeyExistsError} if it
   * is already up. Returns the key's create revision.
   */
  async hold(): Promise<bigint> {
    const res = await this.ks.txn([this.ks.compare(this.name, 'Version', '==', 0)], [this.ks.put(this.name, '')])
    if (!res.succeeded) {
      throw new KeyExistsError(`Barrier ${JSON.stringify(this.name)} is already held; release() it first, or wait() for it`)
    }
    return res.revision
  }

  /** Takes the barrier down (one Delete), waking every waiter. Returns false if it was not up. */
  async release(): Promise<boolean> {
    return (await this.ks.del(this.name)) > 0n
  }

  /** Whether the barrier is up right now (one count-only Range). */
  async isHeld(): Promise<boolean> {
    return (await this.ks.range(this.name, { countOnly: true })).count > 0n
  }

  /**
   * Resolves once the barrier is down: at once if the key is absent, else on its deletion.
   * Rejects with the signal's reason on abort, or `WatchLostError` if the watch ends early
   * (never a false success).
   */
  async wait(options?: WaitOptions): Promise<void> {
    const { signal } = checkOptions(options, 'Barrier.wait')
    signal?.throwIfAborted()
    const probe = startWait('barrier', this.name)
    try {
      await this.waitDown(signal)
    } catch (err) {
      probe?.fail(err)
      throw err
    }
    probe?.end('acquired')
  }

  private async waitDown(signal: AbortSignal | undefined): Promise<void> {
    // Exact key, not a prefix: `<name>-0` must not hold up waiters of `<name>`.
    const now = await this.ks.range(this.name, { countOnly: true })
    if (now.count === 0n) return
    // The key exists at `now.revision`, so its deletion comes later: watch from the next
    // revision and for DELETE only, whatever else is written meanwhile.
    await waitDelete(this.client, this.name, now.revision + 1n, signal)
  }
}
