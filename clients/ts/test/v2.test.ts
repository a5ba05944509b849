// Protocol v2 (DESIGN.md "Delivery guarantees: history and resume"): positions, resume with
// `since`, welcome / reset, duplicate and gap handling, and the legacy mode left as it was.

import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import { RealtimeClient, formatPosition, parsePosition } from "../src/index.js";
import { FakeWebSocket, flush } from "./fakes.js";
import { URL as ENDPOINT, setup } from "./harness.js";

const welcome = (epoch: string, offset: number, recovered?: boolean) => ({
  type: "welcome",
  epoch,
  offset,
  ...(recovered === undefined ? {} : { recovered }),
});
const durable = (epoch: string, offset: number, data: unknown = { n: offset }) => ({
  type: "message",
  epoch,
  offset,
  data,
});

/** A v2 client whose first socket is open (not yet welcomed). */
async function opened(options: Parameters<typeof setup>[0] = {}) {
  const harness = setup({ protocol: "v2", ...options });
  harness.client.connect();
  await flush();
  const socket = FakeWebSocket.last();
  socket.serverOpen();
  return { ...harness, socket };
}

/** Offsets of the durable messages delivered so far. */
const offsets = (messages: { position?: { offset: number } }[]) =>
  messages.flatMap((m) => (m.position ? [m.position.offset] : []));

beforeEach(() => FakeWebSocket.reset());

describe("v2: connecting", () => {
  it("offers notify.v2 beside the bearer pair, with no since the first time", async () => {
    const { client, socket, of } = await opened();
    assert.deepEqual(socket.protocols, ["bearer", "token-1", "notify.v2"]);
    assert.equal(socket.url, ENDPOINT);
    assert.deepEqual(of("open"), [{ reconnect: false, protocol: "notify.v2" }]);
    assert.equal(client.position, undefined);
    socket.serverFrame(welcome("e1", 4));
    assert.deepEqual(of("welcome"), [{ epoch: "e1", offset: 4 }]);
    assert.deepEqual(client.position, { epoch: "e1", offset: 4 });
    assert.deepEqual(of("reset"), []);
  });

  it("the since option resumes the first connect; the query transport adds v=2 and offers no subprotocol", async () => {
    const { client, socket, of } = await opened({
      tokenTransport: "query",
      tokens: ["a+b"],
      since: { epoch: "e1", offset: 7 },
    });
    assert.equal(socket.url, `${ENDPOINT}?v=2&since=e1:7&token=a%2Bb`);
    assert.deepEqual(socket.protocols, []);
    socket.serverFrame(welcome("e1", 9, true));
    assert.deepEqual(of("welcome"), [
      { epoch: "e1", offset: 9, recovered: true, since: { epoch: "e1", offset: 7 } },
    ]);
    assert.deepEqual(client.position, { epoch: "e1", offset: 7 }, "8 and 9 are still to come");
    socket.serverFrame(durable("e1", 8));
    socket.serverFrame(durable("e1", 9));
    assert.deepEqual(offsets(of("message")), [8, 9]);
    assert.deepEqual(of("reset"), []);
  });

  it("refuses since and resumeFrom without protocol v2, and positions that are not ones", () => {
    const base = { url: ENDPOINT, getToken: () => "t", WebSocket: FakeWebSocket };
    assert.throws(() => new RealtimeClient({ ...base, since: { epoch: "e1", offset: 1 } }), /v2/);
    assert.throws(() => new RealtimeClient(base).resumeFrom({ epoch: "e1", offset: 1 }), /v2/);
    const v2 = new RealtimeClient({ ...base, protocol: "v2" });
    for (const bad of [
      { epoch: "", offset: 1 },
      { epoch: "e:1", offset: 1 },
      { epoch: "a".repeat(33), offset: 1 },
      { epoch: "e1", offset: -1 },
      { epoch: "e1", offset: 1.5 },
    ]) {
      assert.throws(() => v2.resumeFrom(bad), TypeError, JSON.stringify(bad));
    }
  });
});

describe("v2: messages", () => {
  it("delivers a durable message's data with its position, and a plain one without", async () => {
    const { client, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 4));
    socket.serverFrame(durable("e1", 5, { type: "file.assigned", id: 7 }));
    socket.serverFrame({ type: "message", data: "plain text" });
    socket.serverFrame(durable("e1", 6, "not json"));
    assert.deepEqual(of("message"), [
      {
        data: '{"type":"file.assigned","id":7}',
        json: { type: "file.assigned", id: 7 },
        position: { epoch: "e1", offset: 5 },
      },
      { data: "plain text", json: "plain text" },
      { data: "not json", json: "not json", position: { epoch: "e1", offset: 6 } },
    ]);
    assert.deepEqual(client.position, { epoch: "e1", offset: 6 });
    assert.deepEqual(of("error"), []);
  });

  it("drops durable messages at or before the last position, on one socket and after a resume", async () => {
    const { clock, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 0));
    socket.serverFrame(durable("e1", 1));
    socket.serverFrame(durable("e1", 2));
    socket.serverFrame(durable("e1", 2));
    socket.serverFrame(durable("e1", 1));
    socket.serverFrame({ type: "message", data: "plain" }); // no position: never dropped
    socket.serverFrame({ type: "message", data: "plain" });
    clock.advance(10_000);
    socket.serverClose(1012, "SERVICE_UNAVAILABLE");
    clock.advance(1_000);
    await flush();
    const resumed = FakeWebSocket.last();
    assert.equal(resumed.query("since"), "e1:2");
    resumed.serverOpen();
    resumed.serverFrame(welcome("e1", 3, true));
    resumed.serverFrame(durable("e1", 2)); // a misbehaving server repeats one
    resumed.serverFrame(durable("e1", 3));
    assert.deepEqual(offsets(of("message")), [1, 2, 3]);
    assert.equal(of("message").filter((m) => m.json === "plain").length, 2);
    assert.deepEqual(of("error"), []);
  });

  it("skips malformed and unknown frames; a second welcome is ignored", async () => {
    const { client, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 1));
    socket.serverMessage("not json");
    socket.serverFrame({ no: "type" });
    socket.serverFrame({ type: "future-frame", x: 1 }); // a later server's: skipped silently
    socket.serverFrame({ type: "message" });
    socket.serverFrame(welcome("e1", 9));
    socket.serverFrame(durable("e1", 2));
    assert.deepEqual(offsets(of("message")), [2]);
    assert.equal(of("error").length, 4);
    assert.ok(of("error").every((e) => e.during === "protocol"));
    assert.deepEqual(client.position, { epoch: "e1", offset: 2 });
    assert.equal(FakeWebSocket.instances.length, 1, "no reconnect for a skipped frame");
  });
});

describe("v2: resume", () => {
  it("reconnects after 1012 with since=<epoch>:<offset> of the last message delivered, with the jittered backoff", async () => {
    const { client, clock, socket, requests, of } = await opened();
    socket.serverFrame(welcome("e1", 0));
    socket.serverFrame(durable("e1", 1));
    socket.serverFrame(durable("e1", 2));
    clock.advance(60_000);
    socket.serverClose(1012, "SERVICE_UNAVAILABLE");
    assert.deepEqual(of("reconnecting"), [{ attempt: 1, delayMs: 500 }]);
    clock.advance(499);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1, "not before the jitter elapsed");
    clock.advance(1);
    await flush();
    const resumed = FakeWebSocket.last();
    assert.equal(resumed.url, `${ENDPOINT}?since=e1:2`, "the colon is not escaped");
    assert.deepEqual(resumed.protocols, ["bearer", "token-2", "notify.v2"]);
    assert.deepEqual(requests.at(-1), { reason: "reconnect" });

    resumed.serverOpen();
    resumed.serverFrame(welcome("e1", 4, true));
    resumed.serverFrame(durable("e1", 3));
    resumed.serverFrame(durable("e1", 4));
    assert.deepEqual(of("welcome").at(-1), {
      epoch: "e1",
      offset: 4,
      recovered: true,
      since: { epoch: "e1", offset: 2 },
    });
    assert.deepEqual(of("open").at(-1), { reconnect: true, protocol: "notify.v2" });
    assert.deepEqual(offsets(of("message")), [1, 2, 3, 4]);
    assert.deepEqual(of("reset"), []);
    assert.deepEqual(client.position, { epoch: "e1", offset: 4 });
  });

  it("welcome with recovered:false: a reset (not_recovered), and messages continue after the welcome's position", async () => {
    const { client, socket, of } = await opened({ since: { epoch: "e1", offset: 3 } });
    assert.equal(socket.query("since"), "e1:3");
    socket.serverFrame(welcome("e2", 10, false));
    assert.deepEqual(of("welcome"), [
      { epoch: "e2", offset: 10, recovered: false, since: { epoch: "e1", offset: 3 } },
    ]);
    assert.deepEqual(of("reset"), [{ epoch: "e2", offset: 10, reason: "not_recovered" }]);
    assert.deepEqual(client.position, { epoch: "e2", offset: 10 });
    socket.serverFrame(durable("e2", 11));
    assert.deepEqual(of("message").map((m) => m.position), [{ epoch: "e2", offset: 11 }]);
  });

  it("recovered:true that cannot be true (another epoch, or behind since) counts as not recovered", async () => {
    for (const [epoch, offset] of [["e2", 5], ["e1", 2]] as const) {
      FakeWebSocket.reset();
      const { client, socket, of } = await opened({ since: { epoch: "e1", offset: 3 } });
      socket.serverFrame(welcome(epoch, offset, true));
      assert.equal(of("welcome")[0]?.recovered, false);
      assert.deepEqual(of("reset"), [{ epoch, offset, reason: "not_recovered" }]);
      assert.deepEqual(client.position, { epoch, offset });
    }
  });

  it("a reset frame on a live socket: a reset event, and the stream goes on in the new epoch", async () => {
    const { client, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 0));
    socket.serverFrame(durable("e1", 1));
    socket.serverFrame({ type: "reset", epoch: "e2", offset: 5 });
    assert.deepEqual(of("reset"), [{ epoch: "e2", offset: 5, reason: "reset" }]);
    assert.deepEqual(client.position, { epoch: "e2", offset: 5 });
    socket.serverFrame(durable("e2", 6));
    assert.deepEqual(of("message").map((m) => m.position), [
      { epoch: "e1", offset: 1 },
      { epoch: "e2", offset: 6 },
    ]);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(of("error"), []);
  });

  it("an offset jump closes the socket and resumes from the last position, with backoff", async () => {
    const { client, clock, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 0));
    socket.serverFrame(durable("e1", 1));
    socket.serverFrame(durable("e1", 3));
    assert.equal(of("error")[0]?.during, "protocol");
    assert.deepEqual(socket.closedByClient, { code: 1000, reason: "resync" });
    assert.equal(of("close")[0]?.willRetry, true);
    assert.deepEqual(of("reconnecting"), [{ attempt: 1, delayMs: 500 }]);
    socket.serverFrame(durable("e1", 4)); // the old socket is no longer listened to
    clock.advance(500);
    await flush();
    assert.equal(FakeWebSocket.last().query("since"), "e1:1");
    assert.deepEqual(offsets(of("message")), [1]);
    assert.deepEqual(client.position, { epoch: "e1", offset: 1 });
  });

  it("an epoch change without a reset frame resumes too", async () => {
    const { clock, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 5));
    socket.serverFrame(durable("e2", 1));
    assert.deepEqual(socket.closedByClient, { code: 1000, reason: "resync" });
    clock.advance(1_000);
    await flush();
    assert.equal(FakeWebSocket.last().query("since"), "e1:5");
    assert.deepEqual(of("message"), []);
  });
});

describe("v2: resumeFrom (the state endpoint's position)", () => {
  it("a position the stream has not passed only raises the floor: no reconnect", async () => {
    const { client, socket, of } = await opened();
    socket.serverFrame(welcome("e1", 0));
    socket.serverFrame(durable("e1", 1));
    client.resumeFrom({ epoch: "e1", offset: 3 });
    socket.serverFrame(durable("e1", 2));
    socket.serverFrame(durable("e1", 3));
    socket.serverFrame(durable("e1", 4));
    assert.deepEqual(offsets(of("message")), [1, 4]);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(of("error"), []);
  });

  it("a position the stream has passed reconnects at once with since=position", async () => {
    const { client, clock, socket, requests, of } = await opened();
    socket.serverFrame(welcome("e1", 0));
    for (const n of [1, 2, 3]) socket.serverFrame(durable("e1", n));
    client.resumeFrom({ epoch: "e1", offset: 1 });
    assert.deepEqual(socket.closedByClient, { code: 1000, reason: "resume" });
    assert.deepEqual(of("close"), [
      { code: 1000, reason: "resume", wasClean: true, willRetry: true },
    ]);
    assert.equal(of("reconnecting")[0]?.delayMs, 0);
    clock.advance(0);
    await flush();
    const resumed = FakeWebSocket.last();
    assert.equal(resumed.query("since"), "e1:1");
    assert.deepEqual(requests.at(-1), { reason: "reconnect" });
    resumed.serverOpen();
    resumed.serverFrame(welcome("e1", 3, true));
    resumed.serverFrame(durable("e1", 2));
    resumed.serverFrame(durable("e1", 3));
    assert.deepEqual(offsets(of("message")), [1, 2, 3, 2, 3], "2 and 3 again, for the new state");
  });

  it("while waiting to reconnect, it sets the since of the next attempt", async () => {
    const { client, clock, socket } = await opened();
    socket.serverFrame(welcome("e1", 7));
    socket.fail();
    client.resumeFrom({ epoch: "e9", offset: 2 });
    clock.advance(1_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(FakeWebSocket.last().query("since"), "e9:2");
  });

  it("a position the server already refused is not retried (no reset loop with a stale state endpoint)", async () => {
    const { client, socket, of } = await opened({ since: { epoch: "e1", offset: 3 } });
    socket.serverFrame(welcome("e2", 10, false));
    client.resumeFrom({ epoch: "e1", offset: 3 });
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(socket.closedByClient, undefined);
    assert.equal(of("error")[0]?.during, "protocol");
    assert.deepEqual(client.position, { epoch: "e2", offset: 10 });
  });
});

describe("v2: servers that do not speak it", () => {
  it("a server that selects bearer, not notify.v2: raw payloads, an error, the position kept", async () => {
    const harness = setup({ protocol: "v2", since: { epoch: "e1", offset: 2 } });
    harness.client.connect();
    await flush();
    const socket = FakeWebSocket.last();
    socket.serverOpen("bearer");
    socket.serverMessage('{"type":"file.assigned"}');
    assert.equal(harness.of("error")[0]?.during, "protocol");
    assert.deepEqual(harness.of("message"), [
      { data: '{"type":"file.assigned"}', json: { type: "file.assigned" } },
    ]);
    assert.deepEqual(harness.client.position, { epoch: "e1", offset: 2 });
  });

  it("query transport: a first frame that is not a welcome means raw payloads", async () => {
    const { socket, of } = await opened({ tokenTransport: "query" });
    socket.serverMessage('{"type":"batch.finished"}');
    socket.serverMessage('{"type":"welcome","epoch":"e1","offset":1}');
    assert.equal(of("error").length, 1);
    assert.deepEqual(
      of("message").map((m) => m.data),
      ['{"type":"batch.finished"}', '{"type":"welcome","epoch":"e1","offset":1}'],
    );
  });
});

describe("legacy mode (the default) is unchanged", () => {
  it("offers no notify.v2, sends no since, and hands v2-looking frames over raw", async () => {
    const { client, clock, socket, of } = await opened({ protocol: "legacy" });
    assert.deepEqual(socket.protocols, ["bearer", "token-1"]);
    assert.deepEqual(of("open"), [{ reconnect: false, protocol: "bearer" }]);
    const frame = JSON.stringify(welcome("e1", 1));
    socket.serverMessage(frame);
    assert.deepEqual(of("message"), [{ data: frame, json: welcome("e1", 1) }]);
    assert.deepEqual(of("welcome"), []);
    assert.equal(client.position, undefined);
    clock.advance(10_000);
    socket.serverClose(1012, "SERVICE_UNAVAILABLE");
    clock.advance(1_000);
    await flush();
    assert.equal(FakeWebSocket.last().url, ENDPOINT);
  });

  it("a client built without the protocol option is a legacy one", async () => {
    const harness = setup();
    harness.client.connect();
    await flush();
    assert.deepEqual(FakeWebSocket.last().protocols, ["bearer", "token-1"]);
  });
});

describe("positions as text", () => {
  it("formats and parses <epoch>:<offset>", () => {
    assert.equal(formatPosition({ epoch: "k2f9-a_1", offset: 17 }), "k2f9-a_1:17");
    assert.deepEqual(parsePosition("k2f9-a_1:17"), { epoch: "k2f9-a_1", offset: 17 });
    for (const bad of ["", ":1", "e:", "e:-1", "e:1x", "e!:1", `${"a".repeat(33)}:1`, "e"]) {
      assert.equal(parsePosition(bad), undefined, bad);
    }
  });
});
