#!/usr/bin/env node
// End-to-end test of the TS client in headless Chromium against the real server:
//
//   redis-server + websocket-service (SERVER_BIN, default target/debug/websocket-service) on free
//   ports; a page on localhost that uses dist/index.js with a token endpoint. Two scenarios
//   (E2E_SCENARIOS, default "legacy,v2"):
//
//   legacy: publish through Redis -> the page shows the message; SIGTERM the server (1012) and
//     start it again on the same port -> the page reconnects by itself and shows the next one.
//   v2: the page loads its state and position from a state endpoint, and runs the client with
//     protocol v2 from that position; messages are published durably through the publish API.
//     The server the page uses (A) is restarted twice while a second one sharing the Redis (B)
//     publishes: a gap of 2 messages is replayed on resume (recovered:true); a gap of 5, over
//     history.max_replay (3), is not (recovered:false): the page refetches its state. The page
//     must show every message exactly once, in order, and the client must never hand it a
//     durable message twice.
//
// Needs: `npm run build` first, redis-server, /usr/bin/chromium (CHROMIUM_BIN to override).
// Writes screenshots to E2E_SCREENSHOT (default /tmp/websocket-service-e2e/browser.png) and,
// for v2, the same name ending in -v2.png.

import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const clientRoot = resolve(here, "..");
const repoRoot = resolve(clientRoot, "..", "..");
const SERVER_BIN = resolve(repoRoot, process.env.SERVER_BIN ?? "target/debug/websocket-service");
const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SCREENSHOT = process.env.E2E_SCREENSHOT ?? "/tmp/websocket-service-e2e/browser.png";
const SCREENSHOT_V2 = SCREENSHOT.replace(/(\.png)?$/, "-v2.png");
const SCENARIOS = (process.env.E2E_SCENARIOS ?? "legacy,v2").split(",").map((s) => s.trim()).filter(Boolean);
const SECRET = "e2e-secret-0123456789abcdef";
const API_KEY = "e2e-publish-key-0123456789";
const USER = "teacher-e2e";
const USER_V2 = "teacher-e2e-v2";
// The most messages replayed on one resume: the v2 scenario misses 2 (replayed), then 5 (not).
const MAX_REPLAY = 3;
const DEADLINE_MS = 10_000;
const started = Date.now();

const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${text}`);

// ------------------------------------------------------------------------------------------
// Helpers: ports, waiting, Redis (RESP over a socket, no client library), JWT (HS256)
// ------------------------------------------------------------------------------------------

// `count` distinct free ports: every listener stays open until all are chosen, so the system
// cannot hand out the same port twice (one at a time it may, and two services then collide).
async function freePorts(count) {
  const servers = [];
  for (let i = 0; i < count; i++) {
    const server = net.createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    servers.push(server);
  }
  const ports = servers.map((server) => server.address().port);
  await Promise.all(servers.map((server) => { server.close(); return once(server, "close"); }));
  return ports;
}

async function waitFor(what, probe, deadlineMs = DEADLINE_MS) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch {
      // not yet
    }
    if (Date.now() > until) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Sends one Redis command and parses one reply (enough RESP2 for PING, PUBLISH, PUBSUB). */
function redis(port, ...args) {
  return new Promise((resolvePromise, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let buffer = Buffer.alloc(0);
    socket.setTimeout(2000, () => socket.destroy(new Error("redis timeout")));
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const parsed = parseResp(buffer, 0);
      if (parsed) {
        socket.end();
        if (parsed.value instanceof Error) reject(parsed.value);
        else resolvePromise(parsed.value);
      }
    });
    const parts = args.map((a) => Buffer.from(String(a)));
    socket.write(
      Buffer.concat([
        Buffer.from(`*${parts.length}\r\n`),
        ...parts.flatMap((p) => [Buffer.from(`$${p.length}\r\n`), p, Buffer.from("\r\n")]),
      ]),
    );
  });
}

function parseResp(buf, at) {
  const eol = buf.indexOf("\r\n", at);
  if (eol < 0) return null;
  const line = buf.toString("utf8", at + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buf[at])) {
    case "+":
      return { value: line, end: next };
    case "-":
      return { value: new Error(line), end: next };
    case ":":
      return { value: Number(line), end: next };
    case "$": {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      if (buf.length < next + n + 2) return null;
      return { value: buf.toString("utf8", next, next + n), end: next + n + 2 };
    }
    case "*": {
      const items = [];
      let pos = next;
      for (let i = 0; i < Number(line); i++) {
        const item = parseResp(buf, pos);
        if (!item) return null;
        items.push(item.value);
        pos = item.end;
      }
      return { value: items, end: pos };
    }
    default:
      return { value: new Error(`unexpected RESP reply ${line}`), end: next };
  }
}

const b64url = (data) => Buffer.from(data).toString("base64url");

function jwt(sub, ttlSeconds) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({ sub, iat: now, exp: now + ttlSeconds, jti: randomUUID() }));
  const signature = createHmac("sha256", SECRET).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

// ------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------

const children = new Set();

function startProcess(name, command, args, env = process.env) {
  const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  child.log = "";
  const append = (chunk) => {
    child.log += chunk.toString();
  };
  child.stdout.on("data", append);
  child.stderr.on("data", append);
  child.exited = once(child, "exit").then(([code, signal]) => {
    children.delete(child);
    return { code, signal };
  });
  child.on("error", (error) => {
    child.log += `\nspawn error: ${error.message}`;
  });
  child.label = name;
  children.add(child);
  return child;
}

async function startRedis(port) {
  const child = startProcess("redis-server", "redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
  ]);
  await waitFor("redis-server to answer PING", async () => (await redis(port, "PING")) === "PONG");
  return child;
}

async function startServer(port, redisPort, name = "websocket-service") {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WS__")));
  Object.assign(env, {
    WS__SERVER__BIND: `127.0.0.1:${port}`,
    WS__SERVER__WORKERS: "1",
    WS__REDIS__URL: `redis://127.0.0.1:${redisPort}`,
    WS__AUTH__JWT_SECRET: SECRET,
    WS__API__PUBLISH_API_KEY: API_KEY,
    WS__HISTORY__MAX_REPLAY: String(MAX_REPLAY),
    // Short drain: one socket, closed at once with 1012; the restart should take seconds.
    WS__SHUTDOWN__DRAIN_TIMEOUT_S: "2",
    WS__TELEMETRY__LOG_FORMAT: "json",
  });
  const child = startProcess(name, SERVER_BIN, ["--config", join(repoRoot, "settings.toml")], env);
  await waitFor("the server's /readyz to answer 200", async () => {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${child.log}`);
    const response = await fetch(`http://127.0.0.1:${port}/readyz`);
    return response.status === 200;
  });
  return child;
}

/** SIGTERM (the drain closes the page's socket with 1012) and wait for a clean exit. */
async function stopServer(server) {
  server.kill("SIGTERM");
  const exit = await server.exited;
  if (exit.code !== 0) throw new Error(`${server.label} exited with ${JSON.stringify(exit)} after SIGTERM:\n${server.log}`);
}

// ------------------------------------------------------------------------------------------
// The v2 scenario's backend: the user's state (the items) and the history position
// ------------------------------------------------------------------------------------------

// What a platform backend keeps for USER_V2: the items it notified (its state), and the
// history position of the last durable publish (what the publish API answered).
const backend = { items: [], position: null };

/** The state endpoint: the position is read BEFORE the items (docs/FRONTEND.md). */
function readState() {
  const position = backend.position;
  return { items: [...backend.items], position };
}

/** POST /api/v1/publish for one user; answers that user's position. */
async function publishDurable(serverPort, user, data) {
  const response = await fetch(`http://127.0.0.1:${serverPort}/api/v1/publish`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": API_KEY },
    body: JSON.stringify({ user_ids: [user], data }),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`publish: HTTP ${response.status} ${text}`);
  const position = JSON.parse(text).positions?.[user];
  if (!position) {
    throw new Error(`publish answered ${text}: no position for ${user} (history off, or a server without protocol v2)`);
  }
  return position;
}

/** The backend changes its state (item `seq`), then notifies through `serverPort`. */
async function notify(serverPort, seq) {
  const item = { type: "essay.graded", seq, text: `Essay ${seq} graded` };
  backend.items.push(item); // committed first, then published: the usual order
  const position = await publishDurable(serverPort, USER_V2, item);
  // A fresh user's history: offsets are dense from 1, in one epoch.
  if (position.offset !== seq || (backend.position && position.epoch !== backend.position.epoch)) {
    throw new Error(`message ${seq} got position ${JSON.stringify(position)} after ${JSON.stringify(backend.position)}`);
  }
  backend.position = position;
  return position;
}

// ------------------------------------------------------------------------------------------
// The page's web server: page.html, the compiled client, a token endpoint, its config
// ------------------------------------------------------------------------------------------

function startWebServer(port, serverPort) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://localhost");
    const send = (status, type, body) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (url.pathname === "/") return send(200, "text/html", readFileSync(join(here, "page.html")));
    if (url.pathname === "/config.json") {
      const user = url.searchParams.get("mode") === "v2" ? USER_V2 : USER;
      return send(200, "application/json", JSON.stringify({ wsUrl: `ws://127.0.0.1:${serverPort}/ws`, user }));
    }
    if (url.pathname === "/token") {
      const user = url.searchParams.get("user") ?? USER;
      if (user !== USER && user !== USER_V2) return send(403, "text/plain", "unknown user");
      return send(200, "text/plain", jwt(user, 600));
    }
    if (url.pathname === "/state") return send(200, "application/json", JSON.stringify(readState()));
    const file = url.pathname.match(/^\/dist\/([\w.-]+\.js)$/);
    if (file && existsSync(join(clientRoot, "dist", "src", file[1]))) {
      return send(200, "text/javascript", readFileSync(join(clientRoot, "dist", "src", file[1])));
    }
    send(404, "text/plain", "not found");
  });
  server.listen(port, "127.0.0.1");
  return server;
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

async function publishWhenSubscribed(redisPort, payload, user = USER) {
  const channel = `ws:${user}`;
  await waitFor(`a subscriber on ${channel}`, async () => {
    const [, count] = await redis(redisPort, "PUBSUB", "NUMSUB", channel);
    return count >= 1;
  });
  const receivers = await redis(redisPort, "PUBLISH", channel, JSON.stringify(payload));
  if (receivers < 1) throw new Error(`PUBLISH ${channel} reached ${receivers} subscribers`);
}

function check(checks, context) {
  for (const [passed, what] of checks) {
    if (!passed) throw new Error(`check failed: ${what}\n${JSON.stringify(context, null, 1)}`);
    step(`ok: ${what}`);
  }
}

async function screenshot(page, path) {
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true });
  step(`screenshot: ${path}`);
}

/** The at-most-once client: raw payloads; a restart loses nothing only because nothing is sent. */
async function legacyScenario({ context, webPort, redisPort, servers, serverPort }) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`page error: ${error.message}`));
  await page.goto(`http://127.0.0.1:${webPort}/`);
  await page.waitForFunction(() => window.e2e?.opens === 1, null, { timeout: DEADLINE_MS });
  step("legacy: page connected (bearer subprotocol)");

  const first = { type: "essay.file_assigned", text: "File essay-1.pdf assigned to slot A", seq: 1 };
  await publishWhenSubscribed(redisPort, first);
  await page.getByText(first.text).waitFor({ timeout: DEADLINE_MS });
  step("legacy: first message shown");

  // The deploy: SIGTERM (drain, 1012), then a new process on the same port.
  await stopServer(servers.a);
  step("legacy: server drained and exited 0; starting it again");
  servers.a = await startServer(serverPort, redisPort, "websocket-service A");
  await page.waitForFunction(() => window.e2e?.opens === 2, null, { timeout: DEADLINE_MS });
  step("legacy: page reconnected by itself");

  const second = { type: "batch.finished", text: "Batch 42 finished: 28 essays graded", seq: 2 };
  await publishWhenSubscribed(redisPort, second);
  await page.getByText(second.text).waitFor({ timeout: DEADLINE_MS });
  step("legacy: second message shown after the restart");

  const e2e = await page.evaluate(() => window.e2e);
  const close = e2e.events.find((e) => e.type === "close");
  check(
    [
      [close?.code === 1012, `first close is 1012 (got ${close?.code})`],
      [close?.error?.error_code === "SERVICE_UNAVAILABLE", "close reason error_code SERVICE_UNAVAILABLE"],
      [close?.willRetry === true, "the client decided to reconnect"],
      [e2e.events.some((e) => e.type === "open" && e.reconnect && e.protocol === "bearer"), "reconnected with the bearer subprotocol"],
      [e2e.messages.length === 2, `two messages received (got ${e2e.messages.length})`],
      [JSON.parse(e2e.messages[0]).seq === 1 && JSON.parse(e2e.messages[1]).seq === 2, "payloads unchanged"],
      [e2e.tokenRequests[0] === "initial" && e2e.tokenRequests.includes("reconnect"), `token provider asked (${e2e.tokenRequests})`],
    ],
    { events: e2e.events },
  );
  await screenshot(page, SCREENSHOT);
  await page.close();
}

/** Protocol v2 with the refetch-on-reset pattern, across two restarts of the page's server. */
async function v2Scenario({ context, webPort, redisPort, servers, serverPort, publisherPort }) {
  // B: a second replica on the same Redis, to publish while A (the page's) is down.
  servers.b = await startServer(publisherPort, redisPort, "websocket-service B");
  step(`v2: publisher replica B on :${publisherPort}`);

  // Before the page loads: message 1 is in the state the page loads, with its position.
  const p1 = await notify(publisherPort, 1);
  const epoch = p1.epoch;
  step(`v2: message 1 published at ${epoch}:${p1.offset}`);

  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`page error: ${error.message}`));
  await page.goto(`http://127.0.0.1:${webPort}/?mode=v2`);
  const welcomes = (n) => page.waitForFunction((n) => window.e2e?.welcomes.length === n, n, { timeout: DEADLINE_MS });
  const shown = (seq) => page.waitForFunction((seq) => window.e2e?.view.includes(seq), seq, { timeout: DEADLINE_MS });
  await welcomes(1);
  step("v2: page loaded its state and connected from its position");

  // Live: a durable message, and a plain one (Redis PUBLISH: no position, at most once).
  await notify(serverPort, 2);
  await shown(2);
  const plain = { type: "announcement", text: "Plain PUBLISH, not durable" };
  await publishWhenSubscribed(redisPort, plain, USER_V2);
  await page.getByText(plain.text).waitFor({ timeout: DEADLINE_MS });
  step("v2: messages 2 (durable) and a plain one shown live");

  // Restart 1: two messages published while A is down; the resume replays them.
  await stopServer(servers.a);
  await notify(publisherPort, 3);
  await notify(publisherPort, 4);
  step("v2: A drained; messages 3 and 4 published through B while A is down; starting A");
  servers.a = await startServer(serverPort, redisPort, "websocket-service A");
  await welcomes(2);
  await shown(4);
  await notify(serverPort, 5);
  await shown(5);
  step("v2: page resumed (3 and 4 replayed) and shows 5 live");

  // Restart 2: five messages while A is down, more than history.max_replay: recovered:false,
  // the page refetches its state (6..10) and goes on from the position it returned.
  await stopServer(servers.a);
  for (const seq of [6, 7, 8, 9, 10]) await notify(publisherPort, seq);
  step("v2: A drained; messages 6..10 published through B while A is down; starting A");
  servers.a = await startServer(serverPort, redisPort, "websocket-service A");
  await welcomes(3);
  await page.waitForFunction(() => window.e2e?.stateLoads === 2 && window.e2e.view.length === 10, null, { timeout: DEADLINE_MS });
  await notify(serverPort, 11);
  await shown(11);
  step("v2: reset handled (state refetched) and 11 shown live");

  const e2e = await page.evaluate(() => window.e2e);
  const shownText = await page.locator("#messages li").allTextContents();
  const durable = e2e.delivered.filter((d) => d.position);
  const plains = e2e.delivered.filter((d) => !d.position);
  const sinces = e2e.sockets
    .map((s) => new URL(s.url).searchParams.get("since"))
    .filter((since, i, all) => i === 0 || since !== all[i - 1]);
  const closes = e2e.events.filter((e) => e.type === "close");
  const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const [w1, w2, w3] = e2e.welcomes;
  check(
    [
      [same(e2e.view, range(1, 11)), `the page shows messages 1..11 once each, in order (got ${e2e.view})`],
      [shownText.length === 11 && shownText.every((t, i) => t.includes(`Essay ${i + 1} graded`)), "rendered list matches"],
      [same(durable.map((d) => d.json.seq), [2, 3, 4, 5, 11]), `the client delivered 2, 3, 4, 5, 11 (1 and 6..10 came from the state; got ${durable.map((d) => d.json.seq)})`],
      [durable.every((d) => d.position.epoch === epoch && d.position.offset === d.json.seq), "each durable message carries its position"],
      [plains.length === 1 && plains[0].json.text === plain.text, "the plain message once, without a position"],
      [e2e.sockets.every((s) => same(s.protocols, ["bearer", "notify.v2"])), "every socket offered bearer and notify.v2"],
      [e2e.events.filter((e) => e.type === "open").every((e) => e.protocol === "notify.v2"), "the server selected notify.v2"],
      [same(sinces, [`${epoch}:1`, `${epoch}:2`, `${epoch}:5`]), `connected with since ${epoch}:1, then :2, then :5 (got ${sinces})`],
      [w1?.recovered === true && w1.offset === 1, "first welcome: recovered from the state's position"],
      [w2?.recovered === true && w2.offset === 4 && w2.since?.offset === 2, "after restart 1: recovered, 2 messages replayed"],
      [w3?.recovered === false && w3.offset === 10 && w3.since?.offset === 5, "after restart 2: not recovered (5 missed > max_replay 3)"],
      [same(e2e.resets, [{ epoch, offset: 10, reason: "not_recovered" }]), `one reset, not_recovered at ${epoch}:10`],
      [e2e.stateLoads === 2, "the state was loaded twice (start, reset)"],
      // 1012 twice (the drains); between them only 1006 (attempts while A was down): no close
      // by the client itself (a resync after a gap, or a resume from the state's position).
      [same(closes.filter((c) => c.code !== 1006).map((c) => c.code), [1012, 1012]), `closes: 1012 twice, else 1006 (got ${closes.map((c) => c.code)})`],
      [e2e.errors.length === 0, `no client errors (${JSON.stringify(e2e.errors)})`],
    ],
    { welcomes: e2e.welcomes, resets: e2e.resets, delivered: e2e.delivered, sockets: e2e.sockets, events: e2e.events, errors: e2e.errors },
  );
  await screenshot(page, SCREENSHOT_V2);
  await page.close();
}

async function main() {
  if (!existsSync(SERVER_BIN)) throw new Error(`no server binary at ${SERVER_BIN} (cargo build, or set SERVER_BIN)`);
  if (!existsSync(join(clientRoot, "dist", "src", "index.js"))) throw new Error("run `npm run build` first");
  const unknown = SCENARIOS.filter((s) => s !== "legacy" && s !== "v2");
  if (unknown.length > 0 || SCENARIOS.length === 0) throw new Error(`E2E_SCENARIOS: legacy and/or v2, not ${unknown}`);
  const [redisPort, serverPort, publisherPort, webPort] = await freePorts(4);
  await startRedis(redisPort);
  const servers = { a: await startServer(serverPort, redisPort, "websocket-service A"), b: null };
  const web = startWebServer(webPort, serverPort);
  await once(web, "listening");
  step(`redis :${redisPort}, server :${serverPort}, page http://127.0.0.1:${webPort}/`);

  const userDataDir = mkdtempSync(join(tmpdir(), "ws-e2e-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_BIN,
    headless: true,
    viewport: { width: 900, height: 560 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
    ],
  });
  try {
    const env = { context, webPort, redisPort, servers, serverPort, publisherPort };
    if (SCENARIOS.includes("legacy")) await legacyScenario(env);
    if (SCENARIOS.includes("v2")) await v2Scenario(env);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
    web.close();
  }
}

function cleanup() {
  for (const child of children) child.kill("SIGKILL");
}

const guard = setTimeout(() => {
  console.error("e2e: over 120 s, giving up");
  cleanup();
  process.exit(1);
}, 120_000);

main()
  .then(() => {
    step("browser e2e passed");
    cleanup();
    clearTimeout(guard);
  })
  .catch((error) => {
    console.error(`browser e2e FAILED: ${error.stack ?? error}`);
    for (const child of children) console.error(`--- ${child.label} log ---\n${child.log.slice(-4000)}`);
    cleanup();
    clearTimeout(guard);
    process.exitCode = 1;
  });
