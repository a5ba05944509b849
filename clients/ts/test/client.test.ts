import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";

import {
  type ClientEvents,
  type WebSocketFactory,
  RealtimeClient,
  parseCloseReason,
  withToken,
} from "../src/index.js";
import { FakeClock, FakeWebSocket, flush } from "./fakes.js";
import { URL, setup } from "./harness.js";

const SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE";

beforeEach(() => FakeWebSocket.reset());

describe("RealtimeClient: connecting", () => {
  it("sends the token as the bearer subprotocol, never in the URL", async () => {
    const { client, requests, of } = setup();
    client.connect();
    await flush();
    const socket = FakeWebSocket.last();
    assert.equal(socket.url, URL);
    assert.deepEqual(socket.protocols, ["bearer", "token-1"]);
    assert.deepEqual(requests, [{ reason: "initial" }]);
    assert.equal(client.state, "connecting");
    socket.serverOpen();
    assert.equal(client.state, "open");
    assert.deepEqual(of("open"), [{ reconnect: false, protocol: "bearer" }]);
    assert.equal(socket.binaryType, "arraybuffer");
  });

  it("query transport appends an encoded token to the URL", async () => {
    const { client } = setup({ tokenTransport: "query", tokens: ["a+b/c"] });
    client.connect();
    await flush();
    assert.equal(FakeWebSocket.last().url, `${URL}?token=a%2Bb%2Fc`);
    assert.deepEqual(FakeWebSocket.last().protocols, []);
    assert.equal(withToken("wss://h/ws?x=1#frag", "t"), "wss://h/ws?x=1&token=t");
  });

  it("connect() twice opens one socket", async () => {
    const { client } = setup();
    client.connect();
    client.connect();
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
  });
});

describe("RealtimeClient: messages", () => {
  it("delivers text as published, with parsed JSON when it is JSON, and binary as ArrayBuffer", async () => {
    const { client, of } = setup();
    client.connect();
    await flush();
    const socket = FakeWebSocket.last();
    socket.serverOpen();
    socket.serverMessage('{"type":"file.assigned","id":7}');
    socket.serverMessage("plain text");
    const bytes = new Uint8Array([0xff, 0x00]).buffer;
    socket.serverMessage(bytes);
    assert.deepEqual(of("message"), [
      { data: '{"type":"file.assigned","id":7}', json: { type: "file.assigned", id: 7 } },
      { data: "plain text", json: undefined },
      { data: bytes, json: undefined },
    ]);
  });
});

describe("RealtimeClient: close codes", () => {
  it("1012 (deploy): reconnects after a jittered delay under 1 s and reports a reconnect", async () => {
    const { client, clock, requests, of } = setup({ random: () => 0.5 });
    client.connect();
    await flush();
    FakeWebSocket.last().serverOpen();
    clock.advance(60_000);
    FakeWebSocket.last().serverClose(1012, SERVICE_UNAVAILABLE);

    const [close] = of("close");
    assert.equal(close?.code, 1012);
    assert.equal(close?.error?.error_code, SERVICE_UNAVAILABLE);
    assert.equal(close?.willRetry, true);
    assert.deepEqual(of("reconnecting"), [{ attempt: 1, delayMs: 500 }]);
    assert.equal(client.state, "waiting");

    clock.advance(499);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1, "not before the jitter elapsed");
    clock.advance(1);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.deepEqual(requests.at(-1), { reason: "reconnect" });
    FakeWebSocket.last().serverOpen();
    assert.deepEqual(of("open").at(-1), { reconnect: true, protocol: "bearer" });
  });

  it("4001 (token expired): asks for a fresh token and reconnects quickly", async () => {
    const { client, clock, requests, of } = setup();
    client.connect();
    await flush();
    FakeWebSocket.last().serverOpen();
    clock.advance(3_600_000);
    FakeWebSocket.last().serverClose(4001, "AUTHENTICATION_ERROR");
    assert.deepEqual(of("reconnecting"), [{ attempt: 1, delayMs: 250, refresh: "expired" }]);
    clock.advance(250);
    await flush();
    assert.deepEqual(requests.at(-1), { reason: "expired", previousToken: "token-1" });
    assert.deepEqual(FakeWebSocket.last().protocols, ["bearer", "token-2"]);
  });

  it("1008 (token refused): one retry with a fresh token, then stops", async () => {
    const { client, clock, requests, of } = setup();
    client.connect();
    await flush();
    FakeWebSocket.last().serverOpen();
    FakeWebSocket.last().serverClose(1008, "AUTHENTICATION_ERROR");
    assert.equal(of("close")[0]?.willRetry, true);
    clock.advance(1_000);
    await flush();
    assert.deepEqual(requests.at(-1), { reason: "rejected", previousToken: "token-1" });
    FakeWebSocket.last().serverOpen();
    FakeWebSocket.last().serverClose(1008, "AUTHENTICATION_ERROR");
    assert.equal(of("close")[1]?.willRetry, false);
    assert.deepEqual(of("stopped"), [
      {
        reason: "auth",
        code: 1008,
        error: { error_code: "AUTHENTICATION_ERROR", message: "test", correlation_id: "c-1" },
      },
    ]);
    assert.equal(client.state, "stopped");
    clock.advance(600_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2, "no attempt after stopping");
  });

  it("1008: stops at once when the provider only has the rejected token", async () => {
    const { client, clock, of } = setup({ tokens: ["same"] });
    client.connect();
    await flush();
    FakeWebSocket.last().serverOpen();
    FakeWebSocket.last().serverClose(1008, "AUTHENTICATION_ERROR");
    clock.advance(1_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(of("stopped"), [{ reason: "auth", code: 1008 }]);
  });

  it("4003 (disconnected by the operator): stops without asking for a token", async () => {
    const { client, clock, requests, of } = setup();
    client.connect();
    await flush();
    FakeWebSocket.last().serverOpen();
    clock.advance(60_000);
    FakeWebSocket.last().serverClose(4003, "AUTHENTICATION_ERROR");
    assert.equal(of("close")[0]?.willRetry, false);
    assert.deepEqual(of("stopped"), [
      {
        reason: "auth",
        code: 4003,
        error: { error_code: "AUTHENTICATION_ERROR", message: "test", correlation_id: "c-1" },
      },
    ]);
    clock.advance(600_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(requests.length, 1);
  });

  it("1013 and 4000 (capacity): wait at least 5 s", async () => {
    for (const code of [1013, 4000]) {
      FakeWebSocket.reset();
      const { client, clock, of } = setup({ random: () => 0 });
      client.connect();
      await flush();
      FakeWebSocket.last().serverOpen();
      FakeWebSocket.last().serverClose(code, "QUOTA_EXCEEDED");
      assert.equal(of("reconnecting")[0]?.delayMs, 5_000);
      clock.advance(4_999);
      await flush();
      assert.equal(FakeWebSocket.instances.length, 1);
      clock.advance(1);
      await flush();
      assert.equal(FakeWebSocket.instances.length, 2);
    }
  });

  it("1009 / 4008 / 4009 / 1011: reconnect with backoff and report the server's reason", async () => {
    const { client, clock, of } = setup();
    client.connect();
    await flush();
    const codes: [number, string][] = [
      [1009, "VALIDATION_ERROR"],
      [4008, "TIMEOUT"],
      [4009, "RATE_LIMIT"],
      [1011, "CONNECTION_ERROR"],
    ];
    for (const [code, errorCode] of codes) {
      FakeWebSocket.last().serverOpen();
      clock.advance(10_000);
      FakeWebSocket.last().serverClose(code, errorCode);
      clock.advance(1_000);
      await flush();
    }
    assert.deepEqual(
      of("close").map((c) => [c.code, c.error?.error_code, c.willRetry]),
      codes.map(([code, errorCode]) => [code, errorCode, true]),
    );
    assert.equal(FakeWebSocket.instances.length, codes.length + 1);
  });
});

describe("RealtimeClient: backoff", () => {
  it("grows exponentially with full jitter up to the cap, and signals degraded after 3 failures", async () => {
    const { client, clock, of } = setup({ random: () => 0.999_999 });
    client.connect();
    await flush();
    for (let i = 0; i < 7; i++) {
      FakeWebSocket.last().fail();
      clock.advance(of("reconnecting").at(-1)?.delayMs ?? 0);
      await flush();
    }
    assert.deepEqual(
      of("reconnecting").map((r) => r.delayMs),
      [999, 1999, 3999, 7999, 15_999, 29_999, 29_999],
    );
    assert.deepEqual(of("degraded"), [{ failures: 3 }]);
    // Recovery: the next open reports a reconnect, and degraded can be signalled again later.
    FakeWebSocket.last().serverOpen();
    assert.equal(of("open").length, 1);
  });

  it("a connection that stayed open starts the backoff over; a short one does not", async () => {
    const { client, clock, of } = setup({ random: () => 0.999_999 });
    client.connect();
    await flush();
    FakeWebSocket.last().fail();
    clock.advance(999);
    await flush();
    FakeWebSocket.last().fail();
    clock.advance(1999);
    await flush();
    // Opens, then is closed at once (e.g. refused after the upgrade): still backing off.
    FakeWebSocket.last().serverOpen();
    clock.advance(100);
    FakeWebSocket.last().serverClose(1011, "CONNECTION_ERROR");
    assert.equal(of("reconnecting").at(-1)?.delayMs, 3999);
    clock.advance(3999);
    await flush();
    // Opens and stays up past stableAfterMs (5 s): the next failure starts from the first window.
    FakeWebSocket.last().serverOpen();
    clock.advance(5_000);
    FakeWebSocket.last().fail();
    assert.deepEqual(of("reconnecting").at(-1), { attempt: 1, delayMs: 999 });
  });

  it("abandons a handshake that does not complete within connectTimeoutMs", async () => {
    const { client, clock, of } = setup({ connectTimeoutMs: 2_000 });
    client.connect();
    await flush();
    const hung = FakeWebSocket.last();
    clock.advance(2_000);
    assert.deepEqual(hung.closedByClient, {});
    assert.equal(of("close")[0]?.code, 1006);
    clock.advance(500);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 2);
    hung.serverOpen();
    assert.equal(of("open").length, 0, "the abandoned socket is ignored");
  });
});

describe("RealtimeClient: token provider", () => {
  it("a failing provider is reported and retried; null stops the client", async () => {
    let calls = 0;
    const clock = new FakeClock();
    const errors: ClientEvents["error"][] = [];
    const stopped: ClientEvents["stopped"][] = [];
    const client = new RealtimeClient({
      url: URL,
      getToken: async () => {
        calls++;
        if (calls === 1) throw new Error("token endpoint down");
        return null;
      },
      WebSocket: FakeWebSocket,
      timers: clock,
      now: clock.now,
      random: () => 0.5,
    });
    client.on("error", (e) => errors.push(e));
    client.on("stopped", (e) => stopped.push(e));
    client.connect();
    await flush();
    assert.equal(errors.length, 1);
    assert.equal(errors[0]?.during, "token");
    assert.equal(client.state, "waiting");
    clock.advance(500);
    await flush();
    assert.deepEqual(stopped, [{ reason: "no-token" }]);
    assert.equal(FakeWebSocket.instances.length, 0);
  });
});

describe("RealtimeClient: close()", () => {
  it("closes with 1000, cancels a pending reconnect and emits stopped", async () => {
    const { client, clock, of } = setup();
    client.connect();
    await flush();
    const socket = FakeWebSocket.last();
    socket.serverOpen();
    client.close();
    assert.deepEqual(socket.closedByClient, { code: 1000, reason: "client closed" });
    assert.deepEqual(of("stopped"), [{ reason: "client" }]);
    assert.equal(of("close").length, 0);

    FakeWebSocket.reset();
    const second = setup();
    second.client.connect();
    await flush();
    FakeWebSocket.last().fail();
    second.client.close();
    second.clock.advance(60_000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1, "the scheduled reconnect was cancelled");
    assert.equal(clock.pending().length, 0);
  });

  it("close() during the token request wins over the pending connect", async () => {
    let release: (token: string) => void = () => {};
    const client = new RealtimeClient({
      url: URL,
      getToken: () => new Promise<string>((resolve) => (release = resolve)),
      WebSocket: FakeWebSocket,
    });
    client.connect();
    client.close();
    release("late");
    await flush();
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(client.state, "stopped");
  });
});

describe("parseCloseReason", () => {
  it("reads the server's JSON reason and ignores anything else", () => {
    assert.deepEqual(
      parseCloseReason('{"error_code":"TIMEOUT","message":"idle timeout","correlation_id":"x"}'),
      { error_code: "TIMEOUT", message: "idle timeout", correlation_id: "x" },
    );
    assert.equal(parseCloseReason(""), undefined);
    assert.equal(parseCloseReason("bye"), undefined);
    assert.equal(parseCloseReason('{"error_code":'), undefined);
    assert.equal(parseCloseReason('{"code":1}'), undefined);
  });
});

// Compile-time check: the browser's WebSocket class can be passed as the WebSocket option.
export function browserWebSocketFits(ws: typeof WebSocket): WebSocketFactory {
  return ws;
}
