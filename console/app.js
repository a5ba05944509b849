// The console page: sign-in, a hash router over four views (#overview, #user/<id>, #actions,
// #refusals), and the actions. Live data is polled: one request for the whole view every 2 s
// (10 s for refusals), only for the view on screen and only while the tab is visible.

import { api, poll } from "./api.js";
import { byId, el, show } from "./dom.js";
import { renderActionLog, renderOverview, renderRefusals, renderUser } from "./views.js";

const VIEWS = ["overview", "user", "actions", "refusals"];
const OVERVIEW_EVERY_MS = 2000;
const USER_EVERY_MS = 2000;
const REFUSALS_EVERY_MS = 10000;
const CONFIRM_WINDOW_MS = 6000;

const state = {
  session: null,
  stopPolling: null,
  /** What this browser did, newest first (kept for the page's life). */
  log: [],
};

let flashTimer = null;
function flash(text, kind = "info") {
  const line = byId("flash");
  line.className = `flash flash-${kind}`;
  line.textContent = text;
  line.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    line.hidden = true;
  }, 8000);
}

function describe(error) {
  const id = error.correlationId ? ` (correlation id ${error.correlationId})` : "";
  return `${error.message}${id}`;
}

/** Runs a poll task; a 401 means the session ended. */
async function guarded(task) {
  try {
    await task();
  } catch (error) {
    if (error.status === 401) {
      signedOut("Your session ended; sign in again.");
      return;
    }
    flash(describe(error), "error");
  }
}

function stopPolling() {
  if (state.stopPolling) state.stopPolling();
  state.stopPolling = null;
}

function signedOut(message) {
  stopPolling();
  state.session = null;
  byId("nav").hidden = true;
  byId("whoami").hidden = true;
  for (const view of VIEWS) byId(`view-${view}`).hidden = true;
  byId("login").hidden = false;
  byId("login-error").textContent = message ?? "";
  byId("login-key").focus();
}

function signedIn(session) {
  state.session = session;
  byId("login").hidden = true;
  byId("nav").hidden = false;
  byId("whoami").hidden = false;
  show(byId("node-label"), "answered by ", el("code", {}, session.node));
  route();
}

function currentRoute() {
  const [view, ...rest] = location.hash.replace(/^#/, "").split("/");
  return { view: VIEWS.includes(view) ? view : "overview", arg: rest.length ? decodeURIComponent(rest.join("/")) : "" };
}

function route() {
  if (!state.session) return;
  stopPolling();
  const { view, arg } = currentRoute();
  for (const name of VIEWS) byId(`view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("#nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "overview") {
    state.stopPolling = poll(() => guarded(async () => renderOverview(await api.overview())), OVERVIEW_EVERY_MS);
  } else if (view === "user") {
    byId("user-id").value = arg;
    if (arg) {
      show(byId("user-result"), el("div", { id: "user-sockets" }), userActions(arg), el("div", { id: "user-history" }));
      state.stopPolling = poll(() => guarded(async () => renderUser(await api.user(arg))), USER_EVERY_MS);
    } else {
      show(byId("user-result"), el("p", { class: "muted" }, "Enter a user id (the sub of the user's token) to see their sockets on every replica."));
      byId("user-id").focus();
    }
  } else if (view === "actions") {
    renderActionLog(state.log);
  } else if (view === "refusals") {
    state.stopPolling = poll(() => guarded(async () => renderRefusals(await api.refusals())), REFUSALS_EVERY_MS);
  }
}

function record(action, user, ok, result, correlationId) {
  state.log.unshift({ at: Date.now(), action, user, ok, result, correlationId });
  state.log.length = Math.min(state.log.length, 50);
  if (currentRoute().view === "actions") renderActionLog(state.log);
}

/** A JSON value when the text parses as JSON, else the text itself (sent as is). */
function messageData(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function testMessage() {
  return { type: "console.test", text: "Test message from the operator console", sent_at: new Date().toISOString() };
}

async function publish(userId, data) {
  try {
    const answer = await api.publish(userId, data);
    const where = answer.position ? ` at offset ${answer.position.offset}` : "";
    record("publish", userId, true, `published ${answer.published.bytes} bytes${where}`, answer.correlation_id);
    flash(`Test message published to ${userId}${where}.`, "ok");
    return answer;
  } catch (error) {
    record("publish", userId, false, error.message, error.correlationId);
    flash(`Publish failed: ${describe(error)}`, "error");
    return null;
  }
}

async function disconnect(userId, reason) {
  try {
    const answer = await api.disconnect(userId, reason);
    const text = `${answer.disconnected} socket${answer.disconnected === 1 ? "" : "s"} closed with ${answer.close_code} (${answer.scope})`;
    record("disconnect", userId, true, text, answer.correlation_id);
    flash(`${userId}: ${text}.`, "ok");
    return answer;
  } catch (error) {
    record("disconnect", userId, false, error.message, error.correlationId);
    flash(`Disconnect failed: ${describe(error)}`, "error");
    return null;
  }
}

/**
 * Makes `button` ask for a second click within a few seconds before `action` runs; the label
 * says what the second click does.
 */
function confirmTwice(button, confirmLabel, action) {
  const label = button.textContent;
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    button.textContent = label;
    button.classList.remove("armed");
  };
  return async (event) => {
    event?.preventDefault();
    if (armed === null) {
      button.textContent = confirmLabel();
      button.classList.add("armed");
      armed = setTimeout(disarm, CONFIRM_WINDOW_MS);
      return;
    }
    disarm();
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
    }
  };
}

/** The panel under a looked-up user: send a test message, disconnect. */
function userActions(userId) {
  const send = el("button", { type: "button", class: "primary", id: "user-publish" }, "Send test message");
  send.addEventListener("click", async () => {
    send.disabled = true;
    try {
      await publish(userId, testMessage());
    } finally {
      send.disabled = false;
    }
  });
  const reason = el("input", { type: "text", id: "user-reason", maxlength: "200", placeholder: "reason shown to the client", "aria-label": "Disconnect reason" });
  const cut = el("button", { type: "button", class: "danger", id: "user-disconnect" }, "Disconnect (4003)…");
  cut.addEventListener(
    "click",
    confirmTwice(cut, () => `Click again to disconnect ${userId}`, () => disconnect(userId, reason.value.trim() || undefined)),
  );
  return el(
    "div",
    { class: "card actions-row" },
    el("h2", {}, "Actions"),
    el("div", { class: "row" }, send, el("span", { class: "muted small" }, "publishes a small JSON test message through the broker")),
    el("div", { class: "row" }, reason, cut),
  );
}

function wireForms() {
  byId("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = byId("login-key");
    try {
      await api.login(input.value);
      input.value = "";
      signedIn(await api.session());
    } catch (error) {
      byId("login-error").textContent = error.status === 401 ? "That is not the admin key." : describe(error);
    }
  });
  byId("logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } finally {
      signedOut("Signed out.");
    }
  });
  byId("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = byId("user-id").value.trim();
    if (id) location.hash = `#user/${encodeURIComponent(id)}`;
  });
  const data = byId("publish-data");
  data.value = JSON.stringify(testMessage(), null, 2);
  byId("publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = byId("publish-user").value.trim();
    if (userId) await publish(userId, messageData(data.value));
  });
  const form = byId("disconnect-form");
  const button = form.querySelector("button");
  const confirmed = confirmTwice(
    button,
    () => `Click again to disconnect ${byId("disconnect-user").value.trim()}`,
    () => disconnect(byId("disconnect-user").value.trim(), byId("disconnect-reason").value.trim() || undefined),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (byId("disconnect-user").value.trim()) confirmed();
  });
}

async function boot() {
  wireForms();
  window.addEventListener("hashchange", route);
  try {
    signedIn(await api.session());
  } catch (error) {
    signedOut(error.status === 401 ? "" : describe(error));
  }
}

boot();
