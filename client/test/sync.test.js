import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { exampleSchema as schema } from '../src/schema.js';
import { getCursor, listRejected } from '../src/store.js';
import { isSyncing, syncWithWorker } from '../src/sync.js';
import { backoffDelay } from '../src/http.js';
import { acceptAll, fastRetry, openDb, outbox, rows, scriptedServer, uuid, USER, OTHER } from './helpers.js';
import { ReferenceServer } from './reference-server.js';

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));
async function serve(handler) {
  const s = await scriptedServer(handler);
  servers.push(s);
  return s;
}
const token = (user = USER) => () => `user:${user}`;
const addTodo = (db, n, title = `t${n}`) => db.exec({ sql: 'INSERT INTO todos (id, title) VALUES (?, ?)', bind: [uuid(n), title] });

test('one round: posts the outbox in the wire format, settles the answer, stores the cursor', async () => {
  const db = await openDb();
  addTodo(db, 1, 'milk');
  db.exec({ sql: 'UPDATE todos SET done = 1 WHERE id = ?', bind: [uuid(1)] });
  db.exec({ sql: 'DELETE FROM todos WHERE id = ?', bind: [uuid(1)] });
  const srv = await serve((req, body) => ({
    json: acceptAll(body, {
      newServerTimestamp: 'cursor-A',
      pulledChanges: [{ table: 'projects', op: 'upsert', row: { id: uuid(7), user_id: USER, name: 'from elsewhere', color: null, updated_at: '2026-11-24T10:00:00.5Z' } }],
    }),
  }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 'tok-1', schema });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual([r.pushed, r.rejected, r.pulled, r.pending, r.requests, r.retries], [3, 0, 1, 0, 1, 0]);
  assert.equal(r.cursor, 'cursor-A');
  assert.equal(srv.requests.length, 1);
  const req = srv.requests[0];
  assert.equal(req.method, 'POST');
  assert.equal(req.url, '/api/sync');
  assert.equal(req.headers['content-type'], 'application/json');
  assert.equal(req.headers.authorization, 'Bearer tok-1');
  assert.equal(req.body.lastSyncAt, null);
  assert.deepEqual(req.body.changes.map((c) => [c.id, c.table, c.op]), [[1, 'todos', 'insert'], [2, 'todos', 'update'], [3, 'todos', 'delete']]);
  assert.equal(req.body.changes[1].row.done, true);
  assert.deepEqual(Object.keys(req.body.changes[2].row).sort(), ['id', 'updated_at']);
  for (const c of req.body.changes) assert.match(c.row.updated_at, /Z$/);
  assert.equal(rows(db, 'SELECT name FROM projects')[0].name, 'from elsewhere');
  assert.equal(outbox(db).length, 0);
  // the next sync sends the stored cursor, exactly
  await syncWithWorker({ db, url: srv.url, getToken: () => 'tok-1', schema });
  assert.equal(srv.requests[1].body.lastSyncAt, 'cursor-A');
  assert.deepEqual(srv.requests[1].body.changes, []);
});

test('repeats while hasMore, with the new cursor and no changes', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const srv = await serve((req, body, n) => ({
    json: acceptAll(body, {
      newServerTimestamp: `page-${n}`,
      hasMore: n < 3,
      pulledChanges: [{ table: 'projects', op: 'upsert', row: { id: uuid(100 + n), name: `p${n}`, updated_at: '2026-01-01T00:00:00Z' } }],
    }),
  }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.equal(r.ok, true);
  assert.equal(r.requests, 3);
  assert.equal(r.pulled, 3);
  assert.deepEqual(srv.requests.map((q) => [q.body.lastSyncAt, q.body.changes.length]), [[null, 1], ['page-1', 0], ['page-2', 0]]);
  assert.equal(getCursor(db), 'page-3');
});

test('a big outbox goes in batches, oldest first; 413 halves the batch', async () => {
  const db = await openDb();
  for (let n = 1; n <= 7; n++) addTodo(db, n);
  const srv = await serve((req, body) =>
    body.changes.length > 2
      ? { status: 413, json: { success: false, error: { code: 'payload_too_large', message: 'too many' } } }
      : { json: acceptAll(body) },
  );
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, batchSize: 5 });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.pushed, 7);
  assert.deepEqual(srv.requests.map((q) => q.body.changes.map((c) => c.id)), [[1, 2, 3, 4, 5], [1, 2, 3], [1, 2], [3, 4], [5, 6], [7]]);
});

test('a single change too large to send is moved aside, not lost and not blocking', async () => {
  const db = await openDb();
  addTodo(db, 1, 'x'.repeat(5000));
  addTodo(db, 2, 'small');
  const srv = await serve((req, body) =>
    JSON.stringify(body).length > 4000
      ? { status: 413, json: { success: false, error: { code: 'payload_too_large', message: 'body over MAX_BODY_BYTES' } } }
      : { json: acceptAll(body) },
  );
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.equal(r.ok, true);
  assert.equal(r.pushed, 1);
  assert.equal(r.rejected, 1);
  assert.equal(r.rejectedChanges[0].code, 'payload_too_large');
  assert.equal(listRejected(db)[0].row.title.length, 5000);
});

test('network errors and 5xx are retried with the same body, then succeed', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const srv = await serve((req, body, n) => {
    if (n === 1) return 'destroy';
    if (n === 2) return { status: 503, json: { success: false, error: { code: 'unavailable', message: 'db down' } } };
    if (n === 3) return { status: 500, json: 'oops' };
    return { json: acceptAll(body) };
  });
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, retry: fastRetry });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.retries, 3);
  assert.equal(r.pushed, 1);
  assert.equal(new Set(srv.requests.map((q) => JSON.stringify(q.body))).size, 1, 'identical body on every attempt');
});

test('429 rate_limited is retried after Retry-After, with the same body', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const at = [];
  const srv = await serve((req, body, n) => {
    at.push(Date.now());
    if (n === 1) {
      return { status: 429, headers: { 'Retry-After': '1' }, json: { success: false, error: { code: 'rate_limited', message: 'slow down' } } };
    }
    return { json: acceptAll(body) };
  });
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, retry: { retries: 2, baseDelayMs: 1, maxDelayMs: 5000 } });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.retries, 1);
  assert.ok(at[1] - at[0] >= 950, `waited ${at[1] - at[0]} ms, Retry-After asked for 1000`);
  assert.equal(new Set(srv.requests.map((q) => JSON.stringify(q.body))).size, 1, 'identical body on every attempt');
  assert.equal(outbox(db).length, 0);
});

test('when retries run out the error is reported and nothing is lost', async () => {
  const db = await openDb();
  addTodo(db, 1);
  db.exec("UPDATE sync_state SET last_sync_at = 'c0'");
  const srv = await serve(() => ({ status: 503, json: { success: false, error: { code: 'unavailable', message: 'db down' } } }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, retry: fastRetry });
  assert.equal(r.ok, false);
  assert.deepEqual(r.error, { code: 'unavailable', message: 'db down', status: 503 });
  assert.equal(r.retries, 3);
  assert.equal(srv.requests.length, 4);
  assert.equal(r.pending, 1);
  assert.equal(getCursor(db), 'c0');
  // unreachable host: network error, same guarantees
  const closed = await serve(() => ({ json: {} }));
  await closed.close();
  const r2 = await syncWithWorker({ db, url: closed.url, getToken: () => 't', schema, retry: { retries: 1, baseDelayMs: 1 } });
  assert.equal(r2.error.code, 'network');
  assert.equal(r2.pending, 1);
});

test('a timeout counts as a network failure and is retried', async () => {
  const db = await openDb();
  const srv = await serve(async (req, body, n) => {
    if (n === 1) await new Promise((r) => setTimeout(r, 300));
    return { json: acceptAll(body) };
  });
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, timeoutMs: 100, retry: fastRetry });
  assert.equal(r.ok, true);
  assert.equal(r.retries, 1);
});

test('401 asks getToken for a fresh token once, then succeeds', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const calls = [];
  const getToken = async ({ forceRefresh }) => {
    calls.push(forceRefresh);
    return forceRefresh ? 'fresh' : 'stale';
  };
  const srv = await serve((req, body) =>
    req.headers.authorization === 'Bearer fresh'
      ? { json: acceptAll(body) }
      : { status: 401, json: { success: false, error: { code: 'unauthorized', message: 'expired' } } },
  );
  const r = await syncWithWorker({ db, url: srv.url, getToken, schema });
  assert.equal(r.ok, true);
  assert.deepEqual(calls, [false, true]);
  assert.equal(r.retries, 0);
});

test('a second 401 stops the sync with unauthorized, outbox intact; no token at all sends nothing', async () => {
  const db = await openDb();
  addTodo(db, 1);
  let asked = 0;
  const srv = await serve(() => ({ status: 401, json: { success: false, error: { code: 'unauthorized', message: 'bad signature' } } }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => `t${++asked}`, schema });
  assert.equal(r.ok, false);
  assert.deepEqual(r.error, { code: 'unauthorized', message: 'bad signature', status: 401 });
  assert.equal(asked, 2);
  assert.equal(srv.requests.length, 2);
  assert.equal(r.pending, 1);
  const r2 = await syncWithWorker({ db, url: srv.url, getToken: () => null, schema });
  assert.equal(r2.error.code, 'no_token');
  const r3 = await syncWithWorker({ db, url: srv.url, getToken: () => { throw new Error('signed out'); }, schema });
  assert.equal(r3.error.code, 'no_token');
  assert.equal(srv.requests.length, 2);
  assert.equal(outbox(db).length, 1);
});

test('other 4xx are not retried; a malformed 200 changes nothing locally', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const srv = await serve((req, body, n) =>
    n === 1
      ? { status: 400, json: { success: false, error: { code: 'bad_request', message: 'shape' } } }
      : { json: { success: true, acceptedIds: [1], rejected: [], pulledChanges: 'nope', newServerTimestamp: 'x' } },
  );
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, retry: fastRetry });
  assert.equal(r.error.code, 'bad_request');
  assert.equal(srv.requests.length, 1);
  const r2 = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, retry: fastRetry });
  assert.equal(r2.error.code, 'bad_response');
  assert.equal(outbox(db).length, 1);
  assert.equal(getCursor(db), null);
});

test('server rejections are kept with their code and reported to the caller', async () => {
  const db = await openDb();
  addTodo(db, 1, 'ok');
  addTodo(db, 2, 'refused');
  const srv = await serve((req, body) => ({
    json: {
      success: true, acceptedIds: [1], rejected: [{ id: 2, code: 'forbidden', message: 'row belongs to another user' }],
      pulledChanges: [{ table: 'todos', op: 'delete', row: { id: uuid(2), updated_at: '2026-01-01T00:00:00Z' } }],
      newServerTimestamp: 'c', hasMore: false,
    },
  }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.equal(r.ok, true);
  assert.equal(r.rejected, 1);
  assert.deepEqual(r.rejectedChanges, [{ id: 2, table: 'todos', op: 'insert', code: 'forbidden', message: 'row belongs to another user' }]);
  assert.equal(listRejected(db)[0].row.title, 'refused');
  assert.deepEqual(rows(db, 'SELECT title FROM todos'), [{ title: 'ok' }]);
});

test('changes the client cannot encode are kept aside and the rest is sent', async () => {
  const db = await openDb();
  db.exec({ sql: `INSERT INTO todos (id, title, tags) VALUES (?, 'bad tags', '{oops')`, bind: [uuid(1)] });
  addTodo(db, 2, 'fine');
  const srv = await serve((req, body) => ({ json: acceptAll(body) }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.equal(r.ok, true);
  assert.deepEqual(srv.requests[0].body.changes.map((c) => c.id), [2]);
  assert.equal(r.rejectedChanges[0].code, 'invalid_value');
  assert.equal(listRejected(db).length, 1);
});

test('one sync at a time per database; concurrent callers share one follow-up run', async () => {
  const db = await openDb();
  addTodo(db, 1);
  let active = 0;
  let maxActive = 0;
  const srv = await serve(async (req, body) => {
    active++;
    maxActive = Math.max(maxActive, active);
    await new Promise((r) => setTimeout(r, 50));
    active--;
    return { json: acceptAll(body) };
  });
  const opts = { db, url: srv.url, getToken: () => 't', schema };
  const first = syncWithWorker(opts);
  assert.equal(isSyncing(db), true);
  // Wait for the first request to reach the server (not a fixed time: the box is shared).
  for (let i = 0; i < 500 && srv.requests.length === 0; i++) await new Promise((r) => setTimeout(r, 2));
  assert.equal(srv.requests.length, 1, 'the first request is in flight');
  addTodo(db, 2); // written while the first sync runs
  const second = syncWithWorker(opts);
  const third = syncWithWorker(opts);
  assert.equal(second, third);
  const [a, b] = await Promise.all([first, second]);
  assert.equal(maxActive, 1);
  assert.equal(a.pushed, 1, 'the first sync sends what was there when it started');
  assert.equal(b.pushed, 1, 'the follow-up run sends the rest');
  assert.equal(srv.requests.length, 2);
  assert.equal(isSyncing(db), false);
  const other = await openDb();
  const [x, y] = await Promise.all([syncWithWorker({ ...opts, db: other }), syncWithWorker(opts)]);
  assert.equal(x.ok && y.ok, true);
});

test('an abort signal stops retrying; the outbox is kept', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const srv = await serve(() => ({ status: 503, json: { success: false, error: { code: 'unavailable', message: '' } } }));
  const ctl = new AbortController();
  setTimeout(() => ctl.abort(), 50);
  const t0 = Date.now();
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, signal: ctl.signal, retry: { retries: 10, baseDelayMs: 1000 } });
  assert.equal(r.error.code, 'aborted');
  assert.ok(Date.now() - t0 < 1000);
  assert.equal(r.pending, 1);
});

test('backoff grows exponentially with jitter and a cap', () => {
  const p = { baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(backoffDelay(0, p, () => 0), 50);
  assert.equal(backoffDelay(0, p, () => 1), 100);
  assert.equal(backoffDelay(3, p, () => 1), 800);
  assert.equal(backoffDelay(10, p, () => 1), 1000);
  assert.equal(backoffDelay(10, p, () => 0), 500);
});

test('lost response: the re-sent request is idempotent and the outbox converges', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const ref = new ReferenceServer();
  const srv = await serve((req, body, n) => {
    const out = ref.handle(req, body);
    return n === 1 ? 'destroy' : out; // the server committed, the answer never arrived
  });
  const r = await syncWithWorker({ db, url: srv.url, getToken: token(), schema, retry: fastRetry });
  assert.equal(r.ok, true);
  assert.equal(r.pushed, 1);
  assert.equal(ref.dump(USER).todos.length, 1);
});

test('two devices of one user converge through the server; another user sees nothing', async () => {
  const ref = new ReferenceServer({ pageSize: 3 });
  const srv = await serve(ref.handle);
  const a = await openDb();
  const b = await openDb();
  const c = await openDb();
  const sync = (db, user = USER) => syncWithWorker({ db, url: srv.url, getToken: token(user), schema });
  a.exec({ sql: `INSERT INTO projects (id, name) VALUES (?, 'home')`, bind: [uuid(50)] });
  for (let n = 1; n <= 5; n++) a.exec({ sql: 'INSERT INTO todos (id, projectId, title, tags) VALUES (?, ?, ?, ?)', bind: [uuid(n), uuid(50), `todo ${n}`, '["t"]'] });
  assert.equal((await sync(a)).ok, true);
  const rb = await sync(b);
  assert.equal(rb.ok, true);
  assert.ok(rb.requests >= 2, 'paged pull');
  // both "offline": edits on both sides, one conflict on todo 1 (b writes later and wins)
  a.exec({ sql: `UPDATE todos SET title = 'a edit', updatedAt = '2030-01-01T00:00:01.000Z' WHERE id = ?`, bind: [uuid(1)] });
  b.exec({ sql: `UPDATE todos SET title = 'b edit', updatedAt = '2030-01-01T00:00:02.000Z' WHERE id = ?`, bind: [uuid(1)] });
  a.exec({ sql: 'UPDATE todos SET done = 1 WHERE id = ?', bind: [uuid(2)] });
  b.exec({ sql: 'DELETE FROM todos WHERE id = ?', bind: [uuid(3)] });
  b.exec({ sql: `INSERT INTO userSettings (userId, theme) VALUES (?, 'dark')`, bind: [USER] });
  a.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 'a new')`, bind: [uuid(6)] });
  ref.maxSkewMs = 10 * 365 * 86400_000; // allow the hand-set 2030 clocks in this test
  for (const db of [a, b, a]) assert.equal((await sync(db)).ok, true);
  const dump = (db) => ({
    projects: rows(db, 'SELECT id, userId, name, color FROM projects ORDER BY id'),
    todos: rows(db, 'SELECT id, userId, projectId, title, done, tags FROM todos ORDER BY id'),
    userSettings: rows(db, 'SELECT userId, theme FROM userSettings'),
  });
  assert.deepEqual(dump(a), dump(b));
  const server = ref.dump(USER);
  assert.deepEqual(dump(a).todos.map((t) => [t.id, t.title, t.done]), server.todos.sort((x, y) => x.id.localeCompare(y.id)).map((t) => [t.id, t.title, t.done ? 1 : 0]));
  assert.equal(dump(a).todos.find((t) => t.id === uuid(1)).title, 'b edit');
  assert.equal(dump(a).todos.some((t) => t.id === uuid(3)), false);
  assert.equal(dump(a).userSettings[0].theme, 'dark');
  assert.equal(outbox(a).length + outbox(b).length, 0);
  // user c: sees none of it, and cannot write into user a's rows
  assert.equal((await sync(c, OTHER)).pulled, 0);
  c.exec({ sql: `INSERT INTO todos (id, title) VALUES (?, 'hijack')`, bind: [uuid(2)] });
  const rc = await sync(c, OTHER);
  assert.equal(rc.rejected, 1);
  assert.equal(rows(c, 'SELECT * FROM todos').length, 0, 'the refused row is removed locally (server sent a delete)');
  assert.equal(listRejected(c)[0].code, 'forbidden');
  assert.equal(ref.dump(USER).todos.find((t) => t.id === uuid(2)).title, 'todo 2');
});

test('maxRequests bounds one call; the result says more is waiting, the next call goes on', async () => {
  const db = await openDb();
  const srv = await serve((req, body, n) => ({ json: acceptAll(body, { newServerTimestamp: `p${n}`, hasMore: n < 5 }) }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema, maxRequests: 2 });
  assert.deepEqual([r.ok, r.hasMore, r.requests, r.error], [false, true, 2, null]);
  assert.equal(getCursor(db), 'p2');
  const r2 = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.deepEqual([r2.ok, r2.hasMore, r2.requests], [true, false, 3]);
  assert.equal(srv.requests[2].body.lastSyncAt, 'p2');
});

test('ids in the answer may be strings; integer outbox ids go out as integers', async () => {
  const db = await openDb();
  addTodo(db, 1);
  addTodo(db, 2);
  const srv = await serve((req, body) => ({
    json: { success: true, acceptedIds: ['1'], rejected: [{ id: '2', code: 'invalid_value', message: 'x' }], pulledChanges: [], newServerTimestamp: 'c', hasMore: false },
  }));
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.deepEqual(srv.requests[0].body.changes.map((c) => c.id), [1, 2]);
  assert.deepEqual([r.pushed, r.rejected, r.pending], [1, 1, 0]);
});

test('a local database failure is reported, not thrown', async () => {
  const db = await openDb();
  addTodo(db, 1);
  const srv = await serve((req, body) => ({ json: acceptAll(body) }));
  db.exec('DROP TABLE sync_state');
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 't', schema });
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'local');
  assert.equal(srv.requests.length, 0);
  assert.equal(outbox(db).length, 1);
});
