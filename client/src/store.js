// @ts-check
/**
 * Local bookkeeping on the SQLite database: reading the outbox, settling a
 * server response (accepted / rejected / pulled / cursor) in one transaction,
 * and the rejected-changes store the app can inspect, retry or discard.
 *
 * `db` is an `@sqlite.org/sqlite-wasm` oo1 database (`DB`, `OpfsDb`, `OpfsSAHPoolDb`).
 * Everything here is synchronous: no other code can interleave with a
 * transaction on the same connection.
 */

import { NOW_SQL, q } from './ddl.js';
import { decodePulled, EncodeError, errorText } from './transform.js';

/** @typedef {import('./schema.js').Schema} Schema */
/** @typedef {import('./schema.js').Table} Table */
/** @typedef {import('./transform.js').OutboxRow} OutboxRow */

/** @param {any} db @param {string} sql @param {unknown[]} [bind] @returns {any[]} */
const all = (db, sql, bind) => db.selectObjects(sql, bind);
/** @param {any} db @param {string} sql @param {unknown[]} [bind] */
const run = (db, sql, bind) => db.exec({ sql, bind });

/** The cursor (`newServerTimestamp` of the last settled response), or null. */
export function getCursor(db) {
  return db.selectValue('SELECT last_sync_at FROM sync_state WHERE id = 1') ?? null;
}

/** Forget the cursor: the next sync pulls everything again (e.g. after a sign-out). */
export function resetCursor(db) {
  run(db, 'UPDATE sync_state SET last_sync_at = NULL WHERE id = 1');
}

/** Number of changes waiting in the outbox. */
export function pendingCount(db) {
  return Number(db.selectValue('SELECT count(*) FROM sync_outbox'));
}

/** Highest outbox id, 0 when empty. */
export function maxOutboxId(db) {
  return Number(db.selectValue('SELECT coalesce(max(id), 0) FROM sync_outbox'));
}

/**
 * Outbox rows with `afterId < id <= upToId`, oldest first.
 * @returns {OutboxRow[]}
 */
export function readOutbox(db, { afterId = 0, upToId = Number.MAX_SAFE_INTEGER, limit = 500 } = {}) {
  return all(
    db,
    'SELECT id, tbl, op, row_key, row, changed_at FROM sync_outbox WHERE id > ? AND id <= ? ORDER BY id LIMIT ?',
    [afterId, upToId, limit],
  );
}

const MOVE_ASIDE = `INSERT INTO sync_rejected
  (direction, outbox_id, tbl, op, row_key, row, changed_at, code, message, rejected_at)
  SELECT 'push', id, tbl, op, row_key, row, changed_at, ?, ?, ${NOW_SQL} FROM sync_outbox WHERE id = ?`;

/**
 * Move outbox rows to `sync_rejected` without asking the server (values the
 * client cannot encode, a single change too large to send).
 * @param {any} db @param {{id: number, code: string, message: string}[]} items
 */
export function rejectLocally(db, items) {
  if (items.length === 0) return;
  db.savepoint((/** @type {any} */ tx) => {
    for (const it of items) {
      run(tx, MOVE_ASIDE, [it.code, it.message, it.id]);
      run(tx, 'DELETE FROM sync_outbox WHERE id = ?', [it.id]);
    }
  });
}

/**
 * @typedef {object} Settled
 * @property {number} accepted   outbox rows deleted
 * @property {{id: number, table: string, op: string, code: string, message: string}[]} rejected  rows moved aside
 * @property {number} applied    pulled changes written locally
 * @property {number} skipped    pulled changes kept back: a newer local change waits in the outbox
 * @property {number} ignored    pulled changes for tables this client does not sync
 * @property {number} failed     pulled changes that could not be applied (kept in sync_rejected)
 */

/**
 * Settle one `200` response in a single local transaction: delete exactly the
 * accepted ids, move the rejected ones to `sync_rejected`, apply the pulled
 * changes with the outbox triggers silenced, store the new cursor. If any step
 * throws, nothing of it is kept (the outbox and the cursor stay as they were).
 * @param {any} db
 * @param {Schema} schema
 * @param {{sentIds: number[], acceptedIds: unknown[], rejected: any[], pulledChanges: any[], cursor: string}} r
 * @returns {Settled}
 */
export function settleResponse(db, schema, { sentIds, acceptedIds, rejected, pulledChanges, cursor }) {
  const sent = new Map(sentIds.map((id) => [String(id), id]));
  /** @type {Settled} */
  const out = { accepted: 0, rejected: [], applied: 0, skipped: 0, ignored: 0, failed: 0 };
  db.transaction('IMMEDIATE', (/** @type {any} */ tx) => {
    for (const a of acceptedIds) {
      const id = sent.get(String(a));
      if (id === undefined) continue; // not ours to delete
      sent.delete(String(a));
      run(tx, 'DELETE FROM sync_outbox WHERE id = ?', [id]);
      out.accepted += tx.changes();
    }
    for (const r of rejected) {
      const id = sent.get(String(r?.id));
      if (id === undefined) continue;
      sent.delete(String(r.id));
      const code = typeof r.code === 'string' ? r.code : 'rejected';
      const message = typeof r.message === 'string' ? r.message : '';
      const [row] = all(tx, 'SELECT tbl, op FROM sync_outbox WHERE id = ?', [id]);
      if (!row) continue;
      run(tx, MOVE_ASIDE, [code, message, id]);
      run(tx, 'DELETE FROM sync_outbox WHERE id = ?', [id]);
      out.rejected.push({ id, table: row.tbl, op: row.op, code, message });
    }
    run(tx, 'UPDATE sync_state SET applying = 1 WHERE id = 1');
    for (const change of pulledChanges) applyPulled(tx, schema, change, out);
    run(tx, 'UPDATE sync_state SET applying = 0, last_sync_at = ? WHERE id = 1', [cursor]);
  });
  return out;
}

/** @param {any} db @param {Schema} schema @param {any} change @param {Settled} out */
function applyPulled(db, schema, change, out) {
  let local;
  try {
    local = decodePulled(schema, change);
  } catch (e) {
    keepPulled(db, change, e instanceof EncodeError ? e.code : 'invalid_value', errorText(e));
    out.failed++;
    return;
  }
  if (local === null) {
    out.ignored++;
    return;
  }
  const t = local.table;
  const keyBind = t.primaryKey.map((k) => local.values[k]);
  if (hasPending(db, t, keyBind)) {
    out.skipped++;
    return;
  }
  run(db, 'SAVEPOINT sync_apply');
  try {
    if (local.op === 'delete') {
      run(db, `DELETE FROM ${q(t.name)} WHERE ${t.primaryKey.map((k) => `${q(k)} = ?`).join(' AND ')}`, keyBind);
    } else {
      const cols = Object.keys(local.values);
      const rest = cols.filter((c) => !t.primaryKey.includes(c));
      const onConflict = rest.length
        ? `DO UPDATE SET ${rest.map((c) => `${q(c)} = excluded.${q(c)}`).join(', ')}`
        : 'DO NOTHING';
      run(
        db,
        `INSERT INTO ${q(t.name)} (${cols.map(q).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})
         ON CONFLICT (${t.primaryKey.map(q).join(', ')}) ${onConflict}`,
        cols.map((c) => /** @type {any} */ (local.values[c])),
      );
    }
    run(db, 'RELEASE sync_apply');
    out.applied++;
  } catch (e) {
    run(db, 'ROLLBACK TO sync_apply');
    run(db, 'RELEASE sync_apply');
    keepPulled(db, change, 'apply_failed', errorText(e));
    out.failed++;
  }
}

/** Is a local change for this row still waiting in the outbox? */
function hasPending(db, t, keyBind) {
  const key = `json_array(${t.primaryKey.map((k) => (t.byName.get(k).type === 'uuid' ? 'lower(?)' : '?')).join(', ')})`;
  return (
    db.selectValue(`SELECT 1 FROM sync_outbox WHERE tbl = ? AND row_key = ${key} LIMIT 1`, [t.name, ...keyBind]) !==
    undefined
  );
}

function keepPulled(db, change, code, message) {
  let row;
  try {
    row = JSON.stringify(change?.row ?? null);
  } catch {
    row = 'null';
  }
  run(
    db,
    `INSERT INTO sync_rejected (direction, tbl, op, row, code, message, rejected_at)
     VALUES ('pull', ?, ?, ?, ?, ?, ${NOW_SQL})`,
    [String(change?.table ?? ''), String(change?.op ?? ''), row, code, message],
  );
}

// ------------------------------------------------------ rejected changes

/**
 * @typedef {object} RejectedChange
 * @property {number} id           id in sync_rejected
 * @property {'push'|'pull'} direction  `push`: a local change the server (or client) refused;
 *                                 `pull`: a pulled row that could not be applied locally
 * @property {number|null} outboxId
 * @property {string} table        client table name (server name for `pull`)
 * @property {string} op
 * @property {Record<string, unknown>|null} row  the row as it was recorded
 * @property {string|null} changedAt
 * @property {string} code         e.g. `forbidden`, `constraint_violation`, `invalid_value`
 * @property {string} message
 * @property {string} rejectedAt
 */

/** All kept rejected changes, oldest first. @returns {RejectedChange[]} */
export function listRejected(db) {
  return all(db, 'SELECT * FROM sync_rejected ORDER BY id').map((r) => ({
    id: r.id,
    direction: r.direction,
    outboxId: r.outbox_id,
    table: r.tbl,
    op: r.op,
    row: safeParse(r.row),
    changedAt: r.changed_at,
    code: r.code,
    message: r.message ?? '',
    rejectedAt: r.rejected_at,
  }));
}

const safeParse = (s) => {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
};

/** Delete kept rejected changes for good (the app has shown them / given up). */
export function discardRejected(db, ids) {
  db.savepoint((/** @type {any} */ tx) => {
    for (const id of ids) run(tx, 'DELETE FROM sync_rejected WHERE id = ?', [id]);
  });
}

/**
 * Try a rejected local change again: write it (or `row`, an edited version of
 * it) back into its table as a normal local write, so the triggers queue it
 * with a fresh write time; then drop it from `sync_rejected`.
 * @param {any} db @param {Schema} schema @param {number} id
 * @param {{ row?: Record<string, unknown> }} [options]
 */
export function retryRejected(db, schema, id, { row } = {}) {
  db.savepoint((/** @type {any} */ tx) => {
    const [r] = all(tx, "SELECT * FROM sync_rejected WHERE id = ? AND direction = 'push'", [id]);
    if (!r) throw new Error(`no rejected local change with id ${id}`);
    const t = schema.byName.get(r.tbl);
    if (!t) throw new Error(`table ${r.tbl} is not in the schema`);
    const values = row ?? JSON.parse(r.row);
    const where = t.primaryKey.map((k) => `${q(k)} = ?`).join(' AND ');
    const key = t.primaryKey.map((k) => values[k]);
    if (r.op === 'delete') {
      run(tx, `DELETE FROM ${q(t.name)} WHERE ${where}`, key);
      if (tx.changes() === 0) {
        // The row is gone locally already: queue the delete by hand.
        run(
          tx,
          `INSERT INTO sync_outbox (tbl, op, row_key, row, changed_at)
           VALUES (?, 'delete', ?, json_set(?, ?, ${NOW_SQL}), ${NOW_SQL})`,
          [t.name, r.row_key, JSON.stringify(values), `$.${t.updatedAt}`],
        );
      }
    } else {
      const cols = t.columns.map((c) => c.name).filter((c) => c !== t.updatedAt && c in values);
      const rest = cols.filter((c) => !t.primaryKey.includes(c));
      run(
        tx,
        `INSERT INTO ${q(t.name)} (${cols.map(q).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})
         ON CONFLICT (${t.primaryKey.map(q).join(', ')}) DO UPDATE SET ${[...rest.map((c) => `${q(c)} = excluded.${q(c)}`), `${q(t.updatedAt)} = ${NOW_SQL}`].join(', ')}`,
        cols.map((c) => /** @type {any} */ (values[c] ?? null)),
      );
    }
    run(tx, 'DELETE FROM sync_rejected WHERE id = ?', [id]);
  });
}
