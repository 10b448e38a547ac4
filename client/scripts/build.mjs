// Builds the demo PWA into client/dist/: plain files, no bundler.
//   dist/             demo/* (index.html, app.js, db-worker.js, style.css, manifest, icon)
//   dist/lib/         src/*.js (the sync client itself)
//   dist/vendor/sqlite-wasm/  the official @sqlite.org/sqlite-wasm browser build
//   dist/sw.js        the service worker, with the list of files to cache offline
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const require = createRequire(import.meta.url);
const sqliteDir = dirname(require.resolve('@sqlite.org/sqlite-wasm/sqlite3.wasm'));

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
cpSync(join(root, 'demo'), dist, { recursive: true });
mkdirSync(join(dist, 'lib'));
for (const f of readdirSync(join(root, 'src'))) if (f.endsWith('.js')) cpSync(join(root, 'src', f), join(dist, 'lib', f));
mkdirSync(join(dist, 'vendor', 'sqlite-wasm'), { recursive: true });
for (const f of ['index.mjs', 'sqlite3.wasm', 'sqlite3-opfs-async-proxy.js']) {
  const from = join(sqliteDir, f);
  if (!existsSync(from)) throw new Error(`@sqlite.org/sqlite-wasm has no ${f}: version mismatch?`);
  cpSync(from, join(dist, 'vendor', 'sqlite-wasm', f));
}

// the service worker: every built file is part of the offline app shell
const files = [];
const walk = (dir) => {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(relative(dist, p).split('\\').join('/'));
  }
};
rmSync(join(dist, 'sw.template.js'));
walk(dist);
files.sort();
const hash = createHash('sha256');
for (const f of files) hash.update(f).update(readFileSync(join(dist, f)));
const shell = ['./', ...files.filter((f) => f !== 'index.html').map((f) => `./${f}`), './index.html'];
const sw = readFileSync(join(root, 'demo', 'sw.template.js'), 'utf8')
  .replace('__VERSION__', hash.digest('hex').slice(0, 12))
  .replace('__SHELL__', JSON.stringify(shell, null, 2));
writeFileSync(join(dist, 'sw.js'), sw);
console.log(`built ${dist} (${files.length + 1} files)`);
