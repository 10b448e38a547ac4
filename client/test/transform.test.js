import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exampleSchema as schema } from '../src/schema.js';
import { decodePulled, EncodeError, encodeChange, normalizeTimestamp } from '../src/transform.js';
import { openDb, outbox, uuid, USER } from './helpers.js';

const entry = (tbl, op, row, extra = {}) => ({ id: 7, tbl, op, row_key: '[]', row: JSON.stringify(row), changed_at: '2026-01-01T00:00:09.000Z', ...extra });

test('outbox rows become snake_case wire changes with JSON types (Option B)', async () => {
  const db = await openDb();
  db.exec({
    sql: `INSERT INTO todos (id, userId, projectId, title, done, dueAt, position, tags, updatedAt)
          VALUES (?, ?, ?, 'milk', 1, '2026-02-01T08:00:00.000Z', 2.5, '{"a":[1,true]}', '2026-01-01T00:00:00.000Z')`,
    bind: [uuid(1), USER, uuid(9)],
  });
  db.exec({ sql: `INSERT INTO userSettings (userId, theme) VALUES (?, 'dark')`, bind: [USER] });
  const [todo, settings] = outbox(db).map((r) => encodeChange(schema, { ...r, row: JSON.stringify(r.row) }));
  assert.deepEqual(todo, {
    id: 1,
    table: 'todos',
    op: 'insert',
    row: {
      id: uuid(1), user_id: USER, project_id: uuid(9), title: 'milk', done: true,
      due_at: '2026-02-01T08:00:00.000Z', position: 2.5, tags: { a: [1, true] },
      updated_at: '2026-01-01T00:00:00.000Z',
    },
  });
  assert.equal(settings.table, 'user_settings');
  assert.equal(settings.row.user_id, USER);
  assert.equal(settings.row.theme, 'dark');
  assert.equal(settings.row.language, null);
  assert.equal(JSON.stringify(todo).includes('userId'), false);
});

test('booleans go out as true/false, a null owner is left out for the server to fill', () => {
  const c = encodeChange(schema, entry('todos', 'update', { id: uuid(1), userId: null, title: 't', done: 0, tags: null, updatedAt: '2026-01-01T00:00:00.000Z' }));
  assert.equal(c.row.done, false);
  assert.equal('user_id' in c.row, false);
  assert.equal(c.row.tags, null);
});

test('a delete sends the primary key and its write time only', () => {
  const c = encodeChange(schema, entry('todos', 'delete', { id: uuid(1), userId: USER, title: 't', done: 1, updatedAt: '2026-01-01T00:00:05.000Z' }));
  assert.deepEqual(c, { id: 7, table: 'todos', op: 'delete', row: { id: uuid(1), updated_at: '2026-01-01T00:00:05.000Z' } });
  const s = encodeChange(schema, entry('userSettings', 'delete', { userId: USER, theme: 'x', updatedAt: '2026-01-01T00:00:05.000Z' }));
  assert.deepEqual(s.row, { user_id: USER, updated_at: '2026-01-01T00:00:05.000Z' });
});

test('updated_at falls back to the outbox write time; epoch numbers become ISO strings', () => {
  const c = encodeChange(schema, entry('projects', 'insert', { id: uuid(1), name: 'p', updatedAt: null }));
  assert.equal(c.row.updated_at, '2026-01-01T00:00:09.000Z');
  const d = encodeChange(schema, entry('projects', 'insert', { id: uuid(1), name: 'p', updatedAt: Date.UTC(2026, 0, 2) }));
  assert.equal(d.row.updated_at, '2026-01-02T00:00:00.000Z');
});

test('values that cannot be encoded raise EncodeError with a protocol code', () => {
  const bad = (tbl, row, code) =>
    assert.throws(() => encodeChange(schema, entry(tbl, 'insert', row)), (e) => e instanceof EncodeError && e.code === code);
  bad('todos', { id: uuid(1), title: 't', tags: '{not json', updatedAt: 'x' }, 'invalid_value');
  bad('todos', { id: uuid(1), title: 't', done: 'maybe', updatedAt: 'x' }, 'invalid_value');
  bad('todos', { id: null, title: 't', updatedAt: 'x' }, 'missing_primary_key');
  bad('userSettings', { userId: null, theme: 'x', updatedAt: 'x' }, 'missing_primary_key');
  bad('nope', { id: 1 }, 'unknown_table');
});

test('pulled rows become local rows: 0/1, JSON text, normalised timestamps, lower-case uuids', () => {
  const l = decodePulled(schema, {
    table: 'todos',
    op: 'upsert',
    row: {
      id: uuid(1).toUpperCase(), user_id: USER, project_id: null, title: 't', done: true,
      due_at: '2026-11-24T12:00:00.5+02:00', position: 3, tags: ['x', { y: 1 }],
      updated_at: '2026-11-24T10:00:00.123456Z', server_only: 'ignored', _txid: 99,
    },
  });
  assert.equal(l.table.name, 'todos');
  assert.equal(l.op, 'upsert');
  assert.deepEqual(l.values, {
    id: uuid(1), userId: USER, projectId: null, title: 't', done: 1,
    dueAt: '2026-11-24T10:00:00.500Z', position: 3, tags: '["x",{"y":1}]', updatedAt: '2026-11-24T10:00:00.123Z',
  });
  const d = decodePulled(schema, { table: 'user_settings', op: 'delete', row: { user_id: USER, updated_at: '2026-11-24T10:00:00Z' } });
  assert.equal(d.op, 'delete');
  assert.deepEqual(d.values, { userId: USER, updatedAt: '2026-11-24T10:00:00.000Z' });
  assert.equal(decodePulled(schema, { table: 'other_app_table', op: 'upsert', row: { id: 1 } }), null);
  assert.throws(() => decodePulled(schema, { table: 'todos', op: 'upsert', row: { title: 'no id' } }), EncodeError);
  assert.throws(() => decodePulled(schema, { table: 'todos', op: 'merge', row: { id: uuid(1) } }), EncodeError);
  assert.equal(decodePulled(schema, { table: 'todos', op: 'upsert', row: { id: uuid(1), done: false } }).values.done, 0);
});

test('normalizeTimestamp gives the toISOString shape', () => {
  assert.equal(normalizeTimestamp('2026-11-24T10:00:00.123456Z'), '2026-11-24T10:00:00.123Z');
  assert.equal(normalizeTimestamp('2026-11-24T10:00:00Z'), '2026-11-24T10:00:00.000Z');
  assert.equal(normalizeTimestamp('2026-11-24T10:00:00.999999+00:00'), '2026-11-24T10:00:00.999Z');
  assert.equal(normalizeTimestamp('2026-11-24 10:00:00.1-05:30'), '2026-11-24T15:30:00.100Z');
  assert.equal(normalizeTimestamp('2026-11-24T10:00:00+0100'), '2026-11-24T09:00:00.000Z');
  assert.equal(normalizeTimestamp(0), '1970-01-01T00:00:00.000Z');
  assert.equal(normalizeTimestamp('tomorrow'), 'tomorrow');
});
