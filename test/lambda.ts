// The tests' Lambda-like context is the one `middy-etcd/testing` offers users.
export { lambdaContext } from '../testing/index.js'
