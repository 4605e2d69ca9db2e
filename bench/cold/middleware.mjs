// Cold start through the middleware: import Middy + the built middleware, first invocation of
// an etcdLock no-op handler. Prints the ms from before the imports to the handler's answer.
const t0 = performance.now()
const { default: middy } = await import('@middy/core')
const { etcdLock } = await import(process.env.BENCH_MW)
const handler = middy(async () => 'ok').use(etcdLock({ name: process.env.BENCH_NAME }))
const end = Date.now() + 30_000
await handler({}, { functionName: 'cold', awsRequestId: 'r1', getRemainingTimeInMillis: () => end - Date.now() })
const ms = performance.now() - t0
console.log(JSON.stringify({ ms }))
process.exit(0)
