#!/usr/bin/env node
// End-to-end test of the TS client in headless Chromium against the real server:
//
//   redis-server + websocket-service (SERVER_BIN, default target/debug/websocket-service) on free
//   ports; a page on localhost that uses dist/index.js with a token endpoint; publish through
//   Redis -> the page shows the message; SIGTERM the server (1012) and start it again on the same
//   port -> the page reconnects by itself and shows the next message.
//
// Needs: `npm run build` first, redis-server, /usr/bin/chromium (CHROMIUM_BIN to override).
// Writes a screenshot to E2E_SCREENSHOT (default /tmp/websocket-service-e2e/browser.png).

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
const SECRET = "e2e-secret-0123456789abcdef";
const USER = "teacher-e2e";
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

async function startServer(port, redisPort) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WS__")));
  Object.assign(env, {
    WS__SERVER__BIND: `127.0.0.1:${port}`,
    WS__SERVER__WORKERS: "1",
    WS__REDIS__URL: `redis://127.0.0.1:${redisPort}`,
    WS__AUTH__JWT_SECRET: SECRET,
    // Short drain: one socket, closed at once with 1012; the restart should take seconds.
    WS__SHUTDOWN__DRAIN_TIMEOUT_S: "2",
    WS__TELEMETRY__LOG_FORMAT: "json",
  });
  const child = startProcess("websocket-service", SERVER_BIN, ["--config", join(repoRoot, "settings.toml")], env);
  await waitFor("the server's /readyz to answer 200", async () => {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${child.log}`);
    const response = await fetch(`http://127.0.0.1:${port}/readyz`);
    return response.status === 200;
  });
  return child;
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
      return send(200, "application/json", JSON.stringify({ wsUrl: `ws://127.0.0.1:${serverPort}/ws`, user: USER }));
    }
    if (url.pathname === "/token") return send(200, "text/plain", jwt(USER, 600));
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

async function publishWhenSubscribed(redisPort, payload) {
  const channel = `ws:${USER}`;
  await waitFor(`a subscriber on ${channel}`, async () => {
    const [, count] = await redis(redisPort, "PUBSUB", "NUMSUB", channel);
    return count >= 1;
  });
  const receivers = await redis(redisPort, "PUBLISH", channel, JSON.stringify(payload));
  if (receivers < 1) throw new Error(`PUBLISH ${channel} reached ${receivers} subscribers`);
}

async function main() {
  if (!existsSync(SERVER_BIN)) throw new Error(`no server binary at ${SERVER_BIN} (cargo build, or set SERVER_BIN)`);
  if (!existsSync(join(clientRoot, "dist", "src", "index.js"))) throw new Error("run `npm run build` first");
  const [redisPort, serverPort, webPort] = await freePorts(3);
  await startRedis(redisPort);
  let server = await startServer(serverPort, redisPort);
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
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (error) => console.log(`page error: ${error.message}`));
    await page.goto(`http://127.0.0.1:${webPort}/`);
    await page.waitForFunction(() => window.e2e?.opens === 1, null, { timeout: DEADLINE_MS });
    step("page connected (bearer subprotocol)");

    const first = { type: "essay.file_assigned", text: "File essay-1.pdf assigned to slot A", seq: 1 };
    await publishWhenSubscribed(redisPort, first);
    await page.getByText(first.text).waitFor({ timeout: DEADLINE_MS });
    step("first message shown");

    // The deploy: SIGTERM (drain, 1012), then a new process on the same port.
    server.kill("SIGTERM");
    const exit = await server.exited;
    if (exit.code !== 0) throw new Error(`server exited with ${JSON.stringify(exit)} after SIGTERM:\n${server.log}`);
    step("server drained and exited 0; starting it again");
    server = await startServer(serverPort, redisPort);
    await page.waitForFunction(() => window.e2e?.opens === 2, null, { timeout: DEADLINE_MS });
    step("page reconnected by itself");

    const second = { type: "batch.finished", text: "Batch 42 finished: 28 essays graded", seq: 2 };
    await publishWhenSubscribed(redisPort, second);
    await page.getByText(second.text).waitFor({ timeout: DEADLINE_MS });
    step("second message shown after the restart");

    const e2e = await page.evaluate(() => window.e2e);
    const close = e2e.events.find((e) => e.type === "close");
    const checks = [
      [close?.code === 1012, `first close is 1012 (got ${close?.code})`],
      [close?.error?.error_code === "SERVICE_UNAVAILABLE", "close reason error_code SERVICE_UNAVAILABLE"],
      [close?.willRetry === true, "the client decided to reconnect"],
      [e2e.events.some((e) => e.type === "open" && e.reconnect && e.protocol === "bearer"), "reconnected with the bearer subprotocol"],
      [e2e.messages.length === 2, `two messages received (got ${e2e.messages.length})`],
      [JSON.parse(e2e.messages[0]).seq === 1 && JSON.parse(e2e.messages[1]).seq === 2, "payloads unchanged"],
      [e2e.tokenRequests[0] === "initial" && e2e.tokenRequests.includes("reconnect"), `token provider asked (${e2e.tokenRequests})`],
    ];
    for (const [passed, what] of checks) {
      if (!passed) throw new Error(`check failed: ${what}\nevents: ${JSON.stringify(e2e.events, null, 1)}`);
      step(`ok: ${what}`);
    }

    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    step(`screenshot: ${SCREENSHOT}`);
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
  console.error("e2e: over 60 s, giving up");
  cleanup();
  process.exit(1);
}, 60_000);

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
