// @ts-check
/**
 * `fetchServerSchema()`: the server's synced tables and schema hash (`GET /api/schema`),
 * for an app that checks its schema at run time instead of (or as well as) at build
 * time — e.g. `fromDrizzle(tables, { server: (await fetchServerSchema(o)).tables })`, or
 * to tell the user "update the app" before a sync is refused with `schema_mismatch`.
 */

/**
 * @param {{url: string, getToken: () => (string|null|undefined|Promise<string|null|undefined>), fetch?: typeof fetch}} o
 *   `url`: the sync endpoint (`…/api/sync`) or the schema endpoint itself
 * @returns {Promise<{schemaHash: string, tables: import('./drizzle.js').ServerTable[]}>}
 * @throws {Error} with `code` and `status` when the server does not answer 200
 */
export async function fetchServerSchema(o) {
  const url = new URL(o.url.replace(/\/api\/sync\/?$/, '/api/schema'), globalThis.location?.href);
  const token = await o.getToken();
  const res = await (o.fetch ?? globalThis.fetch)(url.href, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  let body;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok || typeof body?.schemaHash !== 'string' || !Array.isArray(body?.tables)) {
    const error = /** @type {Error & {code?: string, status?: number}} */ (new Error(body?.error?.message ?? `GET ${url.pathname} answered HTTP ${res.status}`));
    error.code = body?.error?.code ?? `http_${res.status}`;
    error.status = res.status;
    throw error;
  }
  return body;
}
