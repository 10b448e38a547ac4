// @ts-check
/**
 * Local DDL: the app tables, the sync bookkeeping tables and the outbox
 * triggers, all generated from the schema description.
 *
 * - `sync_outbox`   one row per local write (table, op, full row as JSON, write time)
 * - `sync_state`    the cursor (`last_sync_at`) and the `applying` flag that
 *                   silences the triggers while pulled rows are applied
 * - `sync_rejected` changes the server refused (and pulled rows that could not
 *                   be applied): kept until the app retries or discards them
 */

/** @typedef {import('./schema.js').Schema} Schema */
/** @typedef {import('./schema.js').Table} Table */
/** @typedef {import('./schema.js').Column} Column */

/** SQLite's "now" in the same shape as `new Date().toISOString()`. */
export const NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/** Double-quote an identifier. */
export const q = (name) => `"${String(name).replace(/"/g, '""')}"`;
/** Single-quote a string literal. */
const lit = (s) => `'${String(s).replace(/'/g, "''")}'`;

const LOCAL_TYPE = {
  text: 'TEXT',
  uuid: 'TEXT COLLATE NOCASE',
  integer: 'INTEGER',
  real: 'REAL',
  boolean: 'INTEGER',
  json: 'TEXT',
  timestamp: 'TEXT',
};

/** The sync bookkeeping tables (idempotent). */
export function syncTablesSql() {
  return `
CREATE TABLE IF NOT EXISTS sync_outbox (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  tbl        TEXT NOT NULL,
  op         TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  row_key    TEXT NOT NULL,
  row        TEXT NOT NULL,
  changed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_outbox_row ON sync_outbox (tbl, row_key);
CREATE TABLE IF NOT EXISTS sync_state (
  id           INTEGER PRIMARY KEY CHECK (id = 1),
  last_sync_at TEXT,
  applying     INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO sync_state (id, last_sync_at, applying) VALUES (1, NULL, 0);
CREATE TABLE IF NOT EXISTS sync_rejected (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  direction   TEXT NOT NULL CHECK (direction IN ('push', 'pull')),
  outbox_id   INTEGER,
  tbl         TEXT NOT NULL,
  op          TEXT NOT NULL,
  row_key     TEXT,
  row         TEXT NOT NULL,
  changed_at  TEXT,
  code        TEXT NOT NULL,
  message     TEXT,
  rejected_at TEXT NOT NULL
);
`;
}

/** CREATE TABLE IF NOT EXISTS for every synced table of the schema. */
export function appTablesSql(schema) {
  return schema.tables.map(tableSql).join('\n');
}

/** @param {Table} t */
function tableSql(t) {
  const cols = t.columns.map((c) => {
    let def = `  ${q(c.name)} ${LOCAL_TYPE[c.type]}`;
    if (c.notNull) def += ' NOT NULL';
    if (c.default !== undefined) def += ` DEFAULT ${sqlDefault(c.default)}`;
    else if (c.name === t.updatedAt) def += ` DEFAULT (${NOW_SQL})`;
    return def;
  });
  cols.push(`  PRIMARY KEY (${t.primaryKey.map(q).join(', ')})`);
  return `CREATE TABLE IF NOT EXISTS ${q(t.name)} (\n${cols.join(',\n')}\n);`;
}

function sqlDefault(v) {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? '1' : '0';
  return `(${v})`;
}

// ---------------------------------------------------------------- triggers

/** Names of the triggers a table gets. */
export function triggerNames(t) {
  return ['insert', 'update', 'rekey', 'delete'].map((k) => `sync_${t.name}_${k}`);
}

/** Trigger guard: silent while `sync_state.applying` is set (pulled rows being applied). */
const GUARD = 'coalesce((SELECT applying FROM sync_state WHERE id = 1), 0) = 0';

/** `json_array(...)` of the primary key, the outbox's row identity (uuids lower-cased). */
export function rowKeySql(t, alias) {
  const parts = t.primaryKey.map((k) => {
    const ref = `${alias}.${q(k)}`;
    return t.byName.get(k)?.type === 'uuid' ? `lower(${ref})` : ref;
  });
  return `json_array(${parts.join(', ')})`;
}

/** `json_object(...)` of the whole row, with `updatedAt` replaced by `stamp` if given. */
function rowJsonSql(t, alias, stamp) {
  const parts = t.columns.map((c) => {
    const v = c.name === t.updatedAt && stamp ? stamp : `${alias}.${q(c.name)}`;
    return `${lit(c.name)}, ${v}`;
  });
  return `json_object(${parts.join(', ')})`;
}

const pkEqual = (t, a, b) => t.primaryKey.map((k) => `${a}.${q(k)} = ${b}.${q(k)}`).join(' AND ');
const pkSame = (t) => t.primaryKey.map((k) => `NEW.${q(k)} IS OLD.${q(k)}`).join(' AND ');

/**
 * The last-write-wins clock for a change that follows the version OLD: the
 * app's own `updatedAt` if it moved forward, otherwise "now" but never earlier
 * than 1 ms after OLD's (so a change made after seeing a version always wins
 * over that version, whatever this device's clock says).
 */
function nextStamp(t, withNew) {
  const u = q(t.updatedAt);
  const after = `max(${NOW_SQL}, coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', OLD.${u}, '+0.001 seconds'), ''))`;
  return withNew ? `CASE WHEN NEW.${u} > OLD.${u} THEN NEW.${u} ELSE ${after} END` : after;
}

function outboxInsert(t, op, alias, stamp) {
  return `INSERT INTO sync_outbox (tbl, op, row_key, row, changed_at) VALUES (${lit(t.name)}, '${op}', ${rowKeySql(t, alias)}, ${rowJsonSql(t, alias, stamp)}, ${NOW_SQL});`;
}

/** @param {Table} t */
function tableTriggersSql(t) {
  const [ins, upd, rekey, del] = triggerNames(t).map(q);
  const T = q(t.name);
  const u = q(t.updatedAt);
  return `
CREATE TRIGGER ${ins} AFTER INSERT ON ${T} WHEN ${GUARD}
BEGIN
  ${outboxInsert(t, 'insert', 'NEW', `coalesce(NEW.${u}, ${NOW_SQL})`)}
END;
CREATE TRIGGER ${upd} AFTER UPDATE ON ${T} WHEN ${GUARD} AND ${pkSame(t)}
BEGIN
  UPDATE ${T} SET ${u} = ${nextStamp(t, false)}
    WHERE ${pkEqual(t, T, 'NEW')} AND NOT coalesce(NEW.${u} > OLD.${u}, 0);
  INSERT INTO sync_outbox (tbl, op, row_key, row, changed_at)
    SELECT ${lit(t.name)}, 'update', ${rowKeySql(t, 'r')}, ${rowJsonSql(t, 'r', null)}, ${NOW_SQL}
    FROM ${T} AS r WHERE ${pkEqual(t, 'r', 'NEW')};
END;
CREATE TRIGGER ${rekey} AFTER UPDATE ON ${T} WHEN ${GUARD} AND NOT (${pkSame(t)})
BEGIN
  ${outboxInsert(t, 'delete', 'OLD', nextStamp(t, false))}
  ${outboxInsert(t, 'insert', 'NEW', nextStamp(t, true))}
END;
CREATE TRIGGER ${del} AFTER DELETE ON ${T} WHEN ${GUARD}
BEGIN
  ${outboxInsert(t, 'delete', 'OLD', nextStamp(t, false))}
END;
`;
}

/** DROP + CREATE of every outbox trigger (so they always match the current schema). */
export function triggersSql(schema) {
  return schema.tables
    .map((t) => triggerNames(t).map((n) => `DROP TRIGGER IF EXISTS ${q(n)};`).join('\n') + tableTriggersSql(t))
    .join('\n');
}

/**
 * Create everything on an open `@sqlite.org/sqlite-wasm` oo1 database, in one
 * transaction. Safe to run at every start-up.
 * @param {any} db an oo1 `DB` (or `OpfsDb`, `OpfsSAHPoolDb`)
 * @param {Schema} schema
 * @param {{ appTables?: boolean }} [options] `appTables: false` if the app creates its own tables
 */
export function installSync(db, schema, { appTables = true } = {}) {
  const sql = [syncTablesSql(), appTables ? appTablesSql(schema) : '', triggersSql(schema)].join('\n');
  db.savepoint((/** @type {any} */ tx) => tx.exec(sql));
}
