#!/usr/bin/env node
// End-to-end test of the operator console in headless Chromium against the real server:
//
//   redis-server and two replicas of websocket-service (SERVER_BIN, default
//   target/debug/websocket-service) sharing it, with the console on, on free ports. In the
//   browser: sign in with the admin key; the overview lists both replicas; a test socket (the
//   "try it" page, with a token for USER) connects to replica A and A's connection count rises;
//   the user lookup shows the socket; "Send test message" publishes and the socket receives it;
//   the Actions view disconnects the user and the socket closes 4003; refused sockets show in
//   the Refusals view. Every view is photographed into SCREENSHOTS (default docs/console).
//
// Needs: redis-server, /usr/bin/chromium (CHROMIUM_BIN to override), the server binary.

import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..", "..");
const SERVER_BIN = resolve(repoRoot, process.env.SERVER_BIN ?? "target/debug/websocket-service");
const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SCREENSHOTS = resolve(repoRoot, process.env.SCREENSHOTS ?? "docs/console");
const SECRET = "console-e2e-secret-0123456789";
const ADMIN_KEY = `console-e2e-${randomUUID()}`;
const USER = "teacher-e2e";
const DEADLINE_MS = 15_000;
const started = Date.now();

const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${text}`);

// ------------------------------------------------------------------------------------------
// Helpers: ports, waiting, PING over RESP, JWT (HS256)
// ------------------------------------------------------------------------------------------

// `count` distinct free ports: every listener stays open until all are chosen.
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
    await new Promise((r) => setTimeout(r, 50));
  }
}

function redisPing(port) {
  return new Promise((resolvePing, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.setTimeout(2000, () => socket.destroy(new Error("redis timeout")));
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      socket.end();
      resolvePing(chunk.toString().startsWith("+PONG"));
    });
    socket.write("*1\r\n$4\r\nPING\r\n");
  });
}

const b64url = (data) => Buffer.from(data).toString("base64url");

function jwt(sub, ttlSeconds, secret = SECRET) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({ sub, iat: now, exp: now + ttlSeconds }));
  const signature = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
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
  child.on("exit", () => children.delete(child));
  child.on("error", (error) => {
    child.log += `\nspawn error: ${error.message}`;
  });
  child.label = name;
  children.add(child);
  return child;
}

async function startRedis(port) {
  startProcess("redis-server", "redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
  ]);
  await waitFor("redis-server to answer PING", () => redisPing(port));
}

async function startServer(name, port, redisPort) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("WS__")));
  Object.assign(env, {
    WS__SERVER__BIND: `127.0.0.1:${port}`,
    WS__SERVER__WORKERS: "1",
    WS__REDIS__URL: `redis://127.0.0.1:${redisPort}`,
    WS__AUTH__JWT_SECRET: SECRET,
    WS__CONSOLE__ENABLED: "true",
    WS__CONSOLE__ADMIN_KEY: ADMIN_KEY,
    // One socket per user, so that a second one is refused (a quota refusal to show).
    WS__LIMITS__MAX_CONNECTIONS_PER_USER: "1",
    WS__TELEMETRY__LOG_FORMAT: "json",
    HOSTNAME: name,
  });
  const child = startProcess(name, SERVER_BIN, ["--config", join(repoRoot, "settings.toml")], env);
  await waitFor(`${name}'s /readyz to answer 200`, async () => {
    if (child.exitCode !== null) throw new Error(`${name} exited early:\n${child.log}`);
    return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
  });
  return child;
}

/** An admin API call with the key (the test's own view, beside the browser's). */
async function admin(port, path) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    headers: { Authorization: `Bearer ${ADMIN_KEY}` },
  });
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

// ------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------

async function shoot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  step(`screenshot ${path}`);
}

/** Opens a socket from the try page and waits for its close; answers the close code. */
async function refusedSocket(page, token) {
  return page.evaluate(
    (tokenToUse) =>
      new Promise((resolveClose) => {
        const scheme = location.protocol === "https:" ? "wss:" : "ws:";
        const socket = new WebSocket(`${scheme}//${location.host}/ws`, ["bearer", tokenToUse]);
        socket.addEventListener("close", (event) => resolveClose(event.code));
      }),
    token,
  );
}

async function main() {
  if (!existsSync(SERVER_BIN)) throw new Error(`no server binary at ${SERVER_BIN} (cargo build, or set SERVER_BIN)`);
  const [redisPort, portA, portB] = await freePorts(3);
  await startRedis(redisPort);
  await startServer("replica-a", portA, redisPort);
  await startServer("replica-b", portB, redisPort);
  const base = `http://127.0.0.1:${portA}`;
  const nodeA = (await admin(portA, "/api/v1/admin/session")).node;
  step(`redis :${redisPort}, replica A :${portA} (${nodeA}), replica B :${portB}`);

  const userDataDir = mkdtempSync(join(tmpdir(), "ws-console-e2e-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM_BIN,
    headless: true,
    viewport: { width: 1280, height: 760 },
    locale: "en-GB",
    timezoneId: "UTC",
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
  const pageErrors = [];
  try {
    const consolePage = context.pages()[0] ?? (await context.newPage());
    consolePage.on("pageerror", (error) => pageErrors.push(error.message));
    // Answers the page expects (401 before signing in, a wrong key) are logged by the browser
    // as failed loads; anything else is a fault.
    consolePage.on("console", (message) => {
      if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
        pageErrors.push(message.text());
      }
    });

    // Sign in.
    await consolePage.goto(`${base}/console`);
    await consolePage.locator("#login-key").waitFor({ timeout: DEADLINE_MS });
    await shoot(consolePage, "login");
    await consolePage.fill("#login-key", "not the key");
    await consolePage.click("#login-form button[type=submit]");
    await consolePage.getByText("That is not the admin key.").waitFor({ timeout: DEADLINE_MS });
    await consolePage.fill("#login-key", ADMIN_KEY);
    await consolePage.click("#login-form button[type=submit]");
    await consolePage.locator("#view-overview").waitFor({ state: "visible", timeout: DEADLINE_MS });
    const cookies = await context.cookies(base);
    const session = cookies.find((c) => c.name === "ws_console");
    if (!session?.httpOnly || session.sameSite !== "Strict") throw new Error(`session cookie: ${JSON.stringify(cookies)}`);
    step("signed in: HttpOnly, SameSite=Strict session cookie");

    // The overview lists both replicas; A has no socket yet.
    const connectionsOfA = consolePage.locator(`tr[data-node="${nodeA}"] td[data-field="connections"]`);
    await consolePage.locator("#overview-nodes tbody tr").nth(1).waitFor({ timeout: DEADLINE_MS });
    await waitFor("A's connection count 0", async () => (await connectionsOfA.textContent()) === "0");
    step("overview: two replicas, A has 0 connections");

    // The test socket: the try page with a token for USER, on replica A.
    const tryPage = await context.newPage();
    tryPage.on("pageerror", (error) => pageErrors.push(error.message));
    await tryPage.goto(`${base}/console/try`);
    await tryPage.locator("#try-token").waitFor({ state: "visible", timeout: DEADLINE_MS });
    await tryPage.fill("#try-token", jwt(USER, 600));
    await tryPage.click("#try-connect");
    await tryPage.getByText(`Connected as ${USER}`).waitFor({ timeout: DEADLINE_MS });
    step("test socket open (bearer subprotocol)");

    // Pages in the background get no animation frames, which Playwright's clicks wait for.
    await consolePage.bringToFront();
    await waitFor("A's connection count to rise to 1", async () => (await connectionsOfA.textContent()) === "1");
    step("overview: A's connection count rose to 1");
    await shoot(consolePage, "overview");

    // Look the user up.
    await consolePage.click('#nav a[data-view="user"]');
    await consolePage.fill("#user-id", USER);
    await consolePage.click("#user-form button[type=submit]");
    await consolePage.getByText("1 socket on 1 replica").waitFor({ timeout: DEADLINE_MS });
    const row = consolePage.locator("#user-result tbody tr").first();
    if (!(await row.textContent()).includes(nodeA)) throw new Error("the socket is not shown on replica A");
    step("lookup: online, 1 socket on replica A");

    // Publish a test message: the socket receives it.
    await consolePage.click("#user-publish");
    await consolePage.getByText(`Test message published to ${USER}`).waitFor({ timeout: DEADLINE_MS });
    await tryPage.getByText("Test message from the operator console").waitFor({ timeout: DEADLINE_MS });
    const received = await tryPage.locator("#try-messages pre").first().textContent();
    const payload = JSON.parse(received);
    if (payload.type !== "console.test") throw new Error(`unexpected payload ${received}`);
    step("test message received by the socket");
    // The lookup (refreshed every 2 s) shows it in the user's history, and as the socket's last
    // delivered position.
    await consolePage.getByText(/last offset 1\./).waitFor({ timeout: DEADLINE_MS });
    await consolePage.locator("#user-result tbody tr td code", { hasText: /:1$/ }).first().waitFor({ timeout: DEADLINE_MS });
    step("lookup: the message in the history at offset 1, the socket's last delivered position");
    await shoot(consolePage, "user");

    // Disconnect from the Actions view (two clicks): the socket closes 4003.
    await consolePage.click('#nav a[data-view="actions"]');
    await consolePage.fill("#disconnect-user", USER);
    await consolePage.fill("#disconnect-reason", "account locked (e2e)");
    await consolePage.click("#disconnect-form button[type=submit]");
    await consolePage.getByText(`Click again to disconnect ${USER}`).waitFor({ timeout: DEADLINE_MS });
    await consolePage.click("#disconnect-form button[type=submit]");
    await consolePage.getByText("1 socket closed with 4003").first().waitFor({ timeout: DEADLINE_MS });
    await tryPage.getByText("Closed with 4003 (AUTHENTICATION_ERROR: account locked (e2e))").waitFor({ timeout: DEADLINE_MS });
    step("disconnected: the socket closed 4003 AUTHENTICATION_ERROR with the reason");
    await shoot(consolePage, "actions");
    await tryPage.bringToFront();
    await shoot(tryPage, "try");

    await consolePage.goto(`${base}/console#user/${encodeURIComponent(USER)}`);
    await consolePage.locator("#user-result .badge-bad", { hasText: "offline" }).waitFor({ timeout: DEADLINE_MS });
    step("lookup: offline after the disconnect");

    // Refusals: three bad tokens, and a second socket over the per-user quota of 1.
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push(await refusedSocket(tryPage, jwt("mallory", 600, "not-the-secret-0123456789")));
    await tryPage.fill("#try-token", jwt(USER, 600));
    await tryPage.click("#try-connect");
    await tryPage.getByText(`Connected as ${USER}`).waitFor({ timeout: DEADLINE_MS });
    codes.push(await refusedSocket(tryPage, jwt(USER, 600)));
    if (codes.join() !== "1008,1008,1008,4000") throw new Error(`refusal close codes ${codes}`);
    await waitFor("the refusals in the window", async () => {
      const totals = (await admin(portA, "/api/v1/admin/refusals")).totals;
      return totals.auth_failed === 3 && totals.quota_user === 1;
    });
    await consolePage.bringToFront();
    await consolePage.click('#nav a[data-view="refusals"]');
    await consolePage.locator("#refusals-chart tbody tr").first().waitFor({ timeout: DEADLINE_MS });
    await waitFor("the refusals view to show them", async () =>
      (await consolePage.locator("#refusals-totals").textContent()).includes("3"),
    );
    step("refusals: 3 token refused, 1 per-user quota");
    await shoot(consolePage, "refusals");

    if (pageErrors.length) throw new Error(`errors in the pages: ${pageErrors.join(" | ")}`);
  } finally {
    await context.close();
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

function cleanup() {
  for (const child of children) child.kill("SIGKILL");
}

const guard = setTimeout(() => {
  console.error("console e2e: over 90 s, giving up");
  cleanup();
  process.exit(1);
}, 90_000);

main()
  .then(() => {
    step("console e2e passed");
    cleanup();
    clearTimeout(guard);
  })
  .catch((error) => {
    console.error(`console e2e FAILED: ${error.stack ?? error}`);
    for (const child of children) console.error(`--- ${child.label} log ---\n${child.log.slice(-4000)}`);
    cleanup();
    clearTimeout(guard);
    process.exitCode = 1;
  });
