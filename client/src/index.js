// @ts-check
/** Public entry point of the sync client. */
export { defineSchema, exampleSchema, snakeCase } from './schema.js';
export { schemaHash, schemaHashInput } from './schema-hash.js';
export { fromDrizzle, DrizzleSchemaError } from './drizzle.js';
export { fetchServerSchema } from './server-schema.js';
export { installSync, appTablesSql, syncTablesSql, triggersSql, NOW_SQL } from './ddl.js';
export { encodeChange, decodePulled, normalizeTimestamp, EncodeError } from './transform.js';
export {
  getCursor,
  resetCursor,
  pendingCount,
  listRejected,
  discardRejected,
  retryRejected,
} from './store.js';
export { syncWithWorker, isSyncing } from './sync.js';
export { backoffDelay } from './http.js';
