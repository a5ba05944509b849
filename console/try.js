// The "try it" page: opens a WebSocket as one user (the demo user's token from --dev, or a
// token pasted here), publishes a test message to that user through the admin API, and shows
// every frame that arrives and how the socket closes.

import { api } from "./api.js";
import { byId, el, fmt, show } from "./dom.js";

const page = { session: null, socket: null, user: null, received: 0 };

function status(text, kind = "info") {
  const line = byId("try-status");
  line.className = `status status-${kind}`;
  line.textContent = text;
}

/** The `sub` of a JWT, for display only (the server is what checks the token). */
function subjectOf(token) {
  try {
    const claims = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(claims)).sub ?? null;
  } catch {
    return null;
  }
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${page.session.ws_path}`;
}

function setConnected(open) {
  byId("try-connect").disabled = open;
  byId("try-publish").disabled = !open;
  byId("try-close").disabled = !open;
}

async function tokenToUse() {
  if (page.session.demo_user) {
    const demo = await api.demoToken();
    return demo.token;
  }
  const token = byId("try-token").value.trim();
  if (!token) throw new Error("paste a token first");
  return token;
}

function shown(data) {
  try {
    return JSON.stringify(JSON.parse(data), null, 2);
  } catch {
    return data;
  }
}

async function connect() {
  let token;
  try {
    token = await tokenToUse();
  } catch (error) {
    status(`No token: ${error.message}`, "error");
    return;
  }
  page.user = subjectOf(token);
  status(`Connecting as ${page.user ?? "?"}…`);
  const socket = new WebSocket(wsUrl(), ["bearer", token]);
  page.socket = socket;
  socket.addEventListener("open", () => {
    setConnected(true);
    status(`Connected as ${page.user} (subprotocol ${socket.protocol}). Waiting for messages.`, "ok");
  });
  socket.addEventListener("message", (event) => {
    page.received += 1;
    const text = typeof event.data === "string" ? event.data : "(binary frame)";
    byId("try-messages").prepend(
      el("li", { class: "message" }, el("span", { class: "muted small" }, `#${page.received} · ${fmt.time(Date.now())}`), el("pre", {}, shown(text))),
    );
  });
  socket.addEventListener("close", (event) => {
    setConnected(false);
    let reason = event.reason;
    try {
      const parsed = JSON.parse(event.reason);
      reason = `${parsed.error_code}: ${parsed.message}`;
    } catch {
      // not JSON: shown as is
    }
    status(`Closed with ${event.code}${reason ? ` (${reason})` : ""}.`, event.code === 1000 ? "info" : "error");
  });
}

async function publish() {
  if (!page.user) return;
  try {
    const answer = await api.publish(page.user, {
      type: "console.test",
      text: "Hello from the try-it page",
      sent_at: new Date().toISOString(),
    });
    status(`Published ${answer.published.bytes} bytes (correlation id ${answer.correlation_id}); watch it arrive below.`, "ok");
  } catch (error) {
    status(`Publish failed: ${error.message}`, "error");
  }
}

function ready(session) {
  page.session = session;
  byId("try-login").hidden = true;
  byId("try-main").hidden = false;
  byId("try-token-box").hidden = Boolean(session.demo_user);
  const who = session.demo_user ? `Connect as ${session.demo_user}` : "Connect with this token";
  show(byId("try-connect"), who);
}

async function boot() {
  byId("try-connect").addEventListener("click", connect);
  byId("try-publish").addEventListener("click", publish);
  byId("try-close").addEventListener("click", () => page.socket?.close(1000));
  byId("try-login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.login(byId("try-key").value);
      byId("try-key").value = "";
      ready(await api.session());
    } catch (error) {
      byId("try-login-error").textContent = error.status === 401 ? "That is not the admin key." : error.message;
    }
  });
  try {
    ready(await api.session());
  } catch {
    byId("try-login").hidden = false;
  }
}

boot();
