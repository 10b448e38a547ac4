// @ts-check
/**
 * One `POST /api/sync` exchange with retries: network errors, timeouts, `5xx`
 * (and `408`/`429`) are retried with exponential backoff and jitter; a `401`
 * asks `getToken({ forceRefresh: true })` for a fresh token once per sync.
 * The same body is re-sent on every attempt (the server is idempotent).
 */

/**
 * @typedef {object} RetryOptions
 * @property {number} [retries]      retries after the first attempt (default 5)
 * @property {number} [baseDelayMs]  first backoff step (default 500)
 * @property {number} [maxDelayMs]   backoff cap (default 30000)
 */

/**
 * @typedef {object} TokenState
 * @property {string|null} token
 * @property {boolean} refreshed     a fresh token was already asked for in this sync
 * @property {(o: {forceRefresh: boolean}) => (string|null|undefined|Promise<string|null|undefined>)} getToken
 */

/**
 * @typedef {object} Exchange
 * @property {boolean} ok
 * @property {number} status         HTTP status, 0 when no response arrived
 * @property {any} [json]            parsed body of a 200
 * @property {{code: string, message: string}} [error]
 */

export const DEFAULT_RETRY = Object.freeze({ retries: 5, baseDelayMs: 500, maxDelayMs: 30000 });

/** Delay before retry number `attempt` (0-based): capped exponential with jitter in [d/2, d]. */
export function backoffDelay(attempt, { baseDelayMs = 500, maxDelayMs = 30000 } = {}, random = Math.random) {
  const d = Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
  return Math.round(d / 2 + random() * (d / 2));
}

const defaultSleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve(undefined);
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/**
 * Ask `getToken` for a token; a throw or an empty answer is `null`.
 * @param {TokenState} state @param {boolean} forceRefresh
 */
export async function fetchToken(state, forceRefresh) {
  try {
    const t = await state.getToken({ forceRefresh });
    state.token = typeof t === 'string' && t ? t : null;
  } catch {
    state.token = null;
  }
  return state.token;
}

/**
 * @param {object} o
 * @param {string} o.url
 * @param {string} o.body              the JSON request body (already serialised)
 * @param {TokenState} o.auth
 * @param {typeof fetch} o.fetch
 * @param {RetryOptions} [o.retry]
 * @param {number} [o.timeoutMs]       per attempt (default 30000)
 * @param {AbortSignal} [o.signal]
 * @param {(ms: number, signal?: AbortSignal) => Promise<unknown>} [o.sleep]
 * @param {() => number} [o.random]
 * @param {{retries: number}} [o.stats]
 * @returns {Promise<Exchange>}
 */
export async function postSync({ url, body, auth, fetch: fetchImpl, retry = {}, timeoutMs = 30000, signal, sleep = defaultSleep, random = Math.random, stats = { retries: 0 } }) {
  const policy = { ...DEFAULT_RETRY, ...retry };
  let attempt = 0;
  /** @type {Exchange} */
  let last = { ok: false, status: 0, error: { code: 'network', message: 'no attempt made' } };
  for (;;) {
    if (signal?.aborted) return { ok: false, status: 0, error: { code: 'aborted', message: 'sync aborted' } };
    if (!auth.token) {
      return { ok: false, status: 0, error: { code: 'no_token', message: 'getToken gave no access token' } };
    }
    const res = await attemptOnce(fetchImpl, url, body, auth.token, timeoutMs, signal);
    let retryAfterMs = 0;
    if (res.kind === 'response' && res.status === 401) {
      if (!auth.refreshed) {
        auth.refreshed = true;
        await fetchToken(auth, true);
        continue; // a fresh token is not a retry of a failure
      }
      return { ok: false, status: 401, error: res.error ?? { code: 'unauthorized', message: 'access token refused' } };
    }
    if (res.kind === 'response' && res.status === 200) {
      if (res.json !== undefined) return { ok: true, status: 200, json: res.json };
      return { ok: false, status: 200, error: { code: 'bad_response', message: 'the response body is not JSON' } };
    }
    if (res.kind === 'response') {
      const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
      const error = res.error ?? { code: `http_${res.status}`, message: `HTTP ${res.status}` };
      last = { ok: false, status: res.status, error };
      if (!retryable) return last;
      retryAfterMs = res.retryAfterMs;
    } else {
      if (signal?.aborted) return { ok: false, status: 0, error: { code: 'aborted', message: 'sync aborted' } };
      last = { ok: false, status: 0, error: { code: res.code, message: res.message } };
    }
    if (attempt >= policy.retries) return last;
    const wait = Math.min(policy.maxDelayMs, Math.max(backoffDelay(attempt, policy, random), retryAfterMs));
    attempt++;
    stats.retries++;
    await sleep(wait, signal);
  }
}

/**
 * @returns {Promise<{kind: 'response', status: number, json?: any, error?: {code: string, message: string}, retryAfterMs: number}
 *   | {kind: 'failure', code: string, message: string}>}
 */
async function attemptOnce(fetchImpl, url, body, token, timeoutMs, signal) {
  const ctl = new AbortController();
  const onAbort = () => ctl.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, timeoutMs);
  try {
    const response = await fetchImpl(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body,
      signal: ctl.signal,
    });
    const text = await response.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const err = json && typeof json === 'object' && json.error && typeof json.error === 'object' ? json.error : null;
    const ra = Number(response.headers.get('Retry-After'));
    return {
      kind: 'response',
      status: response.status,
      json,
      error: err ? { code: String(err.code ?? `http_${response.status}`), message: String(err.message ?? '') } : undefined,
      retryAfterMs: Number.isFinite(ra) && ra > 0 ? ra * 1000 : 0,
    };
  } catch (e) {
    if (timedOut) return { kind: 'failure', code: 'timeout', message: `no answer within ${timeoutMs} ms` };
    return { kind: 'failure', code: 'network', message: String(/** @type {any} */ (e)?.message ?? e) };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}
