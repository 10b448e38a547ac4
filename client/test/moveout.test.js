// Move-outs (sharing, PROTOCOL.md "Sharing"): when a user loses access to a shared project,
// their next pull carries a `delete` for every row that left. The kit must remove those rows
// even though this device never deleted them, whatever their order, and a local edit still
// waiting for such a row must end in sync_rejected with the server's code, not resurrect it.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { exampleSchema as schema } from '../src/schema.js';
import { listRejected, settleResponse } from '../src/store.js';
import { syncWithWorker } from '../src/sync.js';
import { openDb, outbox, rows, scriptedServer, uuid, USER, OTHER } from './helpers.js';

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

const T0 = '2026-12-03T05:00:00.000000Z';
const project = { table: 'projects', op: 'upsert', row: { id: uuid(1), user_id: OTHER, name: 'shared', color: null, updated_at: T0 } };
const member = {
  table: 'project_members', op: 'upsert',
  row: { id: uuid(2), project_id: uuid(1), user_id: USER, role: 'editor', updated_at: T0 },
};
const todo = (n, title = `t${n}`) => ({
  table: 'todos', op: 'upsert',
  row: { id: uuid(n), user_id: OTHER, project_id: uuid(1), title, done: false, due_at: null, position: null, tags: null, updated_at: T0 },
});
const del = (table, n) => ({ table, op: 'delete', row: { id: uuid(n), updated_at: '2026-12-03T05:10:00.000000Z' } });
const moveIn = [project, member, todo(10), todo(11)]; // parents first, as the server sends upserts
const counts = (db) => ({
  projects: Number(db.selectValue('SELECT count(*) FROM projects')),
  members: Number(db.selectValue('SELECT count(*) FROM projectMembers')),
  todos: Number(db.selectValue('SELECT count(*) FROM todos')),
});

async function movedIn() {
  const db = await openDb();
  settleResponse(db, schema, { sentIds: [], acceptedIds: [], rejected: [], pulledChanges: moveIn, cursor: 'c1' });
  assert.deepEqual(counts(db), { projects: 1, members: 1, todos: 2 });
  assert.equal(outbox(db).length, 0, 'pulled rows never enter the outbox');
  return db;
}

test('a move-out removes rows this device never deleted, children first as the server sends them', async () => {
  const db = await movedIn();
  const s = settleResponse(db, schema, {
    sentIds: [], acceptedIds: [], rejected: [],
    pulledChanges: [del('todos', 10), del('todos', 11), del('project_members', 2), del('projects', 1)],
    cursor: 'c2',
  });
  assert.deepEqual([s.applied, s.skipped, s.failed], [4, 0, 0]);
  assert.deepEqual(counts(db), { projects: 0, members: 0, todos: 0 });
  assert.equal(outbox(db).length, 0, 'applying deletes queues nothing');
  assert.equal(listRejected(db).length, 0);
});

test('a project delete that arrives while its todos are still stored locally removes the project too', async () => {
  const db = await movedIn();
  // the parent first (e.g. over two pages): the local tables carry no foreign keys to stop it
  settleResponse(db, schema, { sentIds: [], acceptedIds: [], rejected: [], pulledChanges: [del('projects', 1)], cursor: 'c2' });
  assert.deepEqual(counts(db), { projects: 0, members: 1, todos: 2 });
  settleResponse(db, schema, {
    sentIds: [], acceptedIds: [], rejected: [],
    pulledChanges: [del('todos', 10), del('todos', 11), del('project_members', 2)],
    cursor: 'c3',
  });
  assert.deepEqual(counts(db), { projects: 0, members: 0, todos: 0 });
});

/**
 * A stand-in for the server after USER was removed from the project: every write to its rows
 * is `forbidden`, answered (PROTOCOL.md) with a delete for the key; the first pull carries the
 * move-out deletes.
 */
async function exMemberServer() {
  let pulledMoveOut = false;
  const srv = await scriptedServer((req, body) => {
    const rejected = body.changes.map((c) => ({ id: c.id, code: 'forbidden', message: 'no access to this row' }));
    const echo = body.changes.map((c) => ({ table: c.table, op: 'delete', row: { id: c.row.id, updated_at: c.row.updated_at } }));
    const moveOut = pulledMoveOut ? [] : [del('todos', 10), del('todos', 11), del('project_members', 2), del('projects', 1)];
    pulledMoveOut = true;
    return {
      json: { success: true, acceptedIds: [], rejected, pulledChanges: [...moveOut, ...echo], newServerTimestamp: 'c9', hasMore: false },
    };
  });
  servers.push(srv);
  return srv;
}

test('an edit made before the move-out is sent, refused as forbidden, kept in sync_rejected, and the row leaves', async () => {
  const db = await movedIn();
  db.exec({ sql: 'UPDATE todos SET title = ? WHERE id = ?', bind: ['edited offline', uuid(10)] });
  assert.equal(outbox(db).length, 1);
  const srv = await exMemberServer();
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => `user:${USER}`, schema, sendSchemaHash: false });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(srv.requests[0].body.changes.map((c) => [c.table, c.op, c.row.title]), [['todos', 'update', 'edited offline']]);
  assert.deepEqual(r.rejectedChanges.map((c) => [c.table, c.op, c.code]), [['todos', 'update', 'forbidden']]);
  const kept = listRejected(db);
  assert.deepEqual(kept.map((k) => [k.direction, k.table, k.op, k.code, k.row?.title]), [['push', 'todos', 'update', 'forbidden', 'edited offline']]);
  assert.deepEqual(counts(db), { projects: 0, members: 0, todos: 0 }, 'nothing of the project is left, the edited todo neither');
  assert.equal(outbox(db).length, 0);
});

test('an edit made while the move-out is being pulled is held back, then refused, and does not bring the row back', async () => {
  // the pull carries the move-out while a local edit of todo 10 waits (written after the
  // sync read its outbox): the kit keeps that delete back rather than lose the edit
  const db2 = await movedIn();
  db2.exec({ sql: 'UPDATE todos SET done = 1 WHERE id = ?', bind: [uuid(10)] });
  const held = settleResponse(db2, schema, {
    sentIds: [], acceptedIds: [], rejected: [],
    pulledChanges: [del('todos', 10), del('todos', 11), del('project_members', 2), del('projects', 1)],
    cursor: 'c2',
  });
  assert.equal(held.skipped, 1, 'the edited todo is kept back while its edit waits');
  assert.deepEqual(counts(db2), { projects: 0, members: 0, todos: 1 });
  // the next sync sends the edit; the server refuses it and answers with a delete for the key
  const srv = await exMemberServer();
  const r = await syncWithWorker({ db: db2, url: srv.url, getToken: () => `user:${USER}`, schema, sendSchemaHash: false });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.pending, 0);
  assert.deepEqual(counts(db2), { projects: 0, members: 0, todos: 0 });
  assert.deepEqual(listRejected(db2).map((k) => [k.table, k.op, k.code]), [['todos', 'update', 'forbidden']]);
  // and later syncs send nothing for it and leave it gone
  const again = await syncWithWorker({ db: db2, url: srv.url, getToken: () => `user:${USER}`, schema, sendSchemaHash: false });
  assert.equal(again.ok, true);
  assert.deepEqual(srv.requests.at(-1).body.changes, []);
  assert.deepEqual(rows(db2, 'SELECT id FROM todos'), []);
});

test("a viewer's edit is refused as forbidden, kept with the server's code, and the row returns to the server's version", async () => {
  const db = await movedIn();
  db.exec({ sql: 'UPDATE todos SET title = ? WHERE id = ?', bind: ['viewer edit', uuid(10)] });
  const srv = await scriptedServer((req, body) => ({
    json: {
      success: true, acceptedIds: [],
      rejected: body.changes.map((c) => ({ id: c.id, code: 'forbidden', message: 'viewers may not write' })),
      pulledChanges: [todo(10)], // the row as it stands, which the viewer may see
      newServerTimestamp: 'c5', hasMore: false,
    },
  }));
  servers.push(srv);
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => `user:${USER}`, schema, sendSchemaHash: false });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(listRejected(db).map((k) => [k.table, k.code, k.message, k.row?.title]), [['todos', 'forbidden', 'viewers may not write', 'viewer edit']]);
  assert.equal(db.selectValue('SELECT title FROM todos WHERE id = ?', [uuid(10)]), 't10');
  assert.deepEqual(counts(db), { projects: 1, members: 1, todos: 2 });
});
