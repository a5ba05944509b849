// Test doubles: a manual clock with timers, and a WebSocket whose server side the test drives.

import type { CloseEventLike, MessageEventLike, Timers, WebSocketLike } from "../src/index.js";

/** A clock that only moves when the test says so; timers fire in time order. */
export class FakeClock implements Timers {
  #now = 1_000_000;
  #nextId = 1;
  #timers = new Map<number, { at: number; callback: () => void }>();

  now = (): number => this.#now;

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + ms, callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Pending timers' delays from now, sorted. */
  pending(): number[] {
    return [...this.#timers.values()].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      let next: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= until && (!next || entry[1].at < next[1].at)) next = entry;
      }
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].at;
      next[1].callback();
    }
    this.#now = until;
  }
}

/** Lets pending promise callbacks (the token provider's) run. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A WebSocket whose server side is driven by the test; every instance is recorded. */
export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];

  static reset(): void {
    FakeWebSocket.instances = [];
  }

  static last(): FakeWebSocket {
    const socket = FakeWebSocket.instances.at(-1);
    if (!socket) throw new Error("no socket was created");
    return socket;
  }

  readonly url: string;
  readonly protocols: string[];
  protocol = "";
  binaryType = "blob";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: MessageEventLike) => void) | null = null;
  onclose: ((event: CloseEventLike) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** What the client passed to close(), if it did. */
  closedByClient: { code?: number; reason?: string } | undefined;

  constructor(url: string, protocols?: string | string[]) {
    this.url = url;
    this.protocols = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
    FakeWebSocket.instances.push(this);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = {
      ...(code !== undefined ? { code } : {}),
      ...(reason !== undefined ? { reason } : {}),
    };
  }

  /**
   * The handshake succeeds. Like websocket-service, the server selects `notify.v2` when it was
   * offered, else `bearer` when that was; `protocol` overrides (e.g. "bearer" for a server
   * older than protocol v2).
   */
  serverOpen(protocol?: string): void {
    this.protocol =
      protocol ??
      (this.protocols.includes("notify.v2")
        ? "notify.v2"
        : this.protocols[0] === "bearer"
          ? "bearer"
          : "");
    this.onopen?.({});
  }

  serverMessage(data: string | ArrayBuffer): void {
    this.onmessage?.({ data });
  }

  /** A v2 frame: one JSON object in a text frame. */
  serverFrame(frame: Record<string, unknown>): void {
    this.serverMessage(JSON.stringify(frame));
  }

  /** The query parameter `name` of the URL this socket was opened with (null: absent). */
  query(name: string): string | null {
    return new URL(this.url).searchParams.get(name);
  }

  /** The server closes with `code` and, like websocket-service, a JSON reason. */
  serverClose(code: number, errorCode?: string): void {
    const reason = errorCode
      ? JSON.stringify({ error_code: errorCode, message: "test", correlation_id: "c-1" })
      : "";
    this.onclose?.({ code, reason, wasClean: true });
  }

  /** The connection fails without a close frame (network, refused handshake). */
  fail(): void {
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: "", wasClean: false });
  }
}
