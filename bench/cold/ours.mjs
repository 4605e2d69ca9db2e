// Cold start, ours: a new Node process imports the built toolkit, creates a client and a
// session, and takes a lock. Prints the ms from before the import to the lock being held.
const t0 = performance.now()
const { createClient, Session, Mutex } = await import(process.env.BENCH_LIB)
const client = createClient({ endpoints: process.env.ETCD_ENDPOINTS })
const session = await Session.create(client, { ttl: 10 })
const m = new Mutex(session, process.env.BENCH_NAME)
await m.lock()
const ms = performance.now() - t0
await m.unlock()
await session.close()
client.close()
console.log(JSON.stringify({ ms }))
process.exit(0)
