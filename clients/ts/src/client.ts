// RealtimeClient: one WebSocket to websocket-service, kept open. Implements docs/FRONTEND.md:
// bearer-subprotocol auth with a token provider, typed events, close-code handling and jittered
// exponential reconnect. No dependencies; the WebSocket class, timers, clock and randomness can
// be injected (tests, non-browser runtimes).

import {
  type BackoffOptions,
  CloseCodes,
  DEFAULT_BACKOFF,
  type TokenRefresh,
  decide,
  fullJitter,
} from "./policy.js";

// ------------------------------------------------------------------------------------------
// The WebSocket this client needs (the browser's, or any class with the same shape)
// ------------------------------------------------------------------------------------------

// A function type checked bivariantly in its parameter, so that the DOM's WebSocket (whose
// handlers take a full MessageEvent / CloseEvent) is assignable to WebSocketLike.
type Handler<E> = { bivarianceHack(event: E): void }["bivarianceHack"];

/** The part of a close event this client reads. */
export interface CloseEventLike {
  readonly code: number;
  readonly reason: string;
  readonly wasClean: boolean;
}

/** The part of a message event this client reads. */
export interface MessageEventLike {
  readonly data: unknown;
}

/** The part of the WebSocket API this client uses. */
export interface WebSocketLike {
  readonly protocol: string;
  binaryType: string;
  onopen: Handler<unknown> | null;
  onmessage: Handler<MessageEventLike> | null;
  onclose: Handler<CloseEventLike> | null;
  onerror: Handler<unknown> | null;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor, e.g. the browser's `WebSocket`. */
export type WebSocketFactory = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** setTimeout / clearTimeout. */
export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

// ------------------------------------------------------------------------------------------
// Options and events
// ------------------------------------------------------------------------------------------

/** Why the token provider is called. */
export type TokenReason = "initial" | "reconnect" | TokenRefresh;

export interface TokenRequest {
  /**
   * `initial`: first connect. `reconnect`: any later attempt (a cached token is fine if it is
   * still valid). `expired`: the server closed with 4001, return a fresh token. `rejected`: the
   * server refused `rejectedToken` (1008): return a different one, or null to give up.
   */
  reason: TokenReason;
  /** With `rejected` and `expired`: the token the server no longer accepts. */
  previousToken?: string;
}

/** Returns the JWT for the next connection attempt; null or "" means "signed out": stop. */
export type TokenProvider = (
  request: TokenRequest,
) => string | null | undefined | Promise<string | null | undefined>;

export interface RealtimeClientOptions {
  /** The endpoint, e.g. `wss://realtime.example.com/ws` (no token in it). */
  url: string;
  /** Called before every connection attempt. */
  getToken: TokenProvider;
  /**
   * `subprotocol` (default): `Sec-WebSocket-Protocol: bearer, <JWT>`, which keeps the token out
   * of URLs, proxy access logs and browser history. `query`: `?token=<JWT>`, the old contract.
   */
  tokenTransport?: "subprotocol" | "query";
  /** Reconnect timing (see DEFAULT_BACKOFF). */
  backoff?: Partial<BackoffOptions>;
  /** A connection open at least this long counts as stable: the backoff starts over. */
  stableAfterMs?: number;
  /** Give up on a handshake that has not completed after this long, and retry. */
  connectTimeoutMs?: number;
  /** Emit `degraded` after this many consecutive attempts that never opened. */
  degradedAfterFailures?: number;
  /** The WebSocket class; defaults to the global one. */
  WebSocket?: WebSocketFactory;
  /** Uniform in [0, 1); defaults to Math.random. */
  random?: () => number;
  /** Milliseconds clock; defaults to Date.now. */
  now?: () => number;
  /** Defaults to the global setTimeout / clearTimeout. */
  timers?: Timers;
}

/** The JSON reason websocket-service puts in its close frames. */
export interface ServerCloseReason {
  error_code: string;
  message: string;
  correlation_id: string;
}

export interface ClientEvents {
  /** Connected. After a reconnect, messages published during the gap are lost: re-sync. */
  open: { reconnect: boolean; protocol: string };
  /** One message as published, bytes unchanged; `json` is the parsed text, if it is JSON. */
  message: { data: string | ArrayBuffer; json: unknown };
  /** The socket closed; `willRetry` says whether a reconnect follows. */
  close: {
    code: number;
    reason: string;
    error?: ServerCloseReason;
    wasClean: boolean;
    willRetry: boolean;
  };
  /** A reconnect is scheduled in `delayMs`; `attempt` counts attempts since the last stable connection. */
  reconnecting: { attempt: number; delayMs: number; refresh?: TokenRefresh };
  /** `failures` consecutive attempts never opened: WebSockets may be blocked; poll meanwhile. */
  degraded: { failures: number };
  /** The client stopped for good: `client` (close() called), `auth` (token refused twice, or the
   * provider returned the rejected token again), `no-token` (provider returned null). */
  stopped: { reason: "client" | "auth" | "no-token"; code?: number; error?: ServerCloseReason };
  /** The token provider threw, or the WebSocket constructor did; a retry follows. */
  error: { error: unknown; during: "token" | "connect" };
}

export type ClientState = "idle" | "connecting" | "open" | "waiting" | "stopped";

type Listener<K extends keyof ClientEvents> = (event: ClientEvents[K]) => void;

/** Parses a close reason; undefined unless it is the server's JSON. */
export function parseCloseReason(reason: string): ServerCloseReason | undefined {
  if (!reason.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(reason);
    if (
      typeof value === "object" &&
      value !== null &&
      typeof (value as Record<string, unknown>).error_code === "string"
    ) {
      const v = value as Record<string, unknown>;
      return {
        error_code: v.error_code as string,
        message: typeof v.message === "string" ? v.message : "",
        correlation_id: typeof v.correlation_id === "string" ? v.correlation_id : "",
      };
    }
  } catch {
    // Not JSON: not one of the server's reasons.
  }
  return undefined;
}

// ------------------------------------------------------------------------------------------
// The client
// ------------------------------------------------------------------------------------------

export class RealtimeClient {
  readonly #url: string;
  readonly #getToken: TokenProvider;
  readonly #transport: "subprotocol" | "query";
  readonly #backoff: BackoffOptions;
  readonly #stableAfterMs: number;
  readonly #connectTimeoutMs: number;
  readonly #degradedAfter: number;
  readonly #WebSocket: WebSocketFactory | undefined;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #timers: Timers;
  readonly #listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();

  #state: ClientState = "idle";
  #socket: WebSocketLike | null = null;
  #timer: unknown = undefined;
  /** Bumped by every attempt and by close(): late callbacks of older attempts are ignored. */
  #generation = 0;
  #openedAt: number | undefined;
  #opens = 0;
  /** Attempts since the last stable connection. */
  #failures = 0;
  /** Consecutive attempts that never opened. */
  #unopened = 0;
  #degraded = false;
  #previousAuthFailure = false;
  #pendingRefresh: TokenRefresh | undefined;
  #token: string | undefined;

  constructor(options: RealtimeClientOptions) {
    this.#url = options.url;
    this.#getToken = options.getToken;
    this.#transport = options.tokenTransport ?? "subprotocol";
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#stableAfterMs = options.stableAfterMs ?? 5_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#degradedAfter = options.degradedAfterFailures ?? 3;
    this.#WebSocket =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
    this.#timers = options.timers ?? {
      setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
    };
  }

  /** idle → connecting → open → (waiting → connecting → open)* → stopped. */
  get state(): ClientState {
    return this.#state;
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(type) as Set<Listener<K>> | undefined;
    if (!set) {
      set = new Set();
      this.#listeners.set(type, set as Set<Listener<never>>);
    }
    const listeners = set;
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }

  /** Starts connecting (once; later calls do nothing until close()). */
  connect(): void {
    if (this.#state !== "idle") return;
    void this.#attempt();
  }

  /** Closes for good (code 1000); no reconnect follows. */
  close(): void {
    if (this.#state === "stopped") return;
    this.#generation++;
    this.#clearTimer();
    const socket = this.#socket;
    this.#socket = null;
    if (socket) {
      detach(socket);
      socket.close(CloseCodes.NORMAL, "client closed");
    }
    this.#stop({ reason: "client" });
  }

  #emit<K extends keyof ClientEvents>(type: K, event: ClientEvents[K]): void {
    const set = this.#listeners.get(type) as Set<Listener<K>> | undefined;
    // A copy: a listener may unsubscribe itself (or others) while we iterate.
    for (const listener of [...(set ?? [])]) {
      try {
        listener(event);
      } catch (error) {
        // A throwing listener must not break the reconnect loop; surface it asynchronously.
        this.#timers.setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      this.#timers.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #stop(event: ClientEvents["stopped"]): void {
    this.#state = "stopped";
    this.#emit("stopped", event);
  }

  async #attempt(): Promise<void> {
    const generation = ++this.#generation;
    this.#state = "connecting";
    const refresh = this.#pendingRefresh;
    this.#pendingRefresh = undefined;
    const reason: TokenReason = refresh ?? (this.#opens === 0 && this.#failures === 0 ? "initial" : "reconnect");
    const request: TokenRequest =
      refresh && this.#token !== undefined ? { reason, previousToken: this.#token } : { reason };

    let token: string | null | undefined;
    try {
      token = await this.#getToken(request);
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#emit("error", { error, during: "token" });
      this.#retryAfterFailure();
      return;
    }
    if (generation !== this.#generation) return;
    if (!token) {
      this.#stop({ reason: "no-token" });
      return;
    }
    if (refresh === "rejected" && token === this.#token) {
      // The provider has nothing better than the token the server refused.
      this.#stop({ reason: "auth", code: CloseCodes.POLICY_VIOLATION });
      return;
    }
    this.#token = token;

    let socket: WebSocketLike;
    try {
      if (!this.#WebSocket) throw new Error("no WebSocket implementation in this environment");
      socket =
        this.#transport === "subprotocol"
          ? new this.#WebSocket(this.#url, ["bearer", token])
          : new this.#WebSocket(withToken(this.#url, token));
    } catch (error) {
      this.#emit("error", { error, during: "connect" });
      this.#retryAfterFailure();
      return;
    }
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    this.#timer = this.#timers.setTimeout(() => {
      // The handshake hangs (a black-holing proxy, a dead network): give up on this attempt.
      this.#timer = undefined;
      if (this.#socket !== socket) return;
      detach(socket);
      socket.close();
      this.#onClose(socket, { code: CloseCodes.ABNORMAL, reason: "", wasClean: false });
    }, this.#connectTimeoutMs);

    socket.onopen = () => {
      if (this.#socket !== socket) return;
      this.#clearTimer();
      this.#state = "open";
      this.#openedAt = this.#now();
      this.#opens++;
      this.#unopened = 0;
      this.#degraded = false;
      this.#emit("open", { reconnect: this.#opens > 1, protocol: socket.protocol });
    };
    socket.onmessage = (event) => {
      if (this.#socket !== socket) return;
      const data = event.data;
      if (typeof data === "string") {
        this.#emit("message", { data, json: parseJson(data) });
      } else if (data instanceof ArrayBuffer) {
        this.#emit("message", { data, json: undefined });
      }
    };
    socket.onclose = (event) => this.#onClose(socket, event);
    // Browsers fire `error` without details, always followed by `close`: handled there.
    socket.onerror = () => {};
  }

  #onClose(socket: WebSocketLike, event: CloseEventLike): void {
    if (this.#socket !== socket) return;
    detach(socket);
    this.#socket = null;
    this.#clearTimer();
    const opened = this.#openedAt !== undefined;
    const stable = opened && this.#now() - (this.#openedAt as number) >= this.#stableAfterMs;
    this.#openedAt = undefined;
    if (stable) {
      this.#failures = 0;
      this.#previousAuthFailure = false;
    }
    if (!opened) this.#unopened++;

    const error = parseCloseReason(event.reason);
    const decision = decide(
      {
        code: event.code,
        failures: this.#failures,
        previousWasAuthFailure: this.#previousAuthFailure,
      },
      this.#backoff,
      this.#random,
    );
    this.#previousAuthFailure = event.code === CloseCodes.POLICY_VIOLATION;
    this.#emit("close", {
      code: event.code,
      reason: event.reason,
      ...(error ? { error } : {}),
      wasClean: event.wasClean,
      willRetry: decision.action === "retry",
    });
    if (decision.action === "stop") {
      this.#stop({ reason: decision.reason, code: event.code, ...(error ? { error } : {}) });
      return;
    }
    this.#failures++;
    this.#schedule(decision.delayMs, decision.refresh);
  }

  /** An attempt failed before a socket existed (token provider or constructor threw). */
  #retryAfterFailure(): void {
    this.#unopened++;
    const delayMs = fullJitter(
      this.#backoff.initialDelayMs,
      this.#backoff.maxDelayMs,
      this.#failures,
      this.#random,
    );
    this.#failures++;
    this.#schedule(delayMs, undefined);
  }

  #schedule(delayMs: number, refresh: TokenRefresh | undefined): void {
    if (this.#unopened >= this.#degradedAfter && !this.#degraded) {
      this.#degraded = true;
      this.#emit("degraded", { failures: this.#unopened });
    }
    // A listener may have called close().
    if (this.#state === "stopped") return;
    this.#pendingRefresh = refresh;
    this.#state = "waiting";
    this.#emit("reconnecting", {
      attempt: this.#failures,
      delayMs,
      ...(refresh ? { refresh } : {}),
    });
    if (this.#state !== "waiting") return;
    const generation = this.#generation;
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined;
      if (generation === this.#generation && this.#state === "waiting") void this.#attempt();
    }, delayMs);
  }
}

function detach(socket: WebSocketLike): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onclose = null;
  socket.onerror = null;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** `url` with `token=<JWT>` added to its query string. */
export function withToken(url: string, token: string): string {
  const hashAt = url.indexOf("#");
  const base = hashAt === -1 ? url : url.slice(0, hashAt);
  const separator = base.includes("?") ? "&" : "?";
  return `${base}${separator}token=${encodeURIComponent(token)}`;
}
