import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { defineSchema, exampleSchema } from '../src/schema.js';
import { schemaHash as generatedHash, serverTables, tables } from '../src/schema.generated.js';
import { schemaHash, schemaHashInput } from '../src/schema-hash.js';
import { syncWithWorker } from '../src/sync.js';
import { fetchServerSchema } from '../src/server-schema.js';
import { openDb, outbox, rows, scriptedServer, uuid } from './helpers.js';

const generated = defineSchema(tables);

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

test('the generated module carries the server hash, and the client computes the same', async () => {
  assert.match(generatedHash, /^[0-9a-f]{16}$/);
  assert.equal(await schemaHash(generated), generatedHash);
  // The kit's example schema is built from the generated module.
  assert.equal(await schemaHash(exampleSchema), generatedHash);
  assert.ok(generated.byServer.has('user_settings') && generated.byName.get('userSettings'));
  const todos = generated.byName.get('todos');
  assert.equal(todos.byName.get('dueAt').server, 'due_at');
  assert.equal(todos.byName.get('done').default, 0);
  assert.equal(todos.byName.get('title').notNull, true);
  assert.equal(todos.byName.get('userId').notNull, false); // the server fills the owner
  assert.equal(serverTables.find((t) => t.name === 'todos').references.project_id, 'projects');
});

test('a typo or a wrong type changes the hash; NOT NULL and defaults do not', async () => {
  const base = (columns) => defineSchema([{ name: 'notes', primaryKey: 'id', owner: 'userId', columns: { id: 'uuid', userId: 'uuid', updatedAt: 'timestamp', ...columns } }]);
  const good = await schemaHash(base({ body: 'text' }));
  assert.notEqual(await schemaHash(base({ bdy: 'text' })), good);
  assert.notEqual(await schemaHash(base({ body: 'json' })), good);
  assert.equal(await schemaHash(base({ body: { type: 'text', notNull: true, default: "'x'" } })), good);
  assert.equal(schemaHashInput(base({ body: 'text' })), '[["notes","id","user_id",[["body","text"],["id","uuid"],["updated_at","timestamp"],["user_id","uuid"]]]]');
});

test('a schema mismatch keeps the outbox and every local row, and says why', async () => {
  const db = await openDb();
  db.exec({ sql: 'INSERT INTO todos (id, title) VALUES (?, ?)', bind: [uuid(1), 'keep me'] });
  const srv = await scriptedServer(() => ({
    status: 409,
    json: { success: false, error: { code: 'schema_mismatch', message: 'the client was built for schema x, the server has y' } },
  }));
  servers.push(srv);
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 'tok', schema: exampleSchema });
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'schema_mismatch');
  assert.equal(r.error.status, 409);
  assert.equal(r.pending, 1);
  assert.equal(srv.requests.length, 1); // not retried: only a new build can fix it
  assert.equal(srv.requests[0].body.schemaHash, generatedHash);
  assert.equal(outbox(db).length, 1);
  assert.deepEqual(rows(db, 'SELECT title FROM todos'), [{ title: 'keep me' }]);
  assert.deepEqual(rows(db, 'SELECT count(*) AS n FROM sync_rejected'), [{ n: 0 }]);
  // sendSchemaHash: false leaves the field out (for servers older than the field).
  await syncWithWorker({ db, url: srv.url, getToken: () => 'tok', schema: exampleSchema, sendSchemaHash: false });
  assert.equal('schemaHash' in srv.requests[1].body, false);
});

test('fetchServerSchema reads GET /api/schema with the token, and says why when refused', async () => {
  const srv = await scriptedServer((req) =>
    req.headers.authorization === 'Bearer good'
      ? { json: { schemaHash: generatedHash, tables: serverTables } }
      : { status: 401, json: { success: false, error: { code: 'unauthorized', message: 'token refused' } } },
  );
  servers.push(srv);
  const got = await fetchServerSchema({ url: srv.url, getToken: () => 'good' });
  assert.equal(got.schemaHash, generatedHash);
  assert.equal(srv.requests[0].url, '/api/schema');
  assert.equal(srv.requests[0].method, 'GET');
  await assert.rejects(fetchServerSchema({ url: srv.url, getToken: () => 'bad' }), (e) => e.code === 'unauthorized' && e.status === 401);
});
