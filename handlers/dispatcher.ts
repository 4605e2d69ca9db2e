// The queue dispatcher as a deployable function, exactly as a user's service ships it: on a
// schedule, the elected invocation claims messages from every `etcdQueue` subscription
// (ETCD_QUEUE_SUBSCRIPTIONS, filled in by the middy-etcd plugin) and invokes the subscribed
// functions until shortly before its timeout; overlapping runs return `{ leader: false }`.
export { handler } from '../dispatch/index.js'
