// Cold start, the peer: a new Node process imports etcd3, creates a client and does one put.
// Prints the ms from before the import to the put being answered.
const t0 = performance.now()
const { Etcd3 } = await import('etcd3')
const client = new Etcd3({ hosts: process.env.ETCD_ENDPOINTS })
await client.put(`${process.env.BENCH_NAME}/k`).value('v')
const ms = performance.now() - t0
client.close()
console.log(JSON.stringify({ ms }))
process.exit(0)
