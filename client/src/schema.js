// @ts-check
/**
 * The schema description ("meta"): one entry per synced table, shared by the
 * DDL/trigger generator (ddl.js) and the payload transformation (transform.js).
 *
 * Client names are camelCase (what the app's SQLite tables use), server names
 * are snake_case (what Postgres and the wire protocol use).
 */

/**
 * Column value types. They decide how a value is encoded for the wire and
 * decoded from a pulled row:
 * - `text`      string as is
 * - `uuid`      string; lower-cased when pulled
 * - `integer`   number (INTEGER locally)
 * - `real`      number (REAL locally)
 * - `boolean`   0/1 locally, JSON true/false on the wire
 * - `json`      JSON text locally, a JSON value on the wire
 * - `timestamp` ISO-8601 text with zone locally (`new Date().toISOString()`)
 * @typedef {'text'|'uuid'|'integer'|'real'|'boolean'|'json'|'timestamp'} ColumnType
 */

/**
 * @typedef {object} ColumnInput
 * @property {ColumnType} type
 * @property {string} [server]   server (snake_case) name; defaults to snakeCase(client name)
 * @property {boolean} [notNull] NOT NULL in the local DDL
 * @property {string|number} [default] SQL default expression for the local DDL
 */

/**
 * @typedef {object} TableInput
 * @property {string} name                client table name (camelCase)
 * @property {string} [server]            server table name; defaults to snakeCase(name)
 * @property {Record<string, ColumnInput|ColumnType>} columns keyed by client column name
 * @property {string[]|string} primaryKey client column name(s)
 * @property {string} [owner]             client column holding the owner's user id
 * @property {string} [updatedAt]         client column holding the write time (default `updatedAt`)
 */

/**
 * @typedef {object} Column
 * @property {string} name     client name
 * @property {string} server   server name
 * @property {ColumnType} type
 * @property {boolean} notNull
 * @property {string|number|undefined} default
 */

/**
 * @typedef {object} Table
 * @property {string} name
 * @property {string} server
 * @property {Column[]} columns
 * @property {string[]} primaryKey
 * @property {string|null} owner
 * @property {string} updatedAt
 * @property {Map<string, Column>} byName    client column name -> column
 * @property {Map<string, Column>} byServer  server column name -> column
 */

/**
 * @typedef {object} Schema
 * @property {Table[]} tables
 * @property {Map<string, Table>} byName     client table name -> table
 * @property {Map<string, Table>} byServer   server table name -> table
 */

import { tables as generatedTables } from './schema.generated.js';

const TYPES = new Set(['text', 'uuid', 'integer', 'real', 'boolean', 'json', 'timestamp']);
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `userSettings` -> `user_settings`, `dueAt` -> `due_at`. */
export function snakeCase(name) {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase();
}

/**
 * Validate and index a schema description.
 * @param {TableInput[]} tables
 * @returns {Schema}
 */
export function defineSchema(tables) {
  if (!Array.isArray(tables) || tables.length === 0) {
    throw new TypeError('defineSchema: expected a non-empty array of tables');
  }
  const byName = new Map();
  const byServer = new Map();
  const out = tables.map((input) => {
    const t = normalizeTable(input);
    if (byName.has(t.name)) throw new TypeError(`defineSchema: table ${t.name} listed twice`);
    if (byServer.has(t.server)) {
      throw new TypeError(`defineSchema: server table ${t.server} listed twice`);
    }
    byName.set(t.name, t);
    byServer.set(t.server, t);
    return t;
  });
  for (const reserved of ['sync_outbox', 'sync_state', 'sync_rejected']) {
    if (byName.has(reserved)) throw new TypeError(`defineSchema: ${reserved} is reserved`);
  }
  return Object.freeze({ tables: out, byName, byServer });
}

/** @param {TableInput} input @returns {Table} */
function normalizeTable(input) {
  const name = input?.name;
  if (typeof name !== 'string' || !IDENT.test(name)) {
    throw new TypeError(`defineSchema: bad table name ${JSON.stringify(name)}`);
  }
  const server = input.server ?? snakeCase(name);
  if (!IDENT.test(server)) throw new TypeError(`defineSchema: bad server name for ${name}`);
  const columns = [];
  const byName = new Map();
  const byServer = new Map();
  for (const [colName, spec] of Object.entries(input.columns ?? {})) {
    const c = typeof spec === 'string' ? { type: spec } : spec;
    if (!IDENT.test(colName)) throw new TypeError(`defineSchema: bad column ${name}.${colName}`);
    if (!TYPES.has(c.type)) {
      throw new TypeError(`defineSchema: ${name}.${colName} has unknown type ${c.type}`);
    }
    const col = Object.freeze({
      name: colName,
      server: c.server ?? snakeCase(colName),
      type: c.type,
      notNull: Boolean(c.notNull),
      default: c.default,
    });
    if (!IDENT.test(col.server)) throw new TypeError(`defineSchema: bad server name ${col.server}`);
    if (byServer.has(col.server)) {
      throw new TypeError(`defineSchema: ${name} maps two columns to ${col.server}`);
    }
    columns.push(col);
    byName.set(colName, col);
    byServer.set(col.server, col);
  }
  if (columns.length === 0) throw new TypeError(`defineSchema: ${name} has no columns`);
  const primaryKey = [input.primaryKey].flat().filter((k) => k != null);
  if (primaryKey.length === 0) throw new TypeError(`defineSchema: ${name} has no primary key`);
  for (const k of primaryKey) {
    if (!byName.has(k)) throw new TypeError(`defineSchema: ${name} primary key ${k} is no column`);
  }
  const owner = input.owner ?? null;
  if (owner !== null && !byName.has(owner)) {
    throw new TypeError(`defineSchema: ${name} owner ${owner} is no column`);
  }
  const updatedAt = input.updatedAt ?? 'updatedAt';
  if (byName.get(updatedAt)?.type !== 'timestamp') {
    throw new TypeError(`defineSchema: ${name} needs a timestamp column ${updatedAt}`);
  }
  if (primaryKey.includes(updatedAt)) {
    throw new TypeError(`defineSchema: ${name}: ${updatedAt} cannot be part of the primary key`);
  }
  return Object.freeze({ name, server, columns, primaryKey, owner, updatedAt, byName, byServer });
}

/**
 * The app's schema, generated from the migrations by `make client-schema`
 * (client/src/schema.generated.js): the tables are declared once, in SQL, and this is
 * built from what the server itself reads. For the example app, those of
 * `migrations/0002_example_app.sql`.
 */
export const exampleSchema = defineSchema(generatedTables);
