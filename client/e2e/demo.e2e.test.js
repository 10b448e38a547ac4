// End to end: the demo PWA in headless Chromium against the real sync server
// (devtools.dev with its own Postgres). Two browser contexts are two devices of
// one user; a third context is another user.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { exampleSchema as schema } from '../src/schema.js';
import { decodePulled } from '../src/transform.js';
import { schemaHash as generatedHash } from '../src/schema.generated.js';
import { schemaHash } from '../src/schema-hash.js';
import { fetchServerSchema } from '../src/server-schema.js';
import {
  addProject, addTodo, ARTIFACTS, buildDemo, clickSync, dump, launchBrowser, openDevice, remove, rename,
  serverRows, setOnline, startServer, titles, toggleDone,
} from './harness.js';
import { mintToken } from './token.js';

const secret = randomBytes(32).toString('hex');
const userA = randomUUID();
const userC = randomUUID();
const tokenA = mintToken(secret, { sub: userA });
const tokenC = mintToken(secret, { sub: userC });

let server;
let browser;
let laptop;
let phone;

before(async () => {
  buildDemo();
  // small limits, so the demo's syncs also page the pull (hasMore) and split batches (413)
  server = await startServer({ secret, env: { PULL_PAGE_SIZE: '2', MAX_CHANGES: '3' } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const res = await server?.stop();
  if (res) assert.ok(res.code === 0 || res.signal === 'SIGTERM', `server stopped cleanly: ${JSON.stringify(res)}`);
});

/** App tables of a device, without local-only details, keyed for comparison. */
function appData(d) {
  const out = {};
  for (const t of schema.tables) out[t.name] = d[t.name].map((r) => ({ ...r })).sort((a, b) => key(t, a).localeCompare(key(t, b)));
  return out;
}
const key = (t, row) => t.primaryKey.map((k) => row[k]).join('|');

/** The server's rows for a user (pulled from scratch), converted to local rows. */
async function serverData(token) {
  const out = Object.fromEntries(schema.tables.map((t) => [t.name, new Map()]));
  for (const change of await serverRows(server.url, token)) {
    const local = decodePulled(schema, change);
    const k = key(local.table, local.values);
    if (local.op === 'delete') out[local.table.name].delete(k);
    else out[local.table.name].set(k, local.values);
  }
  const res = {};
  for (const t of schema.tables) res[t.name] = [...out[t.name].entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, v]) => v);
  return res;
}

/** Compare the columns the server returned (all of them for the example schema). */
function assertSameRows(actual, expected, label) {
  for (const t of schema.tables) {
    assert.equal(actual[t.name].length, expected[t.name].length, `${label}: ${t.name} row count`);
    actual[t.name].forEach((row, i) => {
      const want = expected[t.name][i];
      for (const col of Object.keys(want)) assert.deepEqual(row[col], want[col], `${label}: ${t.name}.${col} of ${key(t, want)}`);
    });
  }
}

/** A side-by-side picture of the two converged devices, for the README. */
async function saveScreenshot() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const shots = [];
  for (const [d, label] of [[laptop, 'laptop · OPFS'], [phone, 'phone · OPFS SAH pool']]) {
    await d.page.locator('details.log').evaluate((e) => { e.open = true; });
    shots.push({ label, png: (await d.page.screenshot()).toString('base64') });
  }
  const board = await browser.newPage({ viewport: { width: 1320, height: 820 } });
  await board.setContent(`<!doctype html><body style="margin:0;background:#cbd5e1;font:600 15px system-ui;display:flex;gap:20px;padding:16px">
    ${shots.map((s) => `<figure style="margin:0"><figcaption style="margin:0 0 6px">${s.label}</figcaption>
      <img style="display:block;border-radius:10px;box-shadow:0 4px 16px #0003" src="data:image/png;base64,${s.png}"></figure>`).join('')}
  </body>`);
  await board.screenshot({ path: join(ARTIFACTS, 'demo.png') });
  await board.close();
}

test('two devices of one user edit offline, reconnect, sync and converge on the server state', { timeout: 300_000 }, async () => {
  laptop = await openDevice(browser, server.url, { device: 'laptop', token: tokenA, storage: 'opfs' });
  phone = await openDevice(browser, server.url, { device: 'phone', token: tokenA, storage: 'sahpool' });
  assert.equal(laptop.storage, 'opfs');
  assert.equal(phone.storage, 'sahpool');

  // the laptop creates a small list and syncs; the phone pulls it
  await addProject(laptop.page, 'Home');
  await addTodo(laptop.page, 'buy milk', 'Home');
  await addTodo(laptop.page, 'call mom');
  await addTodo(laptop.page, 'water plants', 'Home');
  let r = await clickSync(laptop.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.pushed, 4);
  assert.ok(r.requests >= 2, 'four changes over MAX_CHANGES=3: the batch was split');
  r = await clickSync(phone.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.pulled, 4);
  assert.ok(r.requests >= 2, 'four rows over PULL_PAGE_SIZE=2: the pull was paged');
  assert.deepEqual(await titles(phone.page), ['buy milk', 'call mom', 'water plants']);

  // both go offline and edit; "call mom" is edited on both (the phone edits last and wins)
  await setOnline(laptop, false);
  await setOnline(phone, false);
  await toggleDone(laptop.page, 'buy milk');
  await rename(laptop.page, 'call mom', 'call mom (laptop)');
  await addTodo(laptop.page, 'laptop: book flights');
  await new Promise((res) => setTimeout(res, 30));
  await rename(phone.page, 'call mom', 'call mom tonight');
  await remove(phone.page, 'water plants');
  await addTodo(phone.page, 'phone: pay rent', 'Home');
  await phone.page.selectOption('[data-testid="theme"]', 'dark');
  await phone.page.waitForFunction(() => document.documentElement.dataset.theme === 'dark');

  // a sync attempt without network fails, is reported, and loses nothing
  const pendingBefore = (await dump(laptop.page)).outbox.length;
  assert.equal(pendingBefore, 3);
  const failed = await laptop.page.evaluate(
    ([token]) => window.syncDemo.call('sync', { url: new URL('/api/sync', location.href).href, token }),
    [tokenA],
  );
  assert.equal(failed.ok, false);
  assert.equal(failed.error.code, 'network');
  assert.equal(failed.pending, 3);
  assert.equal((await dump(laptop.page)).outbox.length, 3);

  // reconnect: going online syncs; one more round for the laptop to get the phone's changes
  await setOnline(laptop, true);
  await setOnline(phone, true);
  r = await clickSync(laptop.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  r = await clickSync(phone.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));

  const expected = ['buy milk', 'call mom tonight', 'laptop: book flights', 'phone: pay rent'];
  assert.deepEqual(await titles(laptop.page), expected);
  assert.deepEqual(await titles(phone.page), expected);
  await laptop.page.waitForSelector('li.done[data-title="buy milk"]');
  await phone.page.waitForSelector('li.done[data-title="buy milk"]');
  assert.equal(await laptop.page.evaluate(() => document.documentElement.dataset.theme), 'dark');

  const a = await dump(laptop.page);
  const b = await dump(phone.page);
  assert.equal(a.outbox.length, 0);
  assert.equal(b.outbox.length, 0);
  assert.deepEqual(appData(a), appData(b), 'both devices hold identical rows');
  const onServer = await serverData(tokenA);
  assertSameRows(appData(a), onServer, 'laptop vs server');
  assert.equal(onServer.todos.length, 4);
  assert.equal(onServer.projects.length, 1);
  assert.equal(onServer.userSettings[0].theme, 'dark');
  assert.ok(onServer.todos.every((t) => t.userId === userA));
  const milk = onServer.todos.find((t) => t.title === 'buy milk');
  assert.equal(milk.done, 1);
  assert.equal(milk.projectId, onServer.projects[0].id);
  assert.deepEqual(laptop.errors, []);
  assert.deepEqual(phone.errors, []);
  await saveScreenshot();
});

test('a third user sees none of it', { timeout: 120_000 }, async () => {
  const other = await openDevice(browser, server.url, { device: 'other', token: tokenC, storage: 'memory' });
  assert.equal(other.storage, 'memory');
  const r = await clickSync(other.page);
  assert.equal(r.ok, true, JSON.stringify(r.error));
  assert.equal(r.pulled, 0);
  const d = await dump(other.page);
  assert.deepEqual([d.projects.length, d.todos.length, d.userSettings.length], [0, 0, 0]);
  assert.deepEqual(await serverRows(server.url, tokenC), []);
  // and what the other user writes stays theirs
  await addTodo(other.page, 'not for user A');
  assert.equal((await clickSync(other.page)).pushed, 1);
  const seenByA = (await serverData(tokenA)).todos.map((t) => t.title);
  assert.equal(seenByA.includes('not for user A'), false);
  // nor can they write into user A's rows
  const target = (await serverData(tokenA)).todos[0];
  const res = await fetch(`${server.url}/api/sync`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tokenC}` },
    body: JSON.stringify({ lastSyncAt: null, changes: [{ id: 1, table: 'todos', op: 'update', row: { id: target.id, title: 'hijacked', done: false, updated_at: new Date().toISOString() } }] }),
  });
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.deepEqual(body.rejected.map((x) => x.code), ['forbidden']);
  assert.equal(JSON.stringify(body.pulledChanges).includes(userA), false);
  assert.equal((await serverData(tokenA)).todos.find((t) => t.id === target.id).title, target.title);
  await other.context.close();
});

test('OPFS keeps the data across a reload, also with the network gone', { timeout: 120_000 }, async () => {
  const beforeReload = appData(await dump(laptop.page));
  await laptop.page.reload();
  await laptop.page.waitForFunction(() => document.body.dataset.ready === 'opfs', null, { timeout: 30_000 });
  const afterReload = appData(await dump(laptop.page));
  assert.deepEqual(afterReload, beforeReload);

  // with the network gone, the service worker serves the app and the data is all local
  await laptop.page.evaluate(() => navigator.serviceWorker.ready);
  await laptop.context.setOffline(true);
  await laptop.page.reload();
  await laptop.page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 30_000 });
  assert.equal(await laptop.page.evaluate(() => document.body.dataset.ready), 'opfs',
    `offline start: ${await laptop.page.textContent('[data-testid="status"]')} ${laptop.errors.join('; ')}`);
  assert.deepEqual(appData(await dump(laptop.page)), beforeReload);
  await laptop.context.setOffline(false);
  await laptop.page.reload();
  await laptop.page.waitForFunction(() => document.body.dataset.ready === 'opfs', null, { timeout: 30_000 });

});

const tid = (id) => `[data-testid="${id}"]`;

test('an expired token is no dead end: the page asks for a new one; sign out; another device', { timeout: 120_000 }, async () => {
  const expired = mintToken(secret, { sub: userA, ttlSeconds: -120 });
  const d = await openDevice(browser, server.url, { device: 'stale', token: expired, storage: 'memory' });
  assert.equal(await d.page.isVisible(tid('signin')), true);
  assert.match(await d.page.textContent(tid('signin-why')), /expired/);
  assert.match(await d.page.textContent(tid('status')), /expired/);
  // a fresh token pasted into the form signs this device in again
  await d.page.fill(`${tid('token-form')} input[name=token]`, tokenA);
  await Promise.all([d.page.waitForEvent('load'), d.page.click(`${tid('token-form')} button`)]);
  await d.page.waitForFunction(() => Number(document.body.dataset.syncs || 0) >= 1, null, { timeout: 60_000 });
  assert.equal(await d.page.isVisible(tid('signin')), false);
  assert.equal((await d.page.evaluate(() => window.syncDemo.state().log[0])).ok, true);
  // "open another device" names a device of its own, signed in as the same user
  const href = await d.page.getAttribute(tid('new-device'), 'href');
  assert.match(href, /^#device=device-[a-z0-9]+&storage=memory&token=/);
  // sign out forgets this device's token
  await Promise.all([d.page.waitForEvent('load'), d.page.click(tid('signout'))]);
  await d.page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 30_000 });
  assert.equal(await d.page.isVisible(tid('signin')), true);
  assert.match(await d.page.textContent(tid('signin-why')), /no access token/);
  // (the refused token's 401, and the 404 of the dev sign-in probe this server lacks)
  assert.deepEqual(d.errors.filter((e) => !/401|Unauthorized|404/i.test(e)), []);
  await d.context.close();
});

test('the dev sign-in is offered only by a server that mints dev tokens', { timeout: 60_000 }, async () => {
  // This suite's server has a secret of its own, as a real deployment: no such route.
  const d = await openDevice(browser, server.url, { device: 'nodev', token: mintToken(secret, { sub: userA, ttlSeconds: -60 }), storage: 'memory' });
  await d.page.waitForTimeout(300);
  assert.equal(await d.page.isVisible(tid('dev-signin-row')), false);
  assert.equal((await fetch(`${server.url}/api/dev/token`)).status, 404);
  await d.context.close();
});

test('the real server serves the schema the client kit was generated from, with the same hash', { timeout: 30_000 }, async () => {
  const got = await fetchServerSchema({ url: `${server.url}/api/sync`, getToken: () => tokenA });
  assert.equal(got.schemaHash, generatedHash);
  assert.equal(await schemaHash(schema), got.schemaHash); // computed in JS, as the server does in Python
});
