// Loads the plugin from its TypeScript source, for this repository's own serverless.yml
// (`plugins: [serverless-offline, ./offline/local.cjs]`): osls loads only JavaScript plugins.
// An installed package uses `middy-etcd/offline`, the compiled plugin in dist/, instead.
// CommonJS on purpose: osls require()s plugins first, and that works on every Node version.
'use strict'
const { require: tsRequire } = require('tsx/cjs/api')

module.exports = tsRequire('./index.ts', __filename).default
