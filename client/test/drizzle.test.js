// Drizzle as schema input, with the real drizzle-orm package.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { sqliteTable, text, integer, real, primaryKey } from 'drizzle-orm/sqlite-core';
import { DrizzleSchemaError, fromDrizzle } from '../src/drizzle.js';
import { serverTables, tables } from '../src/schema.generated.js';
import { defineSchema, snakeCase } from '../src/schema.js';
import { schemaHash } from '../src/schema-hash.js';
import { syncWithWorker } from '../src/sync.js';
import { acceptAll, openDb, rows, scriptedServer, uuid } from './helpers.js';

// The suites own their tables: compare with the example's three, not with tables a user
// added to migrations/.
const EXAMPLE = ['projects', 'todos', 'user_settings'];
const example = serverTables.filter((t) => EXAMPLE.includes(t.name));
const exampleHash = await schemaHash(defineSchema(tables.filter((t) => EXAMPLE.includes(t.server ?? snakeCase(t.name)))));

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

// The example app's tables as a Drizzle user writes them (camelCase keys, snake_case SQL
// names, ISO-8601 text timestamps, JSON in text, booleans as integers).
const projects = sqliteTable('projects', {
  id: text('id').primaryKey(),
  userId: text('user_id'),
  name: text('name').notNull(),
  color: text('color'),
  updatedAt: text('updated_at').notNull(),
});
const todos = sqliteTable('todos', {
  id: text('id').primaryKey(),
  userId: text('user_id'),
  projectId: text('project_id').references(() => projects.id),
  title: text('title').notNull(),
  done: integer('done', { mode: 'boolean' }).notNull().default(false),
  dueAt: text('due_at'),
  position: real('position'),
  tags: text('tags', { mode: 'json' }),
  updatedAt: text('updated_at').notNull(),
});
const userSettings = sqliteTable('user_settings', {
  userId: text('user_id').primaryKey(),
  theme: text('theme'),
  language: text('language'),
  updatedAt: text('updated_at').notNull(),
});

test('Drizzle tables become the kit schema, with the server hash', async () => {
  const schema = fromDrizzle({ projects, todos, userSettings, notATable: 42 }, { server: example });
  assert.equal(await schemaHash(schema), exampleHash);
  const t = schema.byName.get('todos');
  assert.equal(t.server, 'todos');
  assert.deepEqual(t.primaryKey, ['id']);
  assert.equal(t.owner, 'user_id');
  assert.equal(t.updatedAt, 'updated_at');
  assert.equal(t.byName.get('id').type, 'uuid'); // the wire type comes from the server
  assert.equal(t.byName.get('due_at').type, 'timestamp');
  assert.equal(t.byName.get('tags').type, 'json');
  assert.equal(t.byName.get('done').type, 'boolean');
  assert.equal(t.byName.get('done').default, 0);
});

test('a Drizzle schema syncs: local SQL names, server names on the wire, hash sent', async () => {
  const schema = fromDrizzle([projects, todos, userSettings], { server: example });
  const db = await openDb(schema);
  db.exec({ sql: 'INSERT INTO todos (id, title, done, tags, updated_at) VALUES (?, ?, 1, ?, ?)', bind: [uuid(1), 'milk', '["a"]', '2026-11-24T10:00:00.000Z'] });
  const srv = await scriptedServer((req, body) => ({ json: acceptAll(body, { newServerTimestamp: 'c1' }) }));
  servers.push(srv);
  const r = await syncWithWorker({ db, url: srv.url, getToken: () => 'tok', schema });
  assert.equal(r.ok, true, JSON.stringify(r.error));
  const sent = srv.requests[0].body;
  assert.equal(sent.schemaHash, exampleHash);
  assert.deepEqual(sent.changes[0].row, { id: uuid(1), project_id: null, title: 'milk', done: true, due_at: null, position: null, tags: ['a'], updated_at: '2026-11-24T10:00:00.000Z' });
  assert.equal(rows(db, 'SELECT count(*) AS n FROM sync_outbox')[0].n, 0);
});

test('every disagreement with the server is reported at once', () => {
  const typo = sqliteTable('todos', {
    id: text('id').primaryKey(),
    userId: text('user_id'),
    projectId: text('project_id'),
    titel: text('titel').notNull(), // typo
    done: integer('done', { mode: 'timestamp' }).notNull(), // wrong class
    dueAt: text('due_at'),
    position: integer('position'), // integer cannot hold real
    tags: text('tags', { mode: 'json' }).notNull(), // NOT NULL on one side only
    updatedAt: text('updated_at').notNull(),
  });
  const notes = sqliteTable('notes', { id: text('id').primaryKey(), updatedAt: text('updated_at').notNull() });
  let error;
  try {
    fromDrizzle([projects, typo, notes], { server: example });
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof DrizzleSchemaError, String(error));
  assert.match(error.message, /^the Drizzle schema does not match the server's:\n- /);
  const text_ = error.problems.join('\n');
  for (const expected of [
    "todos.titel: the server's todos has no column titel",
    'todos.done is a Drizzle SQLiteTimestamp: the kit keeps timestamps as ISO-8601 text',
    "todos.position is a Drizzle SQLiteInteger, which cannot hold the server's real",
    'todos.tags: NOT NULL in Drizzle, nullable on the server',
    "todos: no column for the server's todos.title",
    'table notes: the server syncs no table notes',
    'the server syncs user_settings, which has no Drizzle table',
  ]) {
    assert.ok(text_.includes(expected), `missing: ${expected}\n${text_}`);
  }
});

test('a composite Drizzle key and a partial schema', () => {
  const pair = sqliteTable('user_settings', {
    userId: text('user_id').notNull(),
    theme: text('theme'),
    language: text('language'),
    updatedAt: text('updated_at').notNull(),
  }, (t) => [primaryKey({ columns: [t.userId, t.theme] })]);
  assert.throws(() => fromDrizzle([pair], { server: example, partial: true }), /primary key must be the single column user_id/);
  const only = fromDrizzle([userSettings], { server: example, partial: true });
  assert.deepEqual(only.tables.map((t) => t.server), ['user_settings']);
});
