// End to end, sharing (issue #10): the demo PWA in headless Chromium against the real sync
// server and its Postgres. Three users, each in a browser context of their own: the owner
// shares a project, the member sees and edits it, a viewer's edit is refused, the owner
// removes the member and the rows leave the member's device; a third user sees nothing.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { exampleSchema as schema } from '../src/schema.js';
import { decodePulled } from '../src/transform.js';
import { addProject, addTodo, buildDemo, clickSync, dump, launchBrowser, openDevice, rename, serverRows, startServer, titles } from './harness.js';
import { mintToken } from './token.js';

const secret = randomBytes(32).toString('hex');
const owner = randomUUID();
const member = randomUUID();
const stranger = randomUUID();
const tokens = Object.fromEntries([owner, member, stranger].map((u) => [u, mintToken(secret, { sub: u })]));

let server;
let browser;

before(async () => {
  buildDemo();
  server = await startServer({ secret });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const res = await server?.stop();
  if (res) assert.ok(res.code === 0 || res.signal === 'SIGTERM', `server stopped cleanly: ${JSON.stringify(res)}`);
});

const tid = (id) => `[data-testid="${id}"]`;

/** What the server lets a user see, pulled from scratch, as local rows per table. */
async function visible(user) {
  const out = Object.fromEntries(schema.tables.map((t) => [t.name, new Map()]));
  for (const change of await serverRows(server.url, tokens[user])) {
    const local = decodePulled(schema, change);
    const k = local.table.primaryKey.map((c) => local.values[c]).join('|');
    if (local.op === 'delete') out[local.table.name].delete(k);
    else out[local.table.name].set(k, local.values);
  }
  return Object.fromEntries(Object.entries(out).map(([name, rows]) => [name, [...rows.values()]]));
}

/** The owner's share form: add (or re-role) a member of a project. */
async function share(page, project, userId, role) {
  await page.locator(tid('sharing')).evaluate((d) => { d.open = true; });
  await page.selectOption(tid('share-project'), { label: project });
  await page.fill(`${tid('share-form')} input[name="member"]`, userId);
  await page.selectOption(tid('share-role'), role);
  await page.click(`${tid('share-form')} button`);
  await page.waitForSelector(`${tid('members')} li[data-member="${userId}"][data-role="${role}"]`, { state: 'attached' });
}

const localCounts = async (page) => {
  const d = await dump(page);
  return { projects: d.projects.length, members: d.projectMembers.length, todos: d.todos.length, outbox: d.outbox.length };
};

test('share, edit as a member, refuse a viewer, remove the member, and a stranger sees nothing', { timeout: 300_000 }, async () => {
  const a = await openDevice(browser, server.url, { device: 'owner', token: tokens[owner], storage: 'memory' });
  const b = await openDevice(browser, server.url, { device: 'member', token: tokens[member], storage: 'memory' });
  const c = await openDevice(browser, server.url, { device: 'stranger', token: tokens[stranger], storage: 'memory' });

  // the owner makes a project with a todo, keeps a private todo, and shares the project
  await addProject(a.page, 'Team');
  await addTodo(a.page, 'plan offsite', 'Team');
  await addTodo(a.page, 'owner private');
  await share(a.page, 'Team', member, 'editor');
  let r = await clickSync(a.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.rejected, 0, JSON.stringify(r.rejectedChanges));
  assert.equal(r.pushed, 4);

  // the member's next pull delivers the project, its todo and the member list, marked shared
  r = await clickSync(b.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(await titles(b.page), ['plan offsite']);
  await b.page.waitForSelector('.chip.shared[data-project="Team"]');
  assert.match(await b.page.textContent('.chip[data-project="Team"]'), /shared · editor/);
  assert.deepEqual(await localCounts(b.page), { projects: 1, members: 1, todos: 1, outbox: 0 });

  // a stranger sees nothing of it, on the device and through the protocol
  r = await clickSync(c.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.pulled, 0);
  assert.deepEqual(await localCounts(c.page), { projects: 0, members: 0, todos: 0, outbox: 0 });
  assert.deepEqual(await serverRows(server.url, tokens[stranger]), []);

  // the member (an editor) edits the shared todo and adds one; both reach the owner
  await rename(b.page, 'plan offsite', 'plan offsite (member)');
  await addTodo(b.page, 'book venue', 'Team');
  r = await clickSync(b.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual([r.pushed, r.rejected], [2, 0], JSON.stringify(r.rejectedChanges));
  r = await clickSync(a.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(await titles(a.page), ['book venue', 'owner private', 'plan offsite (member)']);
  const seenByOwner = await visible(owner);
  const venue = seenByOwner.todos.find((t) => t.title === 'book venue');
  assert.equal(venue.userId, member, "a new todo's user_id is its creator");
  assert.equal(seenByOwner.todos.find((t) => t.title === 'plan offsite (member)').userId, owner, 'an edit keeps the creator');
  assert.deepEqual((await visible(member)).todos.map((t) => t.title).sort(), ['book venue', 'plan offsite (member)'], 'the private todo stays private');

  // the owner makes the member a viewer: the member's next edit is refused, and kept
  await share(a.page, 'Team', member, 'viewer');
  assert.equal((await clickSync(a.page)).ok, true);
  assert.equal((await clickSync(b.page)).ok, true);
  assert.match(await b.page.textContent('.chip[data-project="Team"]'), /shared · viewer/);
  await rename(b.page, 'book venue', 'viewer edit');
  r = await clickSync(b.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(r.rejectedChanges.map((x) => [x.table, x.op, x.code]), [['todos', 'update', 'forbidden']]);
  const kept = await b.page.evaluate(() => window.syncDemo.state().rejected);
  assert.deepEqual(kept.map((k) => [k.table, k.code, k.row?.title]), [['todos', 'forbidden', 'viewer edit']]);
  await b.page.waitForSelector(`${tid('rejected')} li:has-text("forbidden")`);
  assert.equal((await visible(owner)).todos.find((t) => t.id === venue.id).title, 'book venue', 'the refused edit changed nothing');
  assert.deepEqual(await titles(b.page), ['book venue', 'plan offsite (member)'], "the viewer's device is back at the server's version");

  // the member, offline in effect, edits again; meanwhile the owner removes them
  await rename(b.page, 'plan offsite (member)', 'edited after removal');
  await a.page.locator(`${tid('members')} li[data-member="${member}"] button.x`).click();
  await a.page.waitForSelector(`${tid('members')} li[data-member="${member}"]`, { state: 'detached' });
  r = await clickSync(a.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.rejected, 0);

  // the member's next sync: the pending edit is refused, and every row of the project leaves
  r = await clickSync(b.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.deepEqual(r.rejectedChanges.map((x) => [x.table, x.code]), [['todos', 'forbidden']]);
  assert.deepEqual(await localCounts(b.page), { projects: 0, members: 0, todos: 0, outbox: 0 });
  assert.deepEqual(await titles(b.page), []);
  assert.deepEqual(await serverRows(server.url, tokens[member]).then((rows) => rows.filter((x) => x.op === 'upsert')), []);
  // and a later sync does not bring them back
  assert.equal((await clickSync(b.page)).ok, true);
  assert.deepEqual(await localCounts(b.page), { projects: 0, members: 0, todos: 0, outbox: 0 });

  // the owner keeps everything, the member's todo included; the stranger still sees nothing
  const final = await visible(owner);
  assert.deepEqual(final.todos.map((t) => t.title).sort(), ['book venue', 'owner private', 'plan offsite (member)']);
  assert.deepEqual(final.projectMembers, []);
  assert.equal((await clickSync(c.page)).pulled, 0);
  assert.deepEqual(await localCounts(c.page), { projects: 0, members: 0, todos: 0, outbox: 0 });

  for (const d of [a, b, c]) assert.deepEqual(d.errors, []);
  await Promise.all([a, b, c].map((d) => d.context.close()));
});
