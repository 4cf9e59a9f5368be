// Talking to this agent's API. The ACL token lives in sessionStorage (gone
// when the tab closes) and travels only in the X-Consul-Token header,
// never in a URL.

const TOKEN_KEY = 'shoal.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new Event('shoal-token'));
}

export class ApiError extends Error {
  constructor(status, message, index) {
    super(message);
    this.status = status;
    this.index = index;
  }

  /** What to show the operator. */
  describe() {
    if (this.status === 403) {
      const hint = token() ? 'The token in use was refused' : 'This agent needs an ACL token';
      return `Access denied (403): ${hint}. Enter the agent's token in the "ACL token" field above. The agent said: ${this.message}`;
    }
    if (this.status === 0) return `The agent did not answer: ${this.message}`;
    return `Error ${this.status}: ${this.message}`;
  }
}

/** One request; resolves to {data, index}, or throws an ApiError. */
export async function request(method, path, { body, signal } = {}) {
  const headers = {};
  const t = token();
  if (t) headers['X-Consul-Token'] = t;
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: 'no-store', credentials: 'omit' });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, error.message, 0);
  }
  const index = Number(response.headers.get('X-Consul-Index')) || 0;
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    const reason = (data && data.error) || text || response.statusText;
    throw new ApiError(response.status, reason, index);
  }
  return { data, index };
}

export const get = (path, options) => request('GET', path, options);

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

const tokenChange = (signal) => new Promise((resolve) => {
  window.addEventListener('shoal-token', resolve, { once: true });
  signal.addEventListener('abort', resolve, { once: true });
});

/**
 * Follows `path` with blocking queries: each answer is passed to
 * onData(data, index) (null for a 404 such as an empty KV prefix), and the
 * next request waits at the agent until the answer changes. Errors go to
 * onError; a 403 waits for a new token, others retry with backoff.
 * Returns a function that stops it.
 */
export function watch(path, onData, onError) {
  const controller = new AbortController();
  const { signal } = controller;
  (async () => {
    let index = 0;
    let backoff = 1000;
    while (!signal.aborted) {
      const sep = path.includes('?') ? '&' : '?';
      const url = index ? `${path}${sep}index=${index}&wait=60s` : path;
      const started = Date.now();
      try {
        const { data, index: next } = await get(url, { signal });
        backoff = 1000;
        if (next !== index || !index) onData(data, next);
        // An index that went back (a restarted agent) starts over.
        index = next < index ? 0 : next;
      } catch (error) {
        if (signal.aborted) return;
        if (error.status === 404 && error.index) {
          onData(null, error.index);
          index = error.index;
        } else {
          onError(error);
          index = 0;
          if (error.status === 403) await tokenChange(signal);
          else { await sleep(backoff, signal); backoff = Math.min(backoff * 2, 30000); }
          continue;
        }
      }
      // Never more than one request a second, whatever the agent answers.
      const spent = Date.now() - started;
      if (spent < 1000) await sleep(1000 - spent, signal);
    }
  })();
  return () => controller.abort();
}

/** Calls load() now, then every `ms` while the tab is visible. */
export function every(ms, load) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (document.visibilityState === 'visible') await load();
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  const onToken = () => load();
  window.addEventListener('shoal-token', onToken);
  return () => { stopped = true; clearTimeout(timer); window.removeEventListener('shoal-token', onToken); };
}
