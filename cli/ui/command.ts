import { UsageError, intOption, noMoreArgs, type Command, type Report } from '../common.js'
import { startUiServer } from './server.js'

/**
 * `ui`: serves the operations page (cli/ui/server.ts) until interrupted. It prints the page's
 * address on stdout at once (the report printed at exit is only "stopped"), so a script can
 * read the first line.
 */
export const ui: Command = {
  name: 'ui',
  summary: 'serve a live page of what is held, who waits and what is stuck (127.0.0.1 by default)',
  usage: 'ui [--port N] [--host H] [--token T] [--allow-actions]',
  help: `Serves a live operations page: locks, RWMutexes, elections, semaphores, rate limiters,
queues, barriers and idempotency records, updated from one etcd watch (a change shows within
a second), "what is stuck" first: held longest, waiting longest, zombies (holders or waiters
whose lease is gone or under 1 s left), queues by their oldest ready message, dead letters.

  --port N          port to listen on (default 0: any free port; the address is printed)
  --host H          address to bind (default 127.0.0.1). Any other needs a token: --token,
                    or one is generated and printed in the address (?token=...)
  --token T         require T on every request (the page keeps it in a cookie)
  --allow-actions   offer redrive of a dead-letter queue, purge of a queue and revoke of a
                    lease, each after a confirmation. Without it the page is read-only and the
                    server refuses them (403)

Stop it with Ctrl-C.`,
  options: {
    port: { type: 'string' },
    host: { type: 'string' },
    token: { type: 'string' },
    'allow-actions': { type: 'boolean' },
  },
  async run({ args, options, connect }): Promise<Report> {
    noMoreArgs(ui, args, 0)
    const port = intOption(ui, options.port, 'port', 0, 0, 65535)
    const host = options.host as string | undefined
    if (host === '') throw new UsageError('ui: --host must name an address, e.g. 127.0.0.1 or 0.0.0.0', ui)
    const token = options.token as string | undefined
    if (token !== undefined && token.length < 8) throw new UsageError('ui: --token must be at least 8 characters', ui)
    const server = await startUiServer({ client: connect(), host, port, token, allowActions: options['allow-actions'] === true })
    process.stdout.write(
      `middy-etcd ui: ${server.url}${server.token && token === undefined ? ' (token generated: keep the address private)' : ''}\n`,
    )
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
    })
    await server.close()
    return { json: { stopped: true, url: server.url }, text: 'middy-etcd ui: stopped' }
  },
}
