/**
 * A client that measures etcd's answers: each unary answer is serialized again with etcd3's own
 * protobuf definitions (loaded as etcd3 loads them), which gives the bytes that crossed gRPC,
 * and recorded — so a test can say how large the largest answer was, and how many requests and
 * bytes a piece of work took.
 */
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { InterceptingCall, type Interceptor } from '@grpc/grpc-js'
import { loadSync, type MethodDefinition } from '@grpc/proto-loader'
import { Etcd3, type Namespace } from 'etcd3'
import { resolveClientOptions, type ClientOptions, type EtcdClient } from '../../lib/core/client.js'

/** etcd3's service methods by path, with the serializers of their answers. */
const methods = (() => {
  const proto = join(dirname(createRequire(import.meta.url).resolve('etcd3/package.json')), 'proto', 'rpc.proto')
  const definition = loadSync(proto, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true })
  const byPath = new Map<string, MethodDefinition<object, object>>()
  for (const service of Object.values(definition)) {
    if (typeof service !== 'object' || service === null || 'format' in service) continue
    for (const method of Object.values(service as Record<string, MethodDefinition<object, object>>)) byPath.set(method.path, method)
  }
  return byPath
})()

/** What a measured client sent and received (unary calls only) since the last {@link AnswerSizes.reset}. */
export interface Measured {
  /** Unary requests sent. */
  requests: number
  /** Answers received, and their bytes summed. */
  answers: number
  bytes: number
  /** The largest answer, and the method that got it. */
  largest: number
  largestMethod: string
}

export interface AnswerSizes extends Measured {
  reset(): void
  snapshot(): Measured
}

/** A client of `endpoints` whose unary requests and answers are measured (close it with `client.close()`). */
export function measuredClient(
  endpoints: string[],
  options: Omit<ClientOptions, 'endpoints'> = {},
): { client: EtcdClient; sizes: AnswerSizes } {
  const zero = (): Measured => ({ requests: 0, answers: 0, bytes: 0, largest: 0, largestMethod: '' })
  const sizes: AnswerSizes = {
    ...zero(),
    reset: () => void Object.assign(sizes, zero()),
    snapshot: () => ({
      requests: sizes.requests,
      answers: sizes.answers,
      bytes: sizes.bytes,
      largest: sizes.largest,
      largestMethod: sizes.largestMethod,
    }),
  }
  const measure: Interceptor = (callOptions, nextCall) => {
    const method = methods.get(callOptions.method_definition.path)
    const unary = method !== undefined && !method.requestStream && !method.responseStream
    return new InterceptingCall(nextCall(callOptions), {
      start(metadata, _listener, next) {
        next(metadata, {
          onReceiveMessage(message, nextMessage) {
            // No message when it could not be read (e.g. over the receive limit): nothing crossed.
            if (unary && message !== null && message !== undefined) {
              const bytes = method.responseSerialize(message).length
              sizes.answers++
              sizes.bytes += bytes
              if (bytes > sizes.largest) [sizes.largest, sizes.largestMethod] = [bytes, method.path]
            }
            nextMessage(message)
          },
        })
      },
      sendMessage(message, next) {
        if (unary) sizes.requests++
        next(message)
      },
    })
  }
  const { etcd } = resolveClientOptions({ endpoints, env: {}, ...options })
  const base = etcd.defaultCallOptions as (ctx: { isStream: boolean }) => object
  const client = new Etcd3({ ...etcd, defaultCallOptions: (ctx) => ({ ...base(ctx), interceptors: [measure] }) }) as Namespace as EtcdClient
  return { client, sizes }
}
