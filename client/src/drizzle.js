// @ts-check
/**
 * Drizzle as schema input: `fromDrizzle(tables, { server })` turns `drizzle-orm/sqlite-core`
 * table objects (`sqliteTable(...)`) into the kit's schema, checked against the server's
 * description of its synced tables (`serverTables` from the generated
 * `schema.generated.js`, or the `tables` of `GET /api/schema`).
 *
 * An app that keeps its local tables in Drizzle writes no second description: names come
 * from Drizzle (its SQL names are the local column names; the server name is their
 * snake_case), the wire types come from the server, and every disagreement — a table or
 * column one side lacks, a storage class that cannot hold the server's type, NOT NULL on
 * one side only, another key — is reported at once, all of them, before any data moves.
 *
 * It reads Drizzle's tables through the symbols Drizzle registers globally
 * (`Symbol.for('drizzle:…')`), so the kit needs no dependency on drizzle-orm.
 */

import { defineSchema, snakeCase } from './schema.js';

/** @typedef {import('./schema.js').Schema} Schema */
/** @typedef {import('./schema.js').TableInput} TableInput */

/**
 * @typedef {object} ServerColumn
 * @property {string} name
 * @property {string} wire     the kit's type: text, uuid, integer, real, boolean, json, timestamp
 * @property {boolean} notNull
 * @property {unknown} [default]
 */
/**
 * @typedef {object} ServerTable
 * @property {string} name
 * @property {string} primaryKey
 * @property {string} owner
 * @property {ServerColumn[]} columns
 */

const NAME = Symbol.for('drizzle:Name');
const COLUMNS = Symbol.for('drizzle:Columns');
const IS_TABLE = Symbol.for('drizzle:IsDrizzleTable');
const EXTRA = Symbol.for('drizzle:ExtraConfigBuilder');
const ENTITY_KIND = Symbol.for('drizzle:entityKind');

/** Drizzle's SQLite column classes -> the server wire types each can hold locally. */
const HOLDS = {
  SQLiteText: ['text', 'uuid', 'timestamp', 'json'],
  SQLiteTextJson: ['json'],
  SQLiteInteger: ['integer'],
  SQLiteBoolean: ['boolean'],
  SQLiteReal: ['real'],
  SQLiteNumeric: ['real', 'integer'],
};
const HINTS = {
  SQLiteTimestamp: 'the kit keeps timestamps as ISO-8601 text: declare it text(...)',
  SQLiteBigInt: 'declare it integer(...) (a number) instead of a bigint blob',
  SQLiteBlobJson: "declare it text(..., { mode: 'json' }) instead of a blob",
};

export class DrizzleSchemaError extends TypeError {
  /** @param {string[]} problems */
  constructor(problems) {
    super(`the Drizzle schema does not match the server's:\n- ${problems.join('\n- ')}`);
    this.name = 'DrizzleSchemaError';
    this.problems = problems;
  }
}

/**
 * @param {Record<string, any>|any[]} drizzleTables  Drizzle tables, as an array or as a
 *   module namespace (`import * as tables from './db/schema.js'`; non-tables are skipped)
 * @param {{server: ServerTable[], partial?: boolean}} options  `server`: the server's tables;
 *   `partial: true` allows syncing only some of them (then send no schema hash:
 *   `syncWithWorker({ sendSchemaHash: false })`, since the hash covers every table)
 * @returns {Schema}
 * @throws {DrizzleSchemaError} listing every disagreement
 */
export function fromDrizzle(drizzleTables, options) {
  const server = options?.server;
  if (!Array.isArray(server)) throw new TypeError('fromDrizzle: options.server must be the server tables (serverTables or GET /api/schema)');
  const list = (Array.isArray(drizzleTables) ? drizzleTables : Object.values(drizzleTables ?? {})).filter(
    (t) => t && typeof t === 'object' && t[IS_TABLE],
  );
  if (list.length === 0) throw new TypeError('fromDrizzle: no Drizzle tables given');
  const byServer = new Map(server.map((t) => [t.name, t]));
  /** @type {string[]} */
  const problems = [];
  /** @type {TableInput[]} */
  const inputs = [];
  const seen = new Set();
  for (const table of list) {
    const local = String(table[NAME]);
    const serverName = snakeCase(local);
    const remote = byServer.get(serverName);
    if (!remote) {
      problems.push(`table ${local}: the server syncs no table ${serverName}`);
      continue;
    }
    seen.add(serverName);
    const input = convertTable(table, local, remote, problems);
    if (input) inputs.push(input);
  }
  if (!options.partial) {
    for (const t of server) if (!seen.has(t.name)) problems.push(`the server syncs ${t.name}, which has no Drizzle table (or pass partial: true)`);
  }
  if (problems.length) throw new DrizzleSchemaError(problems);
  return defineSchema(inputs);
}

/**
 * @param {any} table @param {string} local @param {ServerTable} remote @param {string[]} problems
 * @returns {TableInput|null}
 */
function convertTable(table, local, remote, problems) {
  const before = problems.length;
  /** @type {Record<string, any>} */
  const columns = table[COLUMNS] ?? {};
  const remoteColumns = new Map(remote.columns.map((c) => [c.name, c]));
  /** @type {TableInput['columns']} */
  const out = {};
  /** @type {Record<string, string>} server name -> local name */
  const localOf = {};
  const primary = [];
  for (const column of Object.values(columns)) {
    const name = String(column.name);
    const serverName = snakeCase(name);
    const where = `${local}.${name}`;
    const theirs = remoteColumns.get(serverName);
    if (!theirs) {
      problems.push(`${where}: the server's ${remote.name} has no column ${serverName}`);
      continue;
    }
    localOf[serverName] = name;
    if (column.primary) primary.push(serverName);
    const kind = String(column.columnType);
    const holds = HOLDS[kind];
    if (!holds) {
      problems.push(`${where} is a Drizzle ${kind}: ${HINTS[kind] ?? 'a column class the kit does not sync'}`);
      continue;
    }
    if (!holds.includes(theirs.wire)) {
      problems.push(`${where} is a Drizzle ${kind}, which cannot hold the server's ${theirs.wire}`);
      continue;
    }
    const ownerOnly = serverName === remote.owner && serverName !== remote.primaryKey;
    if (!ownerOnly && Boolean(column.notNull) !== theirs.notNull) {
      problems.push(`${where}: ${theirs.notNull ? 'NOT NULL on the server, nullable in Drizzle' : 'NOT NULL in Drizzle, nullable on the server'}`);
    }
    /** @type {any} */
    const spec = { type: theirs.wire, server: serverName, notNull: Boolean(column.notNull) };
    const def = localDefault(column);
    if (def !== undefined) spec.default = def;
    out[name] = spec;
  }
  for (const c of remote.columns) {
    if (!(c.name in localOf)) problems.push(`${local}: no column for the server's ${remote.name}.${c.name}`);
  }
  if (typeof table[EXTRA] === 'function') {
    // Table-level config (indexes, composite keys), built as Drizzle's getTableConfig does.
    const extra = table[EXTRA](columns);
    const entries = Array.isArray(extra) ? extra.flat(1) : Object.values(extra ?? {});
    for (const e of entries) if (e?.constructor?.[ENTITY_KIND] === 'SQLitePrimaryKeyBuilder') primary.push('(composite key)');
  }
  if (primary.length !== 1 || primary[0] !== remote.primaryKey) {
    problems.push(`${local}: the primary key must be the single column ${remote.primaryKey}, as on the server`);
  }
  if (problems.length > before) return null;
  return {
    name: local,
    server: remote.name,
    primaryKey: localOf[remote.primaryKey],
    owner: localOf[remote.owner],
    updatedAt: localOf.updated_at,
    columns: out,
  };
}

/** A constant Drizzle default as the local DDL's default expression, else undefined. */
function localDefault(column) {
  if (!column.hasDefault) return undefined;
  const v = column.default;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string') return `'${v.replaceAll("'", "''")}'`;
  return undefined; // SQL expressions and functions ($defaultFn) stay Drizzle's business
}
