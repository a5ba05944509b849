// A client wired to the fakes, recording every event it emits in order.

import {
  type ClientEvents,
  type RealtimeClientOptions,
  type TokenRequest,
  RealtimeClient,
} from "../src/index.js";
import { FakeClock, FakeWebSocket } from "./fakes.js";

export const URL = "wss://realtime.example.test/ws";

type Recorded = { [K in keyof ClientEvents]: [K, ClientEvents[K]] }[keyof ClientEvents];

/** A client wired to fakes, with every event recorded in order. */
export function setup(
  options: Partial<RealtimeClientOptions> & { tokens?: (string | null)[]; random?: () => number } = {},
) {
  const clock = new FakeClock();
  const tokens = options.tokens ?? ["token-1", "token-2", "token-3", "token-4", "token-5"];
  const requests: TokenRequest[] = [];
  const events: Recorded[] = [];
  const client = new RealtimeClient({
    url: URL,
    getToken: (request) => {
      requests.push(request);
      return tokens[Math.min(requests.length - 1, tokens.length - 1)];
    },
    WebSocket: FakeWebSocket,
    timers: clock,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  for (const type of [
    "open",
    "message",
    "close",
    "reconnecting",
    "degraded",
    "stopped",
    "error",
    "welcome",
    "reset",
  ] as const) {
    client.on(type, (event) => events.push([type, event] as Recorded));
  }
  const of = <K extends keyof ClientEvents>(type: K): ClientEvents[K][] =>
    events.filter((e) => e[0] === type).map((e) => e[1] as ClientEvents[K]);
  return { client, clock, requests, events, of };
}
