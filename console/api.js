// The admin API as the page uses it: same-origin fetches carrying the session cookie, the
// CSRF token on every state-changing request, errors as ApiError with the error JSON's fields.

let csrfToken = null;

/** An answer other than 2xx; `code`, `message` and `correlationId` from the error JSON. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error.code ?? null;
    this.correlationId = error.correlation_id ?? null;
  }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

const remember = (answer) => {
  csrfToken = answer?.csrf_token ?? csrfToken;
  return answer;
};

export const api = {
  /** Who is signed in (401 when nobody); keeps the CSRF token. */
  session: () => request("GET", "/api/v1/admin/session").then(remember),
  /** Posts the admin key once; the answer sets the session cookie. */
  login: (key) => request("POST", "/api/v1/admin/login", { key }).then(remember),
  logout: () =>
    request("POST", "/api/v1/admin/logout").finally(() => {
      csrfToken = null;
    }),
  /** Replicas, totals and refusals in one request (what the overview polls). */
  overview: () => request("GET", "/api/v1/admin/overview"),
  refusals: () => request("GET", "/api/v1/admin/refusals"),
  user: (userId) => request("GET", `/api/v1/admin/users/${encodeURIComponent(userId)}`),
  publish: (userId, data) => request("POST", "/api/v1/admin/publish", { user_id: userId, data }),
  disconnect: (userId, reason) => request("POST", "/api/v1/admin/disconnect", { user_id: userId, reason }),
  demoToken: () => request("POST", "/api/v1/admin/demo-token"),
};

/**
 * Calls `task` now and then `everyMs` after each call ends (never two at once), skipping
 * while the tab is hidden. Returns a function that stops it.
 */
export function poll(task, everyMs) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try {
        await task();
      } catch (error) {
        console.warn("poll failed", error);
      }
    }
    if (!stopped) timer = setTimeout(run, everyMs);
  };
  const wake = () => {
    if (!document.hidden && timer !== null) {
      clearTimeout(timer);
      run();
    }
  };
  document.addEventListener("visibilitychange", wake);
  run();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener("visibilitychange", wake);
  };
}
