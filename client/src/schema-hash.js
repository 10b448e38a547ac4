// @ts-check
/**
 * The schema hash: what the server compares (`schemaHash` in each sync request, `409
 * schema_mismatch` when it differs, nothing applied). It covers what decides whether
 * changes apply and pulls read right: server table names, key, owner, server column
 * names and their wire types. NOT NULL and defaults are left out (the owner column may
 * stay nullable locally; the server fills it). Computed the same way as the server's
 * `sync.catalog.schema_hash`: SHA-256 of a canonical JSON text, first 16 hex digits.
 */

/** @typedef {import('./schema.js').Schema} Schema */

/** The canonical text the hash is taken of (exported for tests and debugging). */
export function schemaHashInput(/** @type {Schema} */ schema) {
  const tables = schema.tables
    .map((t) => {
      const server = (/** @type {string|null} */ name) => (name === null ? null : t.byName.get(name)?.server ?? name);
      const columns = t.columns.map((c) => [c.server, c.type]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      return [t.server, t.primaryKey.map(server).join(','), server(t.owner), columns];
    })
    .sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : String(a[0]) > String(b[0]) ? 1 : 0));
  return JSON.stringify(tables);
}

/** @type {WeakMap<object, Promise<string>>} */
const cache = new WeakMap();

/**
 * The schema's hash (16 hex digits). Uses WebCrypto (browsers in a secure context,
 * Node 20+); computed once per schema object.
 * @param {Schema} schema @returns {Promise<string>}
 */
export function schemaHash(schema) {
  let hash = cache.get(schema);
  if (!hash) {
    hash = (async () => {
      const bytes = new TextEncoder().encode(schemaHashInput(schema));
      const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
      return Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, '0')).join('');
    })();
    cache.set(schema, hash);
  }
  return hash;
}
