// @ts-check
/**
 * Payload transformation between the local SQLite shape (camelCase names,
 * booleans as 0/1, JSON as text) and the wire shape of PROTOCOL.md (snake_case
 * names, JSON true/false, JSON values). Pure functions, no database access.
 */

/** @typedef {import('./schema.js').Schema} Schema */
/** @typedef {import('./schema.js').Table} Table */
/** @typedef {import('./schema.js').Column} Column */

/** A value the client cannot put on the wire (the change is moved aside, not sent). */
export class EncodeError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'EncodeError';
    this.code = code;
  }
}

/** The message of a thrown value, for results and the rejected store. @param {unknown} e */
export const errorText = (e) => String(e instanceof Error ? e.message : e);

/**
 * @typedef {object} OutboxRow
 * @property {number} id
 * @property {string} tbl        client table name
 * @property {'insert'|'update'|'delete'} op
 * @property {string} row_key
 * @property {string} row        full row as JSON (client column names)
 * @property {string} changed_at
 */

/**
 * @typedef {object} WireChange
 * @property {number} id
 * @property {string} table
 * @property {'insert'|'update'|'delete'} op
 * @property {Record<string, unknown>} row
 */

/**
 * One outbox row -> one `changes[]` entry of the request.
 * @param {Schema} schema
 * @param {OutboxRow} entry
 * @returns {WireChange}
 * @throws {EncodeError}
 */
export function encodeChange(schema, entry) {
  const t = schema.byName.get(entry.tbl);
  if (!t) throw new EncodeError('unknown_table', `table ${entry.tbl} is not in the schema`);
  if (!['insert', 'update', 'delete'].includes(entry.op)) {
    throw new EncodeError('invalid_value', `unknown op ${entry.op}`);
  }
  let local;
  try {
    local = JSON.parse(entry.row);
  } catch {
    throw new EncodeError('invalid_value', 'outbox row is not valid JSON');
  }
  /** @type {Record<string, unknown>} */
  const row = {};
  const cols = entry.op === 'delete' ? t.primaryKey.map((k) => /** @type {Column} */ (t.byName.get(k))) : t.columns;
  for (const c of cols) {
    const v = local[c.name];
    if (c.name === t.owner && v == null) continue; // the server fills the owner from the token
    if (c.name === t.updatedAt) continue;
    row[c.server] = encodeValue(t, c, v);
  }
  for (const k of t.primaryKey) {
    if (row[/** @type {Column} */ (t.byName.get(k)).server] == null) {
      throw new EncodeError('missing_primary_key', `${t.name}.${k} is empty`);
    }
  }
  const u = /** @type {Column} */ (t.byName.get(t.updatedAt));
  row[u.server] = encodeValue(t, u, local[t.updatedAt] ?? entry.changed_at);
  return { id: entry.id, table: t.server, op: entry.op, row };
}

/**
 * A local value -> its wire value.
 * @param {Table} t @param {Column} c @param {unknown} v
 */
export function encodeValue(t, c, v) {
  if (v === null || v === undefined) return null;
  const bad = (why) => new EncodeError('invalid_value', `${t.name}.${c.name}: ${why}`);
  switch (c.type) {
    case 'boolean':
      if (v === 1 || v === true || v === '1' || v === 'true') return true;
      if (v === 0 || v === false || v === '0' || v === 'false') return false;
      throw bad(`${JSON.stringify(v)} is not a boolean`);
    case 'json':
      if (typeof v !== 'string') return v;
      try {
        return JSON.parse(v);
      } catch {
        throw bad('not valid JSON text');
      }
    case 'integer':
    case 'real': {
      const n = typeof v === 'bigint' ? Number(v) : typeof v === 'string' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isFinite(n)) throw bad(`${String(v)} is not a number`);
      return n;
    }
    case 'timestamp':
      if (typeof v === 'number') return new Date(v).toISOString();
      if (typeof v === 'string') return v;
      throw bad('not a timestamp');
    default: // text, uuid
      return typeof v === 'string' ? v : String(v);
  }
}

/**
 * @typedef {object} LocalChange
 * @property {Table} table
 * @property {'upsert'|'delete'} op
 * @property {Record<string, unknown>} values  client column name -> local value (known columns only)
 */

/**
 * One `pulledChanges[]` entry -> the local write it stands for, or `null` for a
 * table this client does not sync (reported by the caller, not applied).
 * @param {Schema} schema
 * @param {{table: string, op: string, row: Record<string, unknown>}} change
 * @returns {LocalChange|null}
 * @throws {EncodeError} for a malformed entry
 */
export function decodePulled(schema, change) {
  if (!change || typeof change !== 'object' || typeof change.table !== 'string') {
    throw new EncodeError('invalid_value', 'pulled change without a table');
  }
  const t = schema.byServer.get(change.table);
  if (!t) return null;
  const op = change.op === 'delete' ? 'delete' : ['upsert', 'insert', 'update'].includes(change.op) ? 'upsert' : null;
  if (!op) throw new EncodeError('invalid_value', `pulled change with op ${change.op}`);
  const row = change.row;
  if (!row || typeof row !== 'object') throw new EncodeError('invalid_value', 'pulled change without a row');
  /** @type {Record<string, unknown>} */
  const values = {};
  for (const [key, v] of Object.entries(row)) {
    const c = t.byServer.get(key);
    if (c) values[c.name] = decodeValue(c, v);
  }
  for (const k of t.primaryKey) {
    if (values[k] == null) throw new EncodeError('missing_primary_key', `pulled ${t.server} row without ${k}`);
  }
  return { table: t, op, values };
}

/**
 * A wire value -> its local (SQLite-bindable) value.
 * @param {Column} c @param {unknown} v
 */
export function decodeValue(c, v) {
  if (v === null || v === undefined) return null;
  switch (c.type) {
    case 'boolean':
      if (typeof v === 'string') return ['t', 'true', '1'].includes(v.toLowerCase()) ? 1 : 0;
      return v ? 1 : 0;
    case 'json':
      return JSON.stringify(v);
    case 'integer':
    case 'real':
      return typeof v === 'number' ? v : Number(v);
    case 'timestamp':
      return normalizeTimestamp(v);
    case 'uuid':
      return String(v).toLowerCase();
    default:
      return typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  }
}

const TS = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?\s*(Z|[+-]\d\d(?::?\d\d)?)?$/i;

/**
 * Any ISO-8601 timestamp (any zone, any fraction) -> the `toISOString()` shape
 * (UTC, milliseconds, `Z`), truncating sub-millisecond digits, so local values
 * compare correctly as text. Unparseable input is returned unchanged.
 * @param {unknown} v
 */
export function normalizeTimestamp(v) {
  if (typeof v === 'number') return Number.isFinite(v) ? new Date(v).toISOString() : v;
  if (typeof v !== 'string') return v;
  const m = TS.exec(v.trim());
  if (!m) return v;
  const [, y, mo, d, h, mi, s = '0', frac = '', zone = 'Z'] = m;
  let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s, Number(frac.slice(0, 3).padEnd(3, '0')));
  if (zone.toUpperCase() !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    ms -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || 0)) * 60000;
  }
  const out = new Date(ms);
  return Number.isNaN(out.getTime()) ? v : out.toISOString();
}
