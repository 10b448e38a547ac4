// Shared test helpers: a real sqlite-wasm database, a scripted HTTP server.
import http from 'node:http';
import sqlite3InitModule from '@sqlite.org/sqlite-wasm';
import { installSync } from '../src/ddl.js';
import { exampleSchema } from '../src/schema.js';

let sqlite3Promise;
/** The sqlite-wasm module (loaded once per test process). */
export function sqlite3() {
  sqlite3Promise ??= sqlite3InitModule({ print: () => {}, printErr: () => {} });
  return sqlite3Promise;
}

/** A fresh in-memory database with the example schema and sync tables installed. */
export async function openDb(schema = exampleSchema) {
  const s = await sqlite3();
  const db = new s.oo1.DB(':memory:', 'c');
  installSync(db, schema);
  return db;
}

export const rows = (db, sql, bind) => db.selectObjects(sql, bind).map((r) => ({ ...r }));
export const outbox = (db) =>
  rows(db, 'SELECT * FROM sync_outbox ORDER BY id').map((r) => ({ ...r, row: JSON.parse(r.row) }));

export const USER = '11111111-1111-4111-8111-111111111111';
export const OTHER = '22222222-2222-4222-8222-222222222222';
export const uuid = (n) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/**
 * A real HTTP server on 127.0.0.1 whose answers come from `handler(req, body, n)`
 * (n = request number, from 1). The handler returns {status, json, headers} or
 * 'destroy' to drop the connection without an answer.
 */
export async function scriptedServer(handler) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let data = '';
    for await (const chunk of req) data += chunk;
    let body;
    try {
      body = JSON.parse(data);
    } catch {
      body = data;
    }
    requests.push({ method: req.method, url: req.url, headers: req.headers, body });
    const out = await handler(req, body, requests.length);
    if (out === 'destroy') {
      req.socket.destroy();
      return;
    }
    res.writeHead(out.status ?? 200, { 'Content-Type': 'application/json', ...(out.headers ?? {}) });
    res.end(typeof out.json === 'string' ? out.json : JSON.stringify(out.json));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/api/sync`,
    requests,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections?.();
        server.close(r);
      }),
  };
}

/** A `200` body accepting every change of `body`. */
export function acceptAll(body, extra = {}) {
  return {
    success: true,
    acceptedIds: body.changes.map((c) => c.id),
    rejected: [],
    pulledChanges: [],
    newServerTimestamp: 'c1',
    hasMore: false,
    ...extra,
  };
}

export const fastRetry = { retries: 3, baseDelayMs: 5, maxDelayMs: 20 };
