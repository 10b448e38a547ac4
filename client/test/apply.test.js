import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exampleSchema as schema } from '../src/schema.js';
import { discardRejected, getCursor, listRejected, retryRejected, settleResponse } from '../src/store.js';
import { openDb, outbox, rows, uuid, USER } from './helpers.js';

const addTodo = (db, n, title = `t${n}`) =>
  db.exec({ sql: 'INSERT INTO todos (id, userId, title) VALUES (?, ?, ?)', bind: [uuid(n), USER, title] });
const upsert = (id, title, extra = {}) => ({
  table: 'todos', op: 'upsert',
  row: { id, user_id: USER, project_id: null, title, done: false, due_at: null, position: null, tags: null, updated_at: '2026-11-24T10:00:00.123456Z', ...extra },
});

test('accepted ids are deleted exactly, rejected ones moved aside with their code, cursor stored', async () => {
  const db = await openDb();
  for (const n of [1, 2, 3, 4]) addTodo(db, n);
  const s = settleResponse(db, schema, {
    sentIds: [1, 2, 3],
    acceptedIds: ['1', 3, 4, 99], // ids compare as strings; 4 was not sent, 99 is unknown
    rejected: [{ id: 2, code: 'forbidden', message: 'row belongs to another user' }],
    pulledChanges: [],
    cursor: 'opaque-1',
  });
  assert.equal(s.accepted, 2);
  assert.deepEqual(s.rejected, [{ id: 2, table: 'todos', op: 'insert', code: 'forbidden', message: 'row belongs to another user' }]);
  assert.deepEqual(outbox(db).map((r) => r.id), [4], 'unsent and unaccepted changes stay');
  const kept = listRejected(db);
  assert.equal(kept.length, 1);
  assert.equal(kept[0].direction, 'push');
  assert.equal(kept[0].outboxId, 2);
  assert.equal(kept[0].code, 'forbidden');
  assert.equal(kept[0].row.title, 't2');
  assert.equal(getCursor(db), 'opaque-1');
});

test('pulled changes are applied without re-entering the outbox', async () => {
  const db = await openDb();
  addTodo(db, 3, 'local, to be deleted by the server');
  settleResponse(db, schema, { sentIds: [1], acceptedIds: [1], rejected: [], pulledChanges: [], cursor: 'c0' });
  const s = settleResponse(db, schema, {
    sentIds: [],
    acceptedIds: [],
    rejected: [],
    pulledChanges: [
      upsert(uuid(1), 'from server', { done: true, tags: ['x'] }),
      { table: 'projects', op: 'upsert', row: { id: uuid(2), user_id: USER, name: 'p', color: null, updated_at: '2026-11-24T10:00:00Z' } },
      { table: 'todos', op: 'delete', row: { id: uuid(3), updated_at: '2026-11-24T10:00:01Z' } },
      { table: 'user_settings', op: 'upsert', row: { user_id: USER, theme: 'dark', updated_at: '2026-11-24T10:00:00Z' } },
      { table: 'not_synced_here', op: 'upsert', row: { id: 1 } },
    ],
    cursor: 'c1',
  });
  assert.deepEqual({ ...s, rejected: undefined }, { accepted: 0, rejected: undefined, applied: 4, skipped: 0, ignored: 1, failed: 0 });
  assert.deepEqual(rows(db, 'SELECT id, title, done, tags, updatedAt FROM todos'), [
    { id: uuid(1), title: 'from server', done: 1, tags: '["x"]', updatedAt: '2026-11-24T10:00:00.123Z' },
  ]);
  assert.equal(rows(db, 'SELECT * FROM projects').length, 1);
  assert.equal(db.selectValue('SELECT theme FROM userSettings'), 'dark');
  assert.equal(outbox(db).length, 0);
  assert.equal(db.selectValue('SELECT applying FROM sync_state'), 0);
  // a later pulled version of the same row updates it in place, partial rows keep other columns
  settleResponse(db, schema, {
    sentIds: [], acceptedIds: [], rejected: [], cursor: 'c2',
    pulledChanges: [{ table: 'todos', op: 'upsert', row: { id: uuid(1), title: 'renamed', updated_at: '2026-11-24T10:00:05Z' } }],
  });
  assert.deepEqual(rows(db, 'SELECT title, done, tags FROM todos'), [{ title: 'renamed', done: 1, tags: '["x"]' }]);
  assert.equal(outbox(db).length, 0);
});

test('a pulled row never overwrites a local row whose newer change waits in the outbox', async () => {
  const db = await openDb();
  addTodo(db, 1, 'sent');
  addTodo(db, 2, 'untouched');
  // while the request is in flight the user edits row 1 again (outbox id 3)
  db.exec({ sql: `UPDATE todos SET title = 'edited during sync' WHERE id = ?`, bind: [uuid(1)] });
  const s = settleResponse(db, schema, {
    sentIds: [1, 2],
    acceptedIds: [1, 2],
    rejected: [],
    pulledChanges: [upsert(uuid(1), 'older server copy'), { table: 'todos', op: 'delete', row: { id: uuid(1).toUpperCase(), updated_at: '2026-01-01T00:00:00Z' } }, upsert(uuid(2), 'server copy')],
    cursor: 'c1',
  });
  assert.equal(s.skipped, 2);
  assert.equal(s.applied, 1);
  assert.equal(db.selectValue('SELECT title FROM todos WHERE id = ?', [uuid(1)]), 'edited during sync');
  assert.equal(db.selectValue('SELECT title FROM todos WHERE id = ?', [uuid(2)]), 'server copy');
  assert.deepEqual(outbox(db).map((r) => [r.id, r.row.title]), [[3, 'edited during sync']]);
});

test('a rejected change is moved aside first, so the server copy that comes with it is applied', async () => {
  const db = await openDb();
  addTodo(db, 1, 'mine');
  const s = settleResponse(db, schema, {
    sentIds: [1], acceptedIds: [], cursor: 'c1',
    rejected: [{ id: 1, code: 'constraint_violation', message: 'project does not exist' }],
    pulledChanges: [{ table: 'todos', op: 'delete', row: { id: uuid(1), updated_at: '2026-11-24T10:00:00Z' } }],
  });
  assert.equal(s.applied, 1);
  assert.equal(rows(db, 'SELECT * FROM todos').length, 0, 'local data converges to the server');
  assert.equal(listRejected(db)[0].row.title, 'mine', 'the refused change is kept');
});

test('a pulled row that cannot be applied is kept, the rest of the response still lands', async () => {
  const db = await openDb();
  const s = settleResponse(db, schema, {
    sentIds: [], acceptedIds: [], rejected: [], cursor: 'c9',
    pulledChanges: [
      { table: 'todos', op: 'upsert', row: { id: uuid(1), updated_at: '2026-11-24T10:00:00Z' } }, // no title: NOT NULL fails
      { table: 'todos', op: 'upsert', row: { title: 'no key' } },
      upsert(uuid(2), 'fine'),
    ],
  });
  assert.equal(s.applied, 1);
  assert.equal(s.failed, 2);
  const kept = listRejected(db);
  assert.deepEqual(kept.map((k) => [k.direction, k.table, k.code]), [['pull', 'todos', 'apply_failed'], ['pull', 'todos', 'missing_primary_key']]);
  assert.equal(getCursor(db), 'c9');
  assert.equal(outbox(db).length, 0);
});

test('settling is all or nothing: a local failure keeps outbox, cursor and data as they were', async () => {
  const db = await openDb();
  addTodo(db, 1);
  db.exec("UPDATE sync_state SET last_sync_at = 'c0'");
  db.exec('CREATE TRIGGER boom BEFORE UPDATE OF last_sync_at ON sync_state BEGIN SELECT RAISE(ABORT, \'disk full\'); END');
  assert.throws(() =>
    settleResponse(db, schema, { sentIds: [1], acceptedIds: [1], rejected: [], pulledChanges: [upsert(uuid(5), 'x')], cursor: 'c1' }),
  /disk full/);
  assert.equal(outbox(db).length, 1);
  assert.equal(getCursor(db), 'c0');
  assert.equal(rows(db, 'SELECT * FROM todos').length, 1);
  assert.equal(db.selectValue('SELECT applying FROM sync_state'), 0);
});

test('retryRejected re-queues a refused change as a fresh local write; discardRejected drops it', async () => {
  const db = await openDb();
  addTodo(db, 1, 'first try');
  addTodo(db, 2, 'give up');
  settleResponse(db, schema, {
    sentIds: [1, 2], acceptedIds: [], cursor: 'c1',
    rejected: [{ id: 1, code: 'constraint_violation', message: 'x' }, { id: 2, code: 'forbidden', message: 'y' }],
    pulledChanges: [
      { table: 'todos', op: 'delete', row: { id: uuid(1), updated_at: '2026-11-24T10:00:00Z' } },
      { table: 'todos', op: 'delete', row: { id: uuid(2), updated_at: '2026-11-24T10:00:00Z' } },
    ],
  });
  const [r1, r2] = listRejected(db);
  retryRejected(db, schema, r1.id, { row: { ...r1.row, title: 'second try' } });
  assert.deepEqual(outbox(db).map((r) => [r.op, r.row.title]), [['insert', 'second try']]);
  assert.equal(db.selectValue('SELECT title FROM todos'), 'second try');
  discardRejected(db, [r2.id]);
  assert.equal(listRejected(db).length, 0);
  assert.throws(() => retryRejected(db, schema, 12345), /no rejected/);
});
