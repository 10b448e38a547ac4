// The e2e harness: the real sync server (`python -m devtools.dev`, what `make dev`
// runs, with its own throwaway Postgres) on a free port, Debian's Chromium via
// playwright-core, and small helpers to drive the demo page.
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CLIENT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = join(CLIENT, '..');
export const ARTIFACTS = join(CLIENT, 'test-artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/**
 * A free port below the kernel's ephemeral range (where the server's own
 * Postgres and other tests pick theirs), so nobody takes it before we bind.
 */
export async function freePort() {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const ok = await new Promise((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port found');
}

/** `npm run build`, so the server serves the current demo from client/dist/. */
export function buildDemo() {
  execFileSync(process.execPath, [join(CLIENT, 'scripts', 'build.mjs')], { stdio: 'pipe' });
}

/**
 * Start the dev server with its own data dir, port and JWT secret; resolves when
 * it prints `ready: http://…`. `stop()` sends SIGTERM and waits for the exit.
 */
export async function startServer(options = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServerOnce(options);
    } catch (e) {
      // another process took the port between our check and the server's bind: try another
      if (attempt >= 3 || !/Address already in use/.test(String(e.message))) throw e;
    }
  }
}

async function startServerOnce({ secret, env: extraEnv = {}, timeoutMs = 180_000 }) {
  const python = process.env.SYNC_PYTHON || join(REPO, '.venv', 'bin', 'python');
  if (!existsSync(python)) throw new Error(`${python} is missing: run \`make setup\` (or set SYNC_PYTHON)`);
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'sync-client-e2e-'));
  mkdirSync(ARTIFACTS, { recursive: true });
  const logPath = join(ARTIFACTS, 'server.log');
  const logFile = createWriteStream(logPath);
  const env = { ...process.env, PORT: String(port), HOST: '127.0.0.1', DEV_DATA_DIR: dataDir, SUPABASE_JWT_SECRET: secret, ...extraEnv };
  delete env.DATABASE_URL; // always the test's own throwaway Postgres
  delete env.ALLOWED_ORIGINS;
  const child = spawn(python, ['-m', 'devtools.dev'], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let output = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server not ready within ${timeoutMs} ms; log: ${logPath}\n${output.slice(-2000)}`)), timeoutMs);
    const onData = (chunk) => {
      logFile.write(chunk);
      output += chunk;
      const m = /ready: (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      logFile.end();
      rmSync(dataDir, { recursive: true, force: true, maxRetries: 3 });
      reject(new Error(`server exited (${code ?? signal}) before ready; log: ${logPath}\n${output.slice(-2000)}`));
    });
  });
  return {
    url,
    port,
    dataDir,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const res = await exited;
      clearTimeout(killer);
      logFile.end();
      rmSync(dataDir, { recursive: true, force: true, maxRetries: 3 });
      return res;
    },
  };
}

export function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run client/scripts/ensure-chromium.sh (apt-get install chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/** Open the demo as one "device" in its own browser context. */
export async function openDevice(browser, baseUrl, { device, token, storage }) {
  const context = await browser.newContext({ viewport: { width: 640, height: 760 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(`${baseUrl}/#device=${device}&storage=${storage}&token=${token}`);
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 30_000 });
  const ready = await page.evaluate(() => document.body.dataset.ready);
  if (ready === 'error') throw new Error(`device ${device} failed: ${await page.textContent('[data-testid="status"]')}`);
  // the page syncs once on start; wait for it so the steps below are deterministic
  await page.waitForFunction(() => Number(document.body.dataset.syncs || 0) >= 1, null, { timeout: 60_000 });
  return { context, page, errors, storage: ready };
}

const tid = (id) => `[data-testid="${id}"]`;

/** Click "Sync now" and return the result shown in the sync log. */
export async function clickSync(page) {
  const before = await page.evaluate(() => Number(document.body.dataset.syncs || 0));
  await page.click(tid('sync'));
  await page.waitForFunction((n) => Number(document.body.dataset.syncs || 0) > n, before, { timeout: 60_000 });
  return page.evaluate(() => window.syncDemo.state().log[0]);
}

export async function addTodo(page, title, project = '') {
  await page.fill(`${tid('todo-form')} input[name="title"]`, title);
  if (project) await page.selectOption(tid('todo-project'), { label: project });
  else await page.selectOption(tid('todo-project'), '');
  await page.click(`${tid('todo-form')} button`);
  await page.waitForSelector(`li[data-title="${title}"]`);
}

export async function addProject(page, name) {
  await page.fill(`${tid('project-form')} input[name="name"]`, name);
  await page.click(`${tid('project-form')} button`);
  await page.waitForFunction((n) => [...document.querySelectorAll('.chip')].some((c) => c.textContent.includes(n)), name);
}

export const todo = (page, title) => page.locator(`li[data-title="${title}"]`);

export async function rename(page, from, to) {
  const input = todo(page, from).locator('input.title');
  await input.fill(to);
  await input.press('Enter');
  await page.waitForSelector(`li[data-title="${to}"]`);
}

export async function toggleDone(page, title) {
  await todo(page, title).locator('input[type="checkbox"]').click();
  await page.waitForSelector(`li.done[data-title="${title}"]`);
}

export async function remove(page, title) {
  await todo(page, title).locator('button.x').click();
  await page.waitForSelector(`li[data-title="${title}"]`, { state: 'detached' });
}

/** The app's online/offline switch (and, if `network`, the browser context's network too). */
export async function setOnline(device, online, { network = true } = {}) {
  if (network) await device.context.setOffline(!online);
  const before = await device.page.evaluate(() => Number(document.body.dataset.syncs || 0));
  await device.page.locator('.switch').click();
  await device.page.waitForFunction((want) => document.querySelector('[data-testid="online-label"]').textContent === want, online ? 'online' : 'offline');
  if (online) {
    // going online syncs at once
    await device.page.waitForFunction((n) => Number(document.body.dataset.syncs || 0) > n, before, { timeout: 60_000 });
  }
}

export const titles = (page) => page.$$eval('li[data-title]', (els) => els.map((e) => e.dataset.title).sort());
export const dump = (page) => page.evaluate(() => window.syncDemo.call('dump'));

/** What the server holds for a user, through the protocol: a pull from the start. */
export async function serverRows(baseUrl, token) {
  const all = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const res = await fetch(`${baseUrl}/api/sync`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ lastSyncAt: cursor, changes: [] }),
    });
    if (res.status !== 200) throw new Error(`pull failed: ${res.status} ${await res.text()}`);
    const body = await res.json();
    all.push(...body.pulledChanges);
    cursor = body.newServerTimestamp;
    if (!body.hasMore) break;
  }
  return all;
}
