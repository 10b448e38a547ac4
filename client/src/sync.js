// @ts-check
/**
 * `syncWithWorker()`: push the outbox to `POST /api/sync`, settle the answer,
 * pull until `hasMore` is false. One sync at a time per database.
 */

import { fetchToken, postSync } from './http.js';
import { getCursor, maxOutboxId, pendingCount, readOutbox, rejectLocally, settleResponse } from './store.js';
import { schemaHash } from './schema-hash.js';
import { EncodeError, encodeChange, errorText } from './transform.js';

/** @typedef {import('./schema.js').Schema} Schema */
/** @typedef {import('./http.js').RetryOptions} RetryOptions */

/**
 * @typedef {object} SyncOptions
 * @property {any} db            an `@sqlite.org/sqlite-wasm` oo1 database with `installSync()` applied
 * @property {string} url        the sync endpoint, e.g. `https://sync.example.com/api/sync`
 * @property {(o: {forceRefresh: boolean}) => (string|null|undefined|Promise<string|null|undefined>)} getToken
 *   the user's current access token; with `forceRefresh: true` (after a `401`) a freshly refreshed one
 * @property {Schema} schema
 * @property {typeof fetch} [fetch]       defaults to the global `fetch`
 * @property {number} [batchSize]         changes per request (default 500; halved on `413`)
 * @property {number} [maxRequests]       bound on requests per call (default 50)
 * @property {RetryOptions} [retry]       backoff for network errors and `5xx`
 * @property {number} [timeoutMs]         per request (default 30000)
 * @property {AbortSignal} [signal]       cancels waiting and in-flight requests (nothing local is lost)
 * @property {boolean} [sendSchemaHash]   send the schema's hash (default true): a server whose schema
 *   differs answers `409 schema_mismatch` and applies nothing; the outbox stays as it is
 */

/**
 * @typedef {object} SyncResult
 * @property {boolean} ok              true when every request succeeded and nothing is left to pull
 * @property {number} pushed           outbox changes the server accepted (deleted locally)
 * @property {number} rejected         changes moved to `sync_rejected` (by the server or the client)
 * @property {{id: number, table: string, op: string, code: string, message: string}[]} rejectedChanges
 * @property {number} pulled           pulled changes applied locally
 * @property {number} skipped          pulled changes kept back because a newer local change is pending
 * @property {number} ignored          pulled changes for tables not in the schema
 * @property {number} failed           pulled changes that could not be applied (kept in `sync_rejected`)
 * @property {number} pending          changes still in the outbox afterwards
 * @property {number} requests         HTTP exchanges that got a `200`
 * @property {number} retries          retried attempts (network errors, `5xx`)
 * @property {boolean} hasMore         the server has more to pull (only when `maxRequests` was hit)
 * @property {string|null} cursor      the stored cursor afterwards
 * @property {{code: string, message: string, status?: number}|null} error  why the sync stopped early
 * @property {number} durationMs
 */

/** @type {WeakMap<object, {running: Promise<SyncResult>, queued: Promise<SyncResult>|null}>} */
const inFlight = new WeakMap();

/**
 * Synchronise the local database with the server. Never throws for network,
 * server or data problems: every outcome is in the returned result (`ok`,
 * counts, `error`); the outbox keeps whatever was not settled.
 *
 * Calls for the same `db` never overlap: a call made while a sync runs waits
 * for it and then runs once more (concurrent waiters share that second run).
 * @param {SyncOptions} options
 * @returns {Promise<SyncResult>}
 */
export function syncWithWorker(options) {
  const { db, url, getToken, schema } = options ?? /** @type {any} */ ({});
  if (!db || typeof db.exec !== 'function') throw new TypeError('syncWithWorker: db must be an open sqlite-wasm oo1 database');
  if (typeof url !== 'string' || !url) throw new TypeError('syncWithWorker: url is required');
  if (typeof getToken !== 'function') throw new TypeError('syncWithWorker: getToken must be a function');
  if (!schema?.byName) throw new TypeError('syncWithWorker: schema must come from defineSchema()');

  const slot = inFlight.get(db);
  if (!slot) {
    const running = runLocked(options).finally(() => advance(db));
    inFlight.set(db, { running, queued: null });
    return running;
  }
  if (!slot.queued) {
    slot.queued = slot.running.then(
      () => undefined,
      () => undefined,
    ).then(() => {
      const running = runLocked(options).finally(() => advance(db));
      inFlight.set(db, { running, queued: null });
      return running;
    });
  }
  return slot.queued;
}

/** Is a sync running (or queued) for this database? */
export function isSyncing(db) {
  return inFlight.has(db);
}

function advance(db) {
  const slot = inFlight.get(db);
  if (slot && !slot.queued) inFlight.delete(db);
}

/**
 * Across tabs and workers sharing one persistent database file, the Web Locks
 * API (where there is one) keeps syncs apart too; in-memory databases are
 * private to their connection and need no such lock.
 * @param {SyncOptions} o @returns {Promise<SyncResult>}
 */
function runLocked(o) {
  const locks = /** @type {any} */ (globalThis.navigator)?.locks;
  const file = typeof o.db.filename === 'string' ? o.db.filename : '';
  if (!locks?.request || !file || file === ':memory:' || file.startsWith('file::memory:')) return runSync(o);
  return locks.request(`sync-client:${file}`, () => runSync(o));
}

/** @param {SyncOptions} o @returns {Promise<SyncResult>} */
async function runSync(o) {
  const started = Date.now();
  const { db, schema } = o;
  const fetchImpl = o.fetch ?? globalThis.fetch.bind(globalThis);
  const maxRequests = o.maxRequests ?? 50;
  let limit = Math.max(1, o.batchSize ?? 500);
  /** @type {SyncResult} */
  const result = {
    ok: false,
    pushed: 0,
    rejected: 0,
    rejectedChanges: [],
    pulled: 0,
    skipped: 0,
    ignored: 0,
    failed: 0,
    pending: 0,
    requests: 0,
    retries: 0,
    hasMore: false,
    cursor: null,
    error: null,
    durationMs: 0,
  };
  const finish = (error) => {
    result.error = error;
    result.ok = !error && !result.hasMore;
    try {
      result.pending = pendingCount(db);
      result.cursor = getCursor(db);
    } catch (e) {
      result.error ??= { code: 'local', message: errorText(e) };
      result.ok = false;
    }
    result.durationMs = Date.now() - started;
    return result;
  };

  /** @type {import('./http.js').TokenState} */
  const auth = { token: null, refreshed: false, getToken: o.getToken };
  if (!(await fetchToken(auth, false))) {
    return finish({ code: 'no_token', message: 'getToken gave no access token' });
  }

  let hash;
  if (o.sendSchemaHash !== false) {
    try {
      hash = await schemaHash(schema);
    } catch (e) {
      return finish({ code: 'local', message: `cannot hash the schema: ${errorText(e)}` });
    }
  }

  let cursor;
  let upToId;
  try {
    cursor = getCursor(db);
    upToId = maxOutboxId(db); // changes written during this sync wait for the next one
  } catch (e) {
    return finish({ code: 'local', message: errorText(e) });
  }
  let afterId = 0;
  let hasMore = false;
  const stats = { retries: 0 };

  try {
    return await loop();
  } catch (e) {
    // a local database error outside the steps above: report it, lose nothing
    return finish({ code: 'local', message: errorText(e) });
  }

  async function loop() {
    for (;;) {
      if (result.requests >= maxRequests) {
        result.hasMore = hasMore;
        return finish(null);
      }
      // 1. read the outbox (none while the server is still paging a pull)
      let entries = [];
      /** @type {any[]} */
      const changes = [];
      try {
        entries = hasMore ? [] : readOutbox(db, { afterId, upToId, limit });
        // 2. transform to the server's format; what cannot be encoded is kept aside
        const unsendable = [];
        for (const e of entries) {
          try {
            changes.push(encodeChange(schema, e));
          } catch (err) {
            if (!(err instanceof EncodeError)) throw err;
            unsendable.push({ id: e.id, table: e.tbl, op: e.op, code: err.code, message: err.message });
          }
        }
        rejectLocally(db, unsendable);
        noteRejected(result, unsendable);
      } catch (e) {
        return finish({ code: 'local', message: errorText(e) });
      }

      // 3. one batch to the server
      const body = JSON.stringify(hash ? { lastSyncAt: cursor, changes, schemaHash: hash } : { lastSyncAt: cursor, changes });
      const res = await postSync({
        url: o.url,
        body,
        auth,
        fetch: fetchImpl,
        retry: o.retry,
        timeoutMs: o.timeoutMs,
        signal: o.signal,
        stats,
      });
      result.retries = stats.retries;
      if (!res.ok && res.status === 413 && changes.length > 0) {
        if (changes.length > 1) {
          limit = Math.max(1, Math.ceil(changes.length / 2));
          continue; // same entries again, in smaller batches
        }
        const entry = entries.find((e) => e.id === changes[0].id) ?? entries[0];
        const big = [{ id: entry.id, table: entry.tbl, op: entry.op, code: 'payload_too_large', message: res.error?.message ?? 'change too large to send' }];
        try {
          rejectLocally(db, big);
        } catch (e) {
          return finish({ code: 'local', message: errorText(e) });
        }
        noteRejected(result, big);
        afterId = entries[entries.length - 1].id;
        continue;
      }
      // Any other refusal (a 409 schema_mismatch among them) settles nothing: the outbox
      // and every local row stay as they are, and the error says why.
      if (!res.ok) return finish({ ...(res.error ?? { code: 'unknown', message: '' }), status: res.status });

      const problem = checkResponse(res.json);
      if (problem) return finish({ code: 'bad_response', message: problem, status: 200 });
      result.requests++;

      // 4 + 5. settle: delete accepted, keep rejected, apply pulled, store cursor
      try {
        const s = settleResponse(db, schema, {
          sentIds: changes.map((c) => c.id),
          acceptedIds: res.json.acceptedIds,
          rejected: res.json.rejected,
          pulledChanges: res.json.pulledChanges,
          cursor: res.json.newServerTimestamp,
        });
        result.pushed += s.accepted;
        noteRejected(result, s.rejected);
        result.pulled += s.applied;
        result.skipped += s.skipped;
        result.ignored += s.ignored;
        result.failed += s.failed;
      } catch (e) {
        return finish({ code: 'local', message: `could not apply the response: ${errorText(e)}` });
      }
      cursor = res.json.newServerTimestamp;
      hasMore = res.json.hasMore === true;
      if (entries.length) afterId = entries[entries.length - 1].id;
      // repeat while the server has more, or more of the outbox is waiting
      if (!hasMore && (entries.length < limit || readOutbox(db, { afterId, upToId, limit: 1 }).length === 0)) {
        return finish(null);
      }
    }
  }
}

function noteRejected(result, items) {
  result.rejected += items.length;
  for (const r of items) result.rejectedChanges.push({ id: r.id, table: r.table, op: r.op, code: r.code, message: r.message });
}

/** Shape check of a `200` body; a string says what is wrong. */
function checkResponse(j) {
  if (!j || typeof j !== 'object') return 'the response is not an object';
  if (j.success !== true) return 'success is not true';
  if (!Array.isArray(j.acceptedIds)) return 'acceptedIds is not an array';
  if (!Array.isArray(j.rejected)) return 'rejected is not an array';
  if (!Array.isArray(j.pulledChanges)) return 'pulledChanges is not an array';
  if (typeof j.newServerTimestamp !== 'string' || !j.newServerTimestamp) return 'newServerTimestamp is not a string';
  return null;
}
