// The demo page: renders the worker's state and sends it the user's actions.
// URL hash parameters: device=<name> (one local database per name, so two tabs
// can act as two devices), token=<access token>, storage=auto|opfs|sahpool|memory.
const params = new URLSearchParams(location.hash.slice(1));
const device = (params.get('device') || 'this-device').replace(/[^\w-]/g, '').slice(0, 32) || 'this-device';
const want = params.get('storage') || 'auto';
const tokenKey = `sync-demo:${device}:token`;
let token = params.get('token') || localStorage.getItem(tokenKey) || '';
if (params.get('token')) localStorage.setItem(tokenKey, token);
const syncUrl = new URL(params.get('api') || '/api/sync', location.href).href;

const $ = (sel) => document.querySelector(`[data-testid="${sel}"]`);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
};

// ---------------------------------------------------------------- worker RPC
const worker = new Worker(new URL('./db-worker.js', import.meta.url), { type: 'module' });
let nextId = 1;
const waiting = new Map();
worker.onmessage = ({ data }) => {
  const w = waiting.get(data.id);
  waiting.delete(data.id);
  if (data.error) w?.reject(new Error(data.error));
  else w?.resolve(data.result);
};
function call(method, args) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, method, args });
  });
}

// ---------------------------------------------------------------- state
let online = true;
let lastState = null;
let autoTimer = null;

function claimsOf(t) {
  try {
    return JSON.parse(atob(t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

function userFromToken(t) {
  const payload = claimsOf(t);
  return typeof payload?.sub === 'string' ? payload.sub : null;
}

/** Seconds left before the token expires (negative once it has), or null without `exp`. */
function secondsLeft(t) {
  const exp = claimsOf(t)?.exp;
  return typeof exp === 'number' ? Math.round(exp - Date.now() / 1000) : null;
}

/** Shows the sign-in form with the reason, so an expired token is never a dead end. */
function askForToken(why) {
  $('signin').hidden = false;
  $('signin-why').textContent = why;
  offerDevSignIn();
}

/** Under `make dev` only, the server mints dev tokens (`/api/dev/token`); elsewhere 404. */
async function offerDevSignIn() {
  const url = new URL('/api/dev/token', syncUrl);
  if (!['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) return; // make dev is local
  try {
    const probe = await fetch(url);
    if (!probe.ok) return;
  } catch {
    return;
  }
  $('dev-signin-row').hidden = false;
  $('dev-signin').onclick = async () => {
    const res = await fetch(url, { method: 'POST', body: '{}' });
    if (!res.ok) return setStatus(`dev sign-in failed: HTTP ${res.status}`, 'error');
    localStorage.setItem(tokenKey, (await res.json()).token);
    location.hash = `device=${device}&storage=${want}`;
    location.reload();
  };
}

async function act(method, args) {
  try {
    await call(method, args);
  } catch (e) {
    setStatus(`local write failed: ${e.message}`, 'error');
  }
  await render();
}

let inFlight = 0;
let syncCount = 0;
/** Runs a sync (the worker queues overlapping ones); resolves with its result. */
async function syncNow() {
  if (!online || !token) return null;
  inFlight++;
  $('sync').textContent = 'Syncing…';
  let result = null;
  try {
    result = await call('sync', { url: syncUrl, token });
  } catch (e) {
    setStatus(`sync failed: ${e.message}`, 'error');
  } finally {
    inFlight--;
    if (inFlight === 0) $('sync').textContent = 'Sync now';
  }
  await render();
  if (result?.error?.code === 'unauthorized') askForToken('The server refused the access token (expired, or signed for another project).');
  document.body.dataset.syncs = String(++syncCount);
  return result;
}

function setStatus(text, kind = '') {
  const s = $('status');
  s.textContent = text;
  s.className = `status ${kind}`;
}

// ---------------------------------------------------------------- rendering
async function render() {
  const st = await call('state');
  lastState = st;
  document.documentElement.dataset.theme = st.settings?.theme || 'light';
  $('theme').value = st.settings?.theme || 'light';
  $('storage').textContent = { opfs: 'OPFS', sahpool: 'OPFS (SAH pool)', memory: 'memory only' }[st.storage] ?? st.storage;
  $('sync').disabled = !online || !token;
  $('online-label').textContent = online ? 'online' : 'offline';
  document.body.classList.toggle('offline', !online);

  const names = new Map(st.projects.map((p) => [p.id, p]));
  const me = st.userId;
  // A project owned by someone else is here because they shared it: marked, and my role shown.
  const myRole = (p) => st.members.find((m) => m.projectId === p.id && m.userId === me)?.role ?? 'member';
  $('projects').replaceChildren(
    ...st.projects.map((p) => {
      const mine = p.userId === me;
      const chip = el('span', { className: mine ? 'chip' : 'chip shared', title: p.id }, el('i', { style: `background:${p.color || '#94a3b8'}` }), p.name,
        mine
          ? el('button', { className: 'x', title: 'delete project', textContent: '×', onclick: () => act('deleteProject', { projectId: p.id }) })
          : el('small', { className: 'badge', textContent: `shared · ${myRole(p)}` }));
      chip.dataset.project = p.name;
      chip.dataset.shared = String(!mine);
      return chip;
    }),
  );
  const owned = st.projects.filter((p) => p.userId === me);
  const shareSel = $('share-project');
  const shareChosen = shareSel.value;
  shareSel.replaceChildren(...owned.map((p) => el('option', { value: p.id, textContent: p.name })));
  if (owned.some((p) => p.id === shareChosen)) shareSel.value = shareChosen;
  $('members').replaceChildren(
    ...st.members.map((m) => {
      const p = names.get(m.projectId);
      const li = el('li', { textContent: `${p?.name ?? m.projectId.slice(0, 8)}: ${m.userId === me ? 'me' : m.userId} (${m.role}) ` });
      // only the owner manages members; the server refuses anyone else's change
      if (p?.userId === me) li.append(el('button', { className: 'x', title: 'remove member', textContent: '×', onclick: () => act('removeMember', { memberRowId: m.id }) }));
      li.dataset.member = m.userId;
      li.dataset.role = m.role;
      return li;
    }),
  );
  const sel = $('todo-project');
  const chosen = sel.value;
  sel.replaceChildren(el('option', { value: '', textContent: 'no project' }), ...st.projects.map((p) => el('option', { value: p.id, textContent: p.name })));
  sel.value = names.has(chosen) ? chosen : '';

  $('todos').replaceChildren(
    ...st.todos.map((t) => {
      const title = el('input', { className: 'title', value: t.title, ariaLabel: 'title' });
      title.addEventListener('change', () => title.value.trim() && act('rename', { todoId: t.id, title: title.value.trim() }));
      title.addEventListener('keydown', (e) => e.key === 'Enter' && title.blur());
      const li = el(
        'li',
        { className: t.done ? 'done' : '' },
        el('input', { type: 'checkbox', checked: Boolean(t.done), ariaLabel: 'done', onchange: (e) => act('setDone', { todoId: t.id, done: e.target.checked }) }),
        title,
        t.projectId && names.has(t.projectId) ? el('span', { className: 'tag', textContent: names.get(t.projectId).name }) : '',
        el('button', { className: 'x', title: 'delete', textContent: '×', onclick: () => act('deleteTodo', { todoId: t.id }) }),
      );
      li.dataset.id = t.id;
      li.dataset.title = t.title;
      return li;
    }),
  );
  $('empty').hidden = st.todos.length > 0;

  const rej = $('rejected');
  rej.hidden = st.rejected.length === 0;
  rej.querySelector('ul').replaceChildren(
    ...st.rejected.map((r) =>
      el('li', {},
        el('code', { textContent: r.code }),
        ` ${r.op} ${r.table}: ${r.row?.title ?? r.row?.name ?? r.row?.theme ?? ''} — ${r.message}`,
        r.direction === 'push' ? el('button', { textContent: 'Retry', onclick: () => act('retryRejected', { rejectedId: r.id }) }) : '',
        el('button', { textContent: 'Discard', onclick: () => act('discardRejected', { ids: [r.id] }) })),
    ),
  );

  $('log').replaceChildren(
    ...st.log.map((r) =>
      el('li', { textContent: `${r.at.slice(11, 19)} ${r.ok ? 'ok' : `error ${r.error?.code}`} · ↑${r.pushed} ↓${r.pulled} · rejected ${r.rejected} · ${r.requests} request(s), ${r.retries} retries, ${r.durationMs} ms` }),
    ),
  );

  const last = st.log[0];
  const waitingText = `${st.pending} change${st.pending === 1 ? '' : 's'} waiting`;
  if (!token) setStatus('no access token: paste one above', 'error');
  else if ((secondsLeft(token) ?? 1) <= 0) setStatus('the access token has expired: paste a new one above', 'error');
  else if (!online) setStatus(`offline · ${waitingText}`, 'muted');
  else if (!last) setStatus(`${waitingText} · not synced yet`);
  else if (last.ok) setStatus(`${waitingText} · synced ${last.at.slice(11, 19)} (↑${last.pushed} ↓${last.pulled}${last.rejected ? `, ${last.rejected} refused` : ''})`, 'ok');
  else setStatus(`${waitingText} · last sync failed: ${last.error?.code} ${last.error?.message ?? ''}`, 'error');
  document.body.dataset.pending = String(st.pending);
}

// ---------------------------------------------------------------- wiring
function setOnline(value) {
  online = value;
  $('online').checked = value;
  render();
  if (online) syncNow();
}

function setAuto(on) {
  clearInterval(autoTimer);
  autoTimer = on ? setInterval(() => syncNow(), 5000) : null;
}

async function start() {
  const userId = userFromToken(token);
  $('device').textContent = device;
  $('user').textContent = userId ? `${userId.slice(0, 8)}…` : 'nobody';
  $('user').title = userId ?? '';
  $('signin').hidden = Boolean(userId);
  if (!token) askForToken('This device has no access token yet.');
  else if (!userId) askForToken('That token is not a readable access token.');
  else if ((secondsLeft(token) ?? 1) <= 0) askForToken('The access token of this device has expired.');
  document.title = `${device} · Sync demo`;

  // Two windows of one device share one local database; another device gets its own
  // (the `device=` hash parameter), signed in as the same user.
  const another = `device-${Math.random().toString(36).slice(2, 6)}`;
  $('new-device').href = `#device=${another}&storage=${want}${token ? `&token=${encodeURIComponent(token)}` : ''}`;
  $('signout').addEventListener('click', () => {
    localStorage.removeItem(tokenKey);
    location.hash = `device=${device}&storage=${want}`;
    location.reload();
  });

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    localStorage.setItem(tokenKey, new FormData(e.target).get('token').trim());
    location.hash = `device=${device}&storage=${want}`;
    location.reload();
  });
  $('online').addEventListener('change', (e) => setOnline(e.target.checked));
  $('sync').addEventListener('click', () => syncNow());
  $('auto').addEventListener('change', (e) => setAuto(e.target.checked));
  $('theme').addEventListener('change', (e) => act('setTheme', { theme: e.target.value }));
  $('project-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const colors = ['#ef4444', '#f59e0b', '#10b981', '#3b82f6', '#8b5cf6', '#ec4899'];
    act('addProject', { name: e.target.name.value.trim(), color: colors[Math.floor(Math.random() * colors.length)] });
    e.target.reset();
  });
  $('share-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target;
    if (!f.project.value) return setStatus('share: create a project of your own first', 'error');
    act('addMember', { projectId: f.project.value, memberId: f.member.value.trim().toLowerCase(), role: f.role.value });
    f.member.value = '';
  });
  $('todo-form').addEventListener('submit', (e) => {
    e.preventDefault();
    act('addTodo', { title: e.target.title.value.trim(), projectId: e.target.project.value });
    e.target.title.value = '';
  });

  try {
    const info = await call('init', { device, want, userId });
    await render();
    document.body.dataset.ready = info.storage;
    if (token && userId) syncNow();
  } catch (e) {
    setStatus(`could not open the local database: ${e.message}`, 'error');
    document.body.dataset.ready = 'error';
  }
}

// The service worker caches the app shell so the demo also opens offline.
if ('serviceWorker' in navigator && location.protocol !== 'file:') {
  navigator.serviceWorker.register('sw.js').catch((e) => console.warn('no service worker:', e.message));
}

// For tests and the curious: window.syncDemo.call('dump')
window.syncDemo = { call, syncNow, setOnline, state: () => lastState };
start();
