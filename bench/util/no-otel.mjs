// Preloaded by the telemetry bench (`node --import tsx --import ./bench/util/no-otel.mjs …`): makes
// `@opentelemetry/api` unresolvable, as in a service that never installed the optional peer, so
// the same code runs with the library's telemetry door shut.
import { register } from 'node:module'

register(
  `data:text/javascript,${encodeURIComponent(`
    export async function resolve(specifier, context, next) {
      if (specifier === '@opentelemetry/api') {
        const err = new Error("Cannot find package '@opentelemetry/api' (hidden by bench/util/no-otel.mjs)")
        err.code = 'ERR_MODULE_NOT_FOUND'
        throw err
      }
      return next(specifier, context)
    }`)}`,
)
