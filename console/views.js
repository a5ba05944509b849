// Rendering of each view from the admin API's answers. Pure functions of the data: they build
// nodes with `el` (text only) and hand them to `show`.

import { badge, el, fmt, show } from "./dom.js";

/** Labels of the refusal reasons (the `outcome` values of ws_connections_opened_total). */
export const REASONS = {
  auth_failed: "token refused",
  origin_refused: "origin refused",
  quota_user: "per-user quota",
  quota_global: "node full",
  draining: "draining",
};

const stat = (label, value, note) =>
  el("div", { class: "stat" }, el("div", { class: "stat-value" }, value), el("div", { class: "stat-label" }, label), note ? el("div", { class: "stat-note" }, note) : null);

const table = (head, rows, empty) =>
  rows.length === 0
    ? el("p", { class: "muted empty" }, empty)
    : el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows));

/** Where the figures came from: `texts.redis` or `texts.local`, or the Redis error. */
function sourceText(cluster, texts) {
  if (cluster?.error) return [badge("Redis unreachable", "bad"), ` ${cluster.error}`];
  return cluster?.source === "redis" ? texts.redis : texts.local;
}

/** The overview: totals, one row per replica. */
export function renderOverview(data) {
  const refused = Object.values(data.refusals.totals).reduce((a, b) => a + b, 0);
  show(
    document.getElementById("overview-source"),
    sourceText(data.cluster, {
      redis: "Every replica sharing this Redis, from the heartbeat each one writes every 2 s.",
      local: "This node only: no Redis is configured, so there is no other replica to list.",
    }),
  );
  show(
    document.getElementById("overview-totals"),
    stat("replicas", fmt.number(data.totals.nodes), data.totals.draining ? `${data.totals.draining} draining` : null),
    stat("connections", fmt.number(data.totals.connections)),
    stat("users online", fmt.number(data.totals.users), data.totals.nodes > 1 ? "sum over replicas" : null),
    stat("messages / s", fmt.rate(data.totals.messages_per_s)),
    stat("refused (15 min)", fmt.number(refused)),
  );
  const now = Date.now();
  const rows = data.nodes.map((node) =>
    el(
      "tr",
      { dataset: { node: node.id } },
      el("td", {}, el("code", {}, node.id), node.this_node ? [" ", badge("this node", "neutral")] : null),
      el("td", {}, node.version),
      el("td", { title: node.started_at }, `${fmt.duration(now - Date.parse(node.started_at))} ago`),
      el("td", { class: "num", dataset: { field: "connections" } }, fmt.number(node.connections)),
      el("td", { class: "num" }, fmt.number(node.users)),
      el("td", { class: "num" }, fmt.rate(node.messages_per_s)),
      el("td", {}, `${node.broker.kind} `, badge(node.broker.state, node.broker.state === "up" ? "ok" : "bad")),
      el("td", {}, node.draining ? badge("draining", "warn") : badge("serving", "ok")),
      el("td", { class: "muted", title: node.updated_at }, fmt.time(Date.parse(node.updated_at))),
    ),
  );
  show(
    document.getElementById("overview-nodes"),
    table(["replica", "version", "up", "connections", "users", "msg/s", "broker", "state", "heartbeat"], rows, "No replica answered."),
  );
  show(document.getElementById("overview-updated"), `updated ${fmt.time(now)} · refreshes every 2 s`);
}

function historyBlock(data) {
  if (data.history_error) return el("p", { class: "error" }, `History unavailable: ${data.history_error}`);
  if (!data.history) {
    return el(
      "p",
      { class: "muted" },
      "No message history is available on this server, so past messages cannot be shown here. ",
      "Messages published from here go live to the sockets above.",
    );
  }
  const rows = [...data.history].reverse().map((entry) =>
    el(
      "tr",
      {},
      el("td", { class: "num" }, entry.offset),
      el("td", { title: fmt.dateTime(entry.time_ms) }, fmt.time(entry.time_ms)),
      el("td", {}, el("code", { class: "payload" }, typeof entry.data === "string" ? entry.data : JSON.stringify(entry.data))),
    ),
  );
  return [
    el("p", { class: "muted" }, `Epoch ${data.position.epoch}, last offset ${data.position.offset}. Newest first.`),
    table(["offset", "time", "message"], rows, "No message in the history."),
  ];
}

/** The lookup's answer: online or not, each socket, the history (the actions panel between
 * them is the page's and stays as it is across refreshes). */
export function renderUser(data) {
  const now = Date.now();
  const replicas = new Set(data.connections.map((c) => c.node)).size;
  const rows = data.connections.map((c) =>
    el(
      "tr",
      { dataset: { conn: String(c.conn) } },
      el("td", {}, el("code", {}, c.node), c.this_node ? [" ", badge("this node")] : null),
      el("td", { class: "num" }, c.conn),
      el("td", {}, fmt.dateTime(c.since_ms)),
      el("td", {}, fmt.duration(now - c.since_ms)),
      el("td", {}, c.protocol),
      el("td", {}, c.last_position ? el("code", {}, c.last_position) : "–"),
    ),
  );
  const summary = data.online
    ? `${data.connections.length} socket${data.connections.length === 1 ? "" : "s"} on ${replicas} replica${replicas === 1 ? "" : "s"}`
    : "no open socket on any replica";
  show(
    document.getElementById("user-sockets"),
    el(
      "div",
      { class: "card" },
      el(
        "div",
        { class: "user-head" },
        el("h2", {}, el("code", {}, data.user_id)),
        data.online ? badge("online", "ok") : badge("offline", "bad"),
        el("span", { id: "user-summary", class: "muted" }, summary),
      ),
      el(
        "p",
        { class: "muted small" },
        sourceText(data.cluster, {
          redis: "This node's sockets from its own hubs; other replicas' from their connection leases in Redis.",
          local: "Sockets of this node only: no Redis is configured, so there is no other replica to ask.",
        }),
      ),
      table(["replica", "connection", "connected since", "for", "protocol", "last delivered"], rows, "No socket."),
    ),
  );
  show(document.getElementById("user-history"), el("div", { class: "card" }, el("h2", {}, "Last messages"), historyBlock(data)));
  show(document.getElementById("user-updated"), `updated ${fmt.time(now)} · refreshes every 2 s`);
}

/** One line of the action log. */
export function actionRow(entry) {
  return el(
    "tr",
    {},
    el("td", {}, fmt.time(entry.at)),
    el("td", {}, entry.action),
    el("td", {}, el("code", {}, entry.user)),
    el("td", {}, entry.ok ? badge(entry.result, "ok") : badge(entry.result, "bad")),
    el("td", {}, el("code", { class: "small" }, entry.correlationId ?? "")),
  );
}

export function renderActionLog(entries) {
  show(
    document.getElementById("action-log"),
    table(["time", "action", "user", "result", "correlation id"], entries.map(actionRow), "Nothing done yet from this browser."),
  );
}

/** Refusals: totals per reason and one stacked bar per minute. */
export function renderRefusals(data) {
  const reasons = data.reasons;
  show(
    document.getElementById("refusals-totals"),
    reasons.map((reason) => stat(REASONS[reason] ?? reason, fmt.number(data.totals[reason] ?? 0), reason)),
  );
  const max = Math.max(1, ...data.minutes.map((m) => reasons.reduce((sum, r) => sum + (m.counts[r] ?? 0), 0)));
  const legend = el("div", { class: "legend" }, reasons.map((r) => el("span", { class: `key key-${r}` }, REASONS[r] ?? r)));
  const rows = [...data.minutes].reverse().map((minute) => {
    const total = reasons.reduce((sum, r) => sum + (minute.counts[r] ?? 0), 0);
    const bar = el("div", { class: "bar" });
    for (const reason of reasons) {
      const n = minute.counts[reason] ?? 0;
      if (n === 0) continue;
      const segment = el("span", { class: `seg key-${reason}`, title: `${REASONS[reason] ?? reason}: ${n}` });
      segment.style.width = `${(100 * n) / max}%`;
      bar.append(segment);
    }
    return el(
      "tr",
      {},
      el("td", {}, fmt.time(minute.start_ms)),
      el("td", { class: "bar-cell" }, bar),
      reasons.map((r) => el("td", { class: `num ${minute.counts[r] ? "" : "zero"}` }, minute.counts[r] ?? 0)),
      el("td", { class: "num total" }, total),
    );
  });
  show(
    document.getElementById("refusals-chart"),
    legend,
    el(
      "table",
      { class: "refusals" },
      el("thead", {}, el("tr", {}, el("th", {}, "minute"), el("th", {}, ""), reasons.map((r) => el("th", { class: "num" }, REASONS[r] ?? r)), el("th", { class: "num" }, "total"))),
      el("tbody", {}, rows),
    ),
    el(
      "p",
      { class: "muted small" },
      sourceText(data.cluster, { redis: "Summed over every replica sharing this Redis.", local: "This node only (no Redis configured)." }),
    ),
  );
  show(document.getElementById("refusals-updated"), `updated ${fmt.time(Date.now())} · refreshes every 10 s`);
}
