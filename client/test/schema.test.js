import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineSchema, exampleSchema, snakeCase } from '../src/schema.js';

test('snakeCase maps camelCase names to the server names', () => {
  assert.equal(snakeCase('userSettings'), 'user_settings');
  assert.equal(snakeCase('dueAt'), 'due_at');
  assert.equal(snakeCase('id'), 'id');
  assert.equal(snakeCase('HTTPStatus'), 'http_status');
});

test('the example schema describes the three server tables', () => {
  // Generated from migrations/: a table you add there is listed too, so look for these.
  const names = exampleSchema.tables.map((t) => [t.name, t.server]);
  for (const pair of [['projects', 'projects'], ['todos', 'todos'], ['userSettings', 'user_settings']]) {
    assert.ok(names.some(([n, s]) => n === pair[0] && s === pair[1]), JSON.stringify(names));
  }
  const todos = exampleSchema.byServer.get('todos');
  assert.deepEqual(
    todos.columns.map((c) => [c.name, c.server, c.type]),
    [
      ['id', 'id', 'uuid'],
      ['userId', 'user_id', 'uuid'],
      ['projectId', 'project_id', 'uuid'],
      ['title', 'title', 'text'],
      ['done', 'done', 'boolean'],
      ['dueAt', 'due_at', 'timestamp'],
      ['position', 'position', 'real'],
      ['tags', 'tags', 'json'],
      ['updatedAt', 'updated_at', 'timestamp'],
    ],
  );
  const settings = exampleSchema.byName.get('userSettings');
  assert.deepEqual(settings.primaryKey, ['userId']);
  assert.equal(settings.owner, 'userId');
  assert.equal(exampleSchema.byName.get('projects').owner, 'userId');
});

test('defineSchema refuses descriptions it cannot sync', () => {
  const cols = { id: 'uuid', updatedAt: 'timestamp' };
  assert.throws(() => defineSchema([]), /non-empty/);
  assert.throws(() => defineSchema([{ name: 'a', columns: cols }]), /primary key/);
  assert.throws(() => defineSchema([{ name: 'a', primaryKey: 'nope', columns: cols }]), /no column/);
  assert.throws(() => defineSchema([{ name: 'a', primaryKey: 'id', columns: { id: 'uuid' } }]), /timestamp column/);
  assert.throws(() => defineSchema([{ name: 'a', primaryKey: 'id', columns: { ...cols, x: 'money' } }]), /unknown type/);
  assert.throws(() => defineSchema([{ name: 'a;drop', primaryKey: 'id', columns: cols }]), /bad table name/);
  assert.throws(
    () => defineSchema([{ name: 'a', primaryKey: 'id', columns: cols }, { name: 'a', primaryKey: 'id', columns: cols }]),
    /twice/,
  );
  assert.throws(() => defineSchema([{ name: 'a', primaryKey: 'id', owner: 'who', columns: cols }]), /owner/);
  const ok = defineSchema([{ name: 'noteItems', primaryKey: 'id', updatedAt: 'changed', columns: { id: 'uuid', changed: 'timestamp', bodyText: { type: 'text', server: 'body' } } }]);
  assert.equal(ok.tables[0].server, 'note_items');
  assert.equal(ok.tables[0].byName.get('bodyText').server, 'body');
  assert.equal(ok.tables[0].updatedAt, 'changed');
});
