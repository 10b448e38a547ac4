// The demo's data layer, in a dedicated Worker: SQLite WASM (OPFS when it can),
// the sync tables and triggers, the app's writes, and syncWithWorker().
// The page talks to it with {id, method, args} messages.
import sqlite3InitModule from './vendor/sqlite-wasm/index.mjs';
import {
  exampleSchema as schema,
  installSync,
  listRejected,
  discardRejected,
  retryRejected,
  pendingCount,
  getCursor,
  syncWithWorker,
} from './lib/index.js';

let db = null;
let storage = 'none';
let userId = null;
const log = [];

const now = () => new Date().toISOString();
const id = () => crypto.randomUUID();

async function open({ device, want }) {
  const sqlite3 = await sqlite3InitModule({ print: () => {}, printErr: () => {} });
  const file = `/sync-demo-${device}.sqlite3`;
  const tries = want === 'auto' ? ['opfs', 'sahpool', 'memory'] : [want];
  let lastError = null;
  for (const kind of tries) {
    try {
      if (kind === 'opfs') {
        if (!sqlite3.oo1.OpfsDb) {
          throw new Error(`the "opfs" VFS is not available${self.crossOriginIsolated ? '' : ' (it needs COOP/COEP headers)'}`);
        }
        db = new sqlite3.oo1.OpfsDb(file, 'c');
      } else if (kind === 'sahpool') {
        const pool = await sqlite3.installOpfsSAHPoolVfs({ name: `sync-demo-${device}` });
        db = new pool.OpfsSAHPoolDb(file);
      } else if (kind === 'memory') {
        db = new sqlite3.oo1.DB(':memory:', 'c');
      } else {
        throw new Error(`unknown storage ${kind}`);
      }
      storage = kind;
      break;
    } catch (e) {
      lastError = e;
    }
  }
  if (!db) throw lastError ?? new Error('no storage');
  installSync(db, schema);
  return { storage, sqlite: sqlite3.version.libVersion };
}

function state() {
  const rows = (sql, bind) => db.selectObjects(sql, bind).map((r) => ({ ...r }));
  return {
    storage,
    userId,
    projects: rows('SELECT * FROM projects ORDER BY name, id'),
    members: rows('SELECT * FROM projectMembers ORDER BY projectId, userId'),
    todos: rows('SELECT * FROM todos ORDER BY coalesce(position, 1e300), updatedAt, id'),
    settings: rows('SELECT * FROM userSettings WHERE userId = ?', [userId])[0] ?? null,
    pending: pendingCount(db),
    rejected: listRejected(db),
    cursor: getCursor(db),
    log,
  };
}

/** Every synced row, as stored, for the tests' comparisons. */
function dump() {
  const out = {};
  for (const t of schema.tables) {
    const pk = t.primaryKey.map((k) => `"${k}"`).join(', ');
    out[t.name] = db.selectObjects(`SELECT * FROM "${t.name}" ORDER BY ${pk}`).map((r) => ({ ...r }));
  }
  out.outbox = db.selectObjects('SELECT * FROM sync_outbox ORDER BY id').map((r) => ({ ...r }));
  return out;
}

const methods = {
  async init(opts) {
    userId = opts.userId;
    const info = await open(opts);
    return { ...info, ...state() };
  },
  state,
  dump,
  addProject({ name, color }) {
    db.exec({ sql: 'INSERT INTO projects (id, userId, name, color, updatedAt) VALUES (?, ?, ?, ?, ?)', bind: [id(), userId, name, color, now()] });
  },
  deleteProject({ projectId }) {
    // My todos in it stay, without a project; members' todos cannot become private todos of
    // theirs by my hand (the server would refuse it), so they go with the project and its
    // member rows, children before the parent.
    db.transaction(() => {
      db.exec({ sql: 'UPDATE todos SET projectId = NULL, updatedAt = ? WHERE projectId = ? AND userId = ?', bind: [now(), projectId, userId] });
      db.exec({ sql: 'DELETE FROM todos WHERE projectId = ?', bind: [projectId] });
      db.exec({ sql: 'DELETE FROM projectMembers WHERE projectId = ?', bind: [projectId] });
      db.exec({ sql: 'DELETE FROM projects WHERE id = ?', bind: [projectId] });
    });
  },
  // Sharing: a member row names the project and the member; only the project's owner may
  // write it (the server refuses anyone else's as `forbidden`, and the kit keeps the refusal).
  addMember({ projectId, memberId, role }) {
    // (project, member) is unique on the server: a second share of one member changes the role
    const existing = db.selectValue('SELECT id FROM projectMembers WHERE projectId = ? AND userId = ?', [projectId, memberId]);
    if (existing) db.exec({ sql: 'UPDATE projectMembers SET role = ?, updatedAt = ? WHERE id = ?', bind: [role, now(), existing] });
    else db.exec({ sql: 'INSERT INTO projectMembers (id, projectId, userId, role, updatedAt) VALUES (?, ?, ?, ?, ?)', bind: [id(), projectId, memberId, role, now()] });
  },
  removeMember({ memberRowId }) {
    db.exec({ sql: 'DELETE FROM projectMembers WHERE id = ?', bind: [memberRowId] });
  },
  addTodo({ title, projectId }) {
    const pos = db.selectValue('SELECT coalesce(max(position), 0) + 1 FROM todos');
    db.exec({
      sql: 'INSERT INTO todos (id, userId, projectId, title, done, position, tags, updatedAt) VALUES (?, ?, ?, ?, 0, ?, ?, ?)',
      bind: [id(), userId, projectId || null, title, pos, JSON.stringify([]), now()],
    });
  },
  setDone({ todoId, done }) {
    db.exec({ sql: 'UPDATE todos SET done = ?, updatedAt = ? WHERE id = ?', bind: [done ? 1 : 0, now(), todoId] });
  },
  rename({ todoId, title }) {
    db.exec({ sql: 'UPDATE todos SET title = ?, updatedAt = ? WHERE id = ?', bind: [title, now(), todoId] });
  },
  deleteTodo({ todoId }) {
    db.exec({ sql: 'DELETE FROM todos WHERE id = ?', bind: [todoId] });
  },
  setTheme({ theme }) {
    db.exec({
      sql: `INSERT INTO userSettings (userId, theme, updatedAt) VALUES (?, ?, ?)
            ON CONFLICT (userId) DO UPDATE SET theme = excluded.theme, updatedAt = excluded.updatedAt`,
      bind: [userId, theme, now()],
    });
  },
  async sync({ url, token }) {
    const result = await syncWithWorker({
      db,
      url,
      schema,
      getToken: () => token, // a real app: supabase.auth.getSession() / refreshSession()
      retry: { retries: 2, baseDelayMs: 300, maxDelayMs: 2000 },
      timeoutMs: 15000,
    });
    log.unshift({ at: now(), ...result });
    log.length = Math.min(log.length, 8);
    return result;
  },
  discardRejected({ ids }) {
    discardRejected(db, ids);
  },
  retryRejected({ rejectedId }) {
    retryRejected(db, schema, rejectedId);
  },
};

self.onmessage = async (event) => {
  const { id: callId, method, args } = event.data;
  try {
    if (!methods[method]) throw new Error(`unknown method ${method}`);
    if (method !== 'init' && !db) throw new Error('database not open yet');
    const result = await methods[method](args ?? {});
    self.postMessage({ id: callId, result });
  } catch (e) {
    self.postMessage({ id: callId, error: String(e?.message ?? e) });
  }
};
