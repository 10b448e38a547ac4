import assert from 'node:assert/strict';
import { test } from 'node:test';
import { installSync } from '../src/ddl.js';
import { exampleSchema } from '../src/schema.js';
import { openDb, outbox, rows, uuid, USER } from './helpers.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

test('insert, update and delete each record the full row in the outbox', async () => {
  const db = await openDb();
  db.exec({
    sql: `INSERT INTO todos (id, userId, title, done, tags, position, updatedAt) VALUES (?, ?, 'milk', 0, '["a"]', 1.5, ?)`,
    bind: [uuid(1), USER, '2026-01-01T00:00:00.000Z'],
  });
  db.exec({ sql: `UPDATE todos SET done = 1, updatedAt = '2026-01-01T00:00:01.000Z' WHERE id = ?`, bind: [uuid(1)] });
  db.exec({ sql: 'DELETE FROM todos WHERE id = ?', bind: [uuid(1)] });
  const ob = outbox(db);
  assert.deepEqual(ob.map((r) => [r.tbl, r.op, r.row_key]), [
    ['todos', 'insert', `["${uuid(1)}"]`],
    ['todos', 'update', `["${uuid(1)}"]`],
    ['todos', 'delete', `["${uuid(1)}"]`],
  ]);
  assert.deepEqual(ob[0].row, {
    id: uuid(1), userId: USER, projectId: null, title: 'milk', done: 0, dueAt: null, position: 1.5, tags: '["a"]',
    updatedAt: '2026-01-01T00:00:00.000Z',
  });
  assert.equal(ob[1].row.done, 1);
  assert.equal(ob[1].row.updatedAt, '2026-01-01T00:00:01.000Z', 'the app-set write time is kept');
  assert.equal(ob[2].row.title, 'milk', 'a delete keeps the old row');
  for (const r of ob) assert.match(r.changed_at, ISO);
  assert.ok(ob[0].id < ob[1].id && ob[1].id < ob[2].id);
});

test('updatedAt is filled and moved forward when the app does not set it', async () => {
  const db = await openDb();
  db.exec({ sql: `INSERT INTO projects (id, name) VALUES (?, 'home')`, bind: [uuid(1)] });
  const stamp0 = db.selectValue('SELECT updatedAt FROM projects');
  assert.match(stamp0, ISO, 'the DDL default stamps inserts');
  // a version "from the future" (another device's fast clock) seen locally:
  db.exec("UPDATE sync_state SET applying = 1");
  db.exec({ sql: `UPDATE projects SET updatedAt = '2099-01-01T00:00:00.000Z' WHERE id = ?`, bind: [uuid(1)] });
  db.exec("UPDATE sync_state SET applying = 0");
  db.exec({ sql: `UPDATE projects SET name = 'house' WHERE id = ?`, bind: [uuid(1)] });
  assert.equal(db.selectValue('SELECT updatedAt FROM projects'), '2099-01-01T00:00:00.001Z',
    'a change after seeing a version is stamped later than it');
  db.exec({ sql: 'DELETE FROM projects WHERE id = ?', bind: [uuid(1)] });
  const ob = outbox(db);
  assert.deepEqual(ob.map((r) => r.op), ['insert', 'update', 'delete'], 'the touch of updatedAt is not recorded twice');
  assert.equal(ob[1].row.name, 'house');
  assert.equal(ob[1].row.updatedAt, '2099-01-01T00:00:00.001Z');
  assert.equal(ob[2].row.updatedAt, '2099-01-01T00:00:00.002Z', 'the delete is stamped after the last version');
  // with a normal clock the stamp is "now"
  db.exec({ sql: `INSERT INTO projects (id, name, updatedAt) VALUES (?, 'x', '2020-01-01T00:00:00.000Z')`, bind: [uuid(2)] });
  const before = new Date().toISOString();
  db.exec({ sql: `UPDATE projects SET name = 'y' WHERE id = ?`, bind: [uuid(2)] });
  const after = db.selectValue('SELECT updatedAt FROM projects WHERE id = ?', [uuid(2)]);
  assert.ok(after >= before.slice(0, 19), `${after} is about now`);
});

test('nothing is recorded while pulled rows are applied (applying flag)', async () => {
  const db = await openDb();
  db.exec("UPDATE sync_state SET applying = 1");
  db.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 'from server')`, bind: [uuid(1)] });
  db.exec({ sql: `UPDATE todos SET title = 'x' WHERE id = ?`, bind: [uuid(1)] });
  db.exec({ sql: `DELETE FROM todos`});
  db.exec("UPDATE sync_state SET applying = 0");
  assert.equal(outbox(db).length, 0);
  db.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 'local')`, bind: [uuid(2)] });
  assert.equal(outbox(db).length, 1);
});

test('changing a primary key is recorded as delete of the old key and insert of the new', async () => {
  const db = await openDb();
  db.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 't')`, bind: [uuid(1)] });
  db.exec({ sql: `UPDATE todos SET id = ? WHERE id = ?`, bind: [uuid(2), uuid(1)] });
  const ob = outbox(db);
  assert.deepEqual(ob.map((r) => [r.op, r.row.id]), [['insert', uuid(1)], ['delete', uuid(1)], ['insert', uuid(2)]]);
});

test('row keys ignore uuid case; userSettings is keyed by userId', async () => {
  const db = await openDb();
  db.exec({ sql: `INSERT INTO userSettings (userId, theme) VALUES (?, 'dark')`, bind: [USER.toUpperCase()] });
  db.exec({ sql: `UPDATE userSettings SET theme = 'light' WHERE userId = ?`, bind: [USER] });
  const ob = outbox(db);
  assert.equal(ob.length, 2, 'the lower-case id finds the upper-case row (COLLATE NOCASE)');
  assert.deepEqual(ob.map((r) => r.row_key), [`["${USER}"]`, `["${USER}"]`]);
});

test('installSync is idempotent and keeps data, outbox and cursor', async () => {
  const db = await openDb();
  db.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 't')`, bind: [uuid(1)] });
  db.exec("UPDATE sync_state SET last_sync_at = 'cursor-1'");
  installSync(db, exampleSchema);
  installSync(db, exampleSchema);
  assert.equal(rows(db, 'SELECT * FROM todos').length, 1);
  assert.equal(outbox(db).length, 1);
  assert.equal(db.selectValue('SELECT last_sync_at FROM sync_state'), 'cursor-1');
  const triggers = db.selectValues("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name");
  assert.equal(triggers.length, 4 * exampleSchema.tables.length); // the app's tables, yours included
  db.exec({ sql: `UPDATE todos SET title = 'u'`});
  assert.equal(outbox(db).length, 2, 'exactly one outbox row per write after re-install');
});

test('the outbox also records writes made inside app transactions, and drops them on rollback', async () => {
  const db = await openDb();
  try {
    db.transaction(() => {
      db.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 't')`, bind: [uuid(1)] });
      throw new Error('app changes its mind');
    });
  } catch {}
  assert.equal(outbox(db).length, 0);
  db.transaction(() => {
    db.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 't')`, bind: [uuid(1)] });
    db.exec({ sql: `INSERT INTO projects (id, name) VALUES (?, 'p')`, bind: [uuid(2)] });
  });
  assert.deepEqual(outbox(db).map((r) => r.tbl), ['todos', 'projects']);
});
