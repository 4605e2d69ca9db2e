export * from './etcd.js'
export { lambdaContext } from './lambda.js'
