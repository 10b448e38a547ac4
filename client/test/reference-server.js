// A small in-memory stand-in for the sync Worker, following PROTOCOL.md, so the
// unit tests can run whole sync rounds (several devices, several users) without
// Postgres. Tokens are "user:<uuid>". The real server is exercised by the e2e test.

const PK = { projects: ['id'], todos: ['id'], user_settings: ['user_id'] };
const BOOL = { todos: ['done'] };

export class ReferenceServer {
  constructor({ pageSize = 1000, maxSkewMs = 300_000 } = {}) {
    this.pageSize = pageSize;
    this.maxSkewMs = maxSkewMs;
    this.seq = 0;
    /** @type {Map<string, {table: string, key: string, user: string, row: any, ts: number, seq: number, deleted: boolean}>} */
    this.rows = new Map();
    this.requests = 0;
  }

  /** Handler for helpers.scriptedServer. */
  handle = (req, body) => {
    this.requests++;
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer user:(.+)$/.exec(auth);
    if (!m) return { status: 401, json: { success: false, error: { code: 'unauthorized', message: 'bad token' } } };
    if (!body || !Array.isArray(body.changes)) {
      return { status: 400, json: { success: false, error: { code: 'bad_request', message: 'shape' } } };
    }
    return { status: 200, json: this.sync(m[1], body) };
  };

  sync(user, { lastSyncAt, changes }) {
    const since = lastSyncAt === null ? 0 : Number(lastSyncAt.replace(/^seq-/, ''));
    const acceptedIds = [];
    const rejected = [];
    const echo = new Map();
    for (const c of changes) {
      const pk = PK[c.table];
      if (!pk) {
        rejected.push({ id: c.id, code: 'unknown_table', message: c.table });
        continue;
      }
      const key = pk.map((k) => c.row[k]);
      if (key.some((v) => v == null)) {
        rejected.push({ id: c.id, code: 'missing_primary_key', message: '' });
        continue;
      }
      const id = `${c.table}:${JSON.stringify(key)}`;
      let ts = typeof c.row.updated_at === 'number' ? c.row.updated_at : Date.parse(c.row.updated_at);
      if (!Number.isFinite(ts)) {
        rejected.push({ id: c.id, code: 'invalid_value', message: 'updated_at' });
        continue;
      }
      if (c.row.user_id != null && c.row.user_id !== user) {
        rejected.push({ id: c.id, code: 'forbidden', message: 'not yours' });
        echo.set(id, { table: c.table, key: pk, values: key });
        continue;
      }
      const stored = this.rows.get(id);
      if (stored && stored.user !== user) {
        rejected.push({ id: c.id, code: 'forbidden', message: 'not yours' });
        echo.set(id, { table: c.table, key: pk, values: key });
        continue;
      }
      if (c.table === 'todos' && c.op !== 'delete' && typeof c.row.title !== 'string') {
        rejected.push({ id: c.id, code: 'constraint_violation', message: 'title' });
        echo.set(id, { table: c.table, key: pk, values: key });
        continue;
      }
      for (const b of BOOL[c.table] ?? []) {
        if (c.op !== 'delete' && c.row[b] != null && typeof c.row[b] !== 'boolean') {
          rejected.push({ id: c.id, code: 'invalid_value', message: b });
          echo.set(id, { table: c.table, key: pk, values: key });
        }
      }
      if (rejected.at(-1)?.id === c.id) continue;
      let clamped = false;
      if (ts > Date.now() + this.maxSkewMs) {
        ts = Date.now();
        clamped = true;
      }
      acceptedIds.push(c.id);
      if (stored && stored.ts >= ts) {
        echo.set(id, { table: c.table, key: pk, values: key });
        continue;
      }
      const row = c.op === 'delete' ? {} : { ...c.row };
      for (const k of pk) row[k] = c.row[k];
      row.user_id = user;
      row.updated_at = new Date(ts).toISOString().replace('Z', '000Z'); // microseconds, like Postgres
      this.rows.set(id, { table: c.table, key: id, user, row, ts, seq: ++this.seq, deleted: c.op === 'delete' });
      if (clamped) echo.set(id, { table: c.table, key: pk, values: key });
    }
    const mine = [...this.rows.values()].filter((r) => r.user === user && r.seq > since).sort((a, b) => a.seq - b.seq);
    const page = mine.slice(0, this.pageSize);
    const hasMore = mine.length > page.length;
    const cursorSeq = hasMore ? page.at(-1).seq : this.seq;
    const pulled = page.map((r) => this.asPulled(r));
    const seen = new Set(page.map((r) => r.key));
    for (const [id, e] of echo) {
      if (seen.has(id)) continue;
      const r = this.rows.get(id);
      if (r && r.user === user) pulled.push(this.asPulled(r));
      else pulled.push({ table: e.table, op: 'delete', row: Object.fromEntries(e.key.map((k, i) => [k, e.values[i]])) });
    }
    return { success: true, acceptedIds, rejected, pulledChanges: pulled, newServerTimestamp: `seq-${cursorSeq}`, hasMore };
  }

  asPulled(r) {
    if (r.deleted) {
      const row = {};
      for (const k of PK[r.table]) row[k] = r.row[k];
      row.updated_at = r.row.updated_at;
      return { table: r.table, op: 'delete', row };
    }
    return { table: r.table, op: 'upsert', row: { ...r.row } };
  }

  /** Live rows of a user, per table, as wire rows. */
  dump(user) {
    const out = {};
    for (const r of this.rows.values()) {
      if (r.user !== user || r.deleted) continue;
      (out[r.table] ??= []).push(r.row);
    }
    return out;
  }
}
