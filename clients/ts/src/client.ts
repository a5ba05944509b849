// RealtimeClient: one WebSocket to websocket-service, kept open. Implements docs/FRONTEND.md:
// bearer-subprotocol auth with a token provider, typed events, close-code handling and jittered
// exponential reconnect, and (opt-in) protocol v2: positions, resume with `since`, and resets.
// No dependencies; the WebSocket class, timers, clock and randomness can be injected (tests,
// non-browser runtimes).

import {
  type BackoffOptions,
  CloseCodes,
  DEFAULT_BACKOFF,
  type Decision,
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

/** The subprotocol that opts a socket into protocol v2. */
export const V2_SUBPROTOCOL = "notify.v2";

/**
 * Where a durable message sits in the user's history (protocol v2): `epoch` names one
 * incarnation of the history (`[A-Za-z0-9_-]{1,32}`), `offset` counts its messages 1, 2, 3, …
 * (0: before the first). Sent back to the server as `since=<epoch>:<offset>`.
 */
export interface Position {
  epoch: string;
  offset: number;
}

const EPOCH = /^[A-Za-z0-9_-]{1,32}$/;

/** The position if `value` is a valid one (a copy with only `epoch` and `offset`), else undefined. */
function checkedPosition(value: unknown): Position | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { epoch, offset } = value as Record<string, unknown>;
  if (typeof epoch !== "string" || !EPOCH.test(epoch)) return undefined;
  if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) return undefined;
  return { epoch, offset };
}

/** `<epoch>:<offset>`, the form of the `since` query parameter. */
export function formatPosition(position: Position): string {
  return `${position.epoch}:${position.offset}`;
}

/** Parses `<epoch>:<offset>` (e.g. a state endpoint's `since`); undefined when it is not one. */
export function parsePosition(text: string): Position | undefined {
  const at = text.lastIndexOf(":");
  const offset = text.slice(at + 1);
  if (at < 0 || !/^[0-9]{1,16}$/.test(offset)) return undefined;
  return checkedPosition({ epoch: text.slice(0, at), offset: Number(offset) });
}

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
  /**
   * `legacy` (default): every frame is a published payload, bytes unchanged, at most once.
   * `v2`: opt into protocol v2 (subprotocol `notify.v2`, or `v=2` with the query transport):
   * durable messages carry a position, and reconnects resume after the last one delivered
   * (`since`), so nothing is lost or repeated unless the client is told (`reset`).
   */
  protocol?: "legacy" | "v2";
  /**
   * v2: the position the application's state is at (from its state endpoint), so that the
   * first connect resumes too. Without it, the first connect starts at the user's current
   * position.
   */
  since?: Position;
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

/** Why the application must refetch its state (protocol v2). */
export type ResetReason = "not_recovered" | "reset";

export interface ClientEvents {
  /**
   * Connected. Legacy: after a reconnect, messages published during the gap are lost: re-sync.
   * v2: nothing to do here; the gap is replayed, or a `reset` says otherwise.
   */
  open: { reconnect: boolean; protocol: string };
  /**
   * One message. Legacy: `data` is the frame as published, bytes unchanged, and `json` its
   * parse when it is JSON. v2: `json` is the payload (parsed when it was JSON text; a non-JSON
   * payload as a string), `data` the payload as text (a JSON payload re-serialised), and
   * `position` is set for durable messages.
   */
  message: { data: string | ArrayBuffer; json: unknown; position?: Position };
  /**
   * v2: the server's first frame on each socket: the user's current position, and with
   * `since` (the position the client resumed from) whether everything after it follows.
   */
  welcome: { epoch: string; offset: number; recovered?: boolean; since?: Position };
  /**
   * v2: messages were lost and cannot be replayed: refetch the state from the backend, then
   * (optionally) `resumeFrom()` the position it returned. `not_recovered`: the position
   * resumed from is older than the history kept or of another epoch. `reset`: the server found
   * a gap on a live socket. Messages continue after `epoch:offset`.
   */
  reset: { epoch: string; offset: number; reason: ResetReason };
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
  /**
   * `token`: the provider threw; `connect`: the WebSocket constructor did (a retry follows).
   * `protocol` (v2): the server did not speak v2 (the socket then carries raw payloads, at most
   * once), or sent a frame out of order: a malformed one is skipped, a gap in the offsets or
   * an unannounced epoch change closes the socket and resumes from the last position.
   */
  error: { error: unknown; during: "token" | "connect" | "protocol" };
}

export type ClientState = "idle" | "connecting" | "open" | "waiting" | "stopped";

/** How the current socket's frames are read: v2 before / after its welcome, or raw payloads. */
type Framing = "legacy" | "v2-pending" | "v2";

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
  readonly #protocol: "legacy" | "v2";
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
  /** v2: the position of the last durable message delivered (or the start the server named). */
  #position: Position | undefined;
  #framing: Framing = "legacy";
  /** v2: the `since` the current socket was opened with. */
  #sentSince: Position | undefined;
  /** v2: the last `since` the server answered `recovered: false` to. */
  #refusedSince: Position | undefined;

  constructor(options: RealtimeClientOptions) {
    this.#url = options.url;
    this.#getToken = options.getToken;
    this.#transport = options.tokenTransport ?? "subprotocol";
    this.#protocol = options.protocol ?? "legacy";
    if (options.since !== undefined) {
      if (this.#protocol !== "v2") throw new Error('the since option needs protocol: "v2"');
      this.#position = validPosition(options.since);
    }
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

  /**
   * v2: the position of the last durable message handed to the application, or where the
   * stream starts (the `since` option, a welcome, a reset); undefined before any of these.
   * Store it to resume a later client from it (the `since` option).
   */
  get position(): Position | undefined {
    return this.#position ? { ...this.#position } : undefined;
  }

  /**
   * v2: the application's state is now at `position` (its state endpoint returned it, e.g. after
   * a `reset`): deliver only what follows it. When the open socket's stream already continues
   * after `position`, later messages up to it are dropped; otherwise the client reconnects at
   * once with `since=position`, so that what follows it is replayed.
   */
  resumeFrom(position: Position): void {
    if (this.#protocol !== "v2") throw new Error('resumeFrom() needs protocol: "v2"');
    const next = validPosition(position);
    const current = this.#position;
    if (current && this.#refusedSince && samePosition(next, this.#refusedSince)) {
      // The server refused exactly this position already (a history only moves forward, so it
      // will again): reconnecting with it would only produce another reset, the application
      // another refetch returning the same stale position, and so on forever.
      this.#emit("error", {
        error: new Error(
          `resumeFrom(${formatPosition(next)}): the server no longer has this position; ` +
            `continuing from ${formatPosition(current)}`,
        ),
        during: "protocol",
      });
      return;
    }
    this.#position = next;
    const socket = this.#socket;
    if (!socket || this.#framing === "legacy") return; // the next attempt sends since=next
    const continues =
      this.#framing === "v2" &&
      current !== undefined &&
      current.epoch === next.epoch &&
      next.offset >= current.offset;
    if (continues) return;
    // This socket's stream cannot continue from `next` (it has passed it, is in another epoch,
    // or was opened with another `since`): reconnect from it. Not a failure: no backoff.
    detach(socket);
    socket.close(CloseCodes.NORMAL, "resume");
    this.#onClose(socket, { code: CloseCodes.NORMAL, reason: "resume", wasClean: true }, true);
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

    const v2 = this.#protocol === "v2";
    const since = v2 ? this.#position : undefined;
    const query: [string, string][] = [];
    if (v2 && this.#transport === "query") query.push(["v", "2"]);
    if (since) query.push(["since", formatPosition(since)]);
    let socket: WebSocketLike;
    try {
      if (!this.#WebSocket) throw new Error("no WebSocket implementation in this environment");
      const url = withQuery(this.#url, query);
      socket =
        this.#transport === "subprotocol"
          ? new this.#WebSocket(url, v2 ? ["bearer", token, V2_SUBPROTOCOL] : ["bearer", token])
          : new this.#WebSocket(withToken(url, token));
    } catch (error) {
      this.#emit("error", { error, during: "connect" });
      this.#retryAfterFailure();
      return;
    }
    this.#socket = socket;
    this.#sentSince = since ? { ...since } : undefined;
    this.#framing = v2 ? "v2-pending" : "legacy";
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
      if (
        this.#socket === socket &&
        this.#framing === "v2-pending" &&
        this.#transport === "subprotocol" &&
        socket.protocol !== V2_SUBPROTOCOL
      ) {
        this.#fallBackToLegacy(`the server selected "${socket.protocol}", not ${V2_SUBPROTOCOL}`);
      }
    };
    socket.onmessage = (event) => {
      if (this.#socket !== socket) return;
      if (this.#framing === "legacy") this.#deliverRaw(event.data);
      else this.#onV2Frame(socket, event.data);
    };
    socket.onclose = (event) => this.#onClose(socket, event);
    // Browsers fire `error` without details, always followed by `close`: handled there.
    socket.onerror = () => {};
  }

  /** A frame of a socket that is not v2: the payload as published. */
  #deliverRaw(data: unknown): void {
    if (typeof data === "string") {
      this.#emit("message", { data, json: parseJson(data) });
    } else if (data instanceof ArrayBuffer) {
      this.#emit("message", { data, json: undefined });
    }
  }

  /** The server does not speak v2 (an older one): read this socket's frames as raw payloads. */
  #fallBackToLegacy(why: string): void {
    this.#framing = "legacy";
    this.#emit("error", {
      error: new Error(`protocol v2 unavailable (${why}): raw payloads, at most once`),
      during: "protocol",
    });
  }

  #protocolError(message: string): void {
    this.#emit("error", { error: new Error(message), during: "protocol" });
  }

  /** The stream on this socket cannot be trusted to continue: reconnect (with backoff) and
   * resume after the last position delivered. */
  #resync(socket: WebSocketLike, message: string): void {
    this.#protocolError(`${message}; reconnecting to resume after ${positionText(this.#position)}`);
    if (this.#socket !== socket) return; // a listener closed the client
    detach(socket);
    socket.close(CloseCodes.NORMAL, "resync");
    this.#onClose(socket, { code: CloseCodes.NORMAL, reason: "resync", wasClean: true });
  }

  #onV2Frame(socket: WebSocketLike, data: unknown): void {
    const frame = typeof data === "string" ? parseJson(data) : undefined;
    const type =
      typeof frame === "object" && frame !== null ? (frame as Record<string, unknown>).type : undefined;
    if (this.#framing === "v2-pending" && type !== "welcome") {
      // A v2 socket starts with a welcome, always: this server relays raw payloads.
      this.#fallBackToLegacy("the first frame is not a welcome");
      if (this.#socket === socket) this.#deliverRaw(data);
      return;
    }
    const f = frame as Record<string, unknown>;
    switch (type) {
      case "welcome":
        if (this.#framing === "v2") this.#protocolError("a second welcome on one socket; skipped");
        else this.#onWelcome(socket, f);
        return;
      case "message":
        this.#onMessage(socket, f);
        return;
      case "reset": {
        const position = checkedPosition(f);
        if (!position) return this.#resync(socket, `malformed reset frame ${String(data)}`);
        this.#position = position;
        this.#emit("reset", { ...position, reason: "reset" });
        return;
      }
      default:
        // Not JSON, or a frame type this version does not know (a later server's): skipped.
        if (type === undefined) this.#protocolError(`not a v2 frame: ${String(data).slice(0, 100)}`);
    }
  }

  #onWelcome(socket: WebSocketLike, f: Record<string, unknown>): void {
    const position = checkedPosition(f);
    if (!position) return this.#resync(socket, `malformed welcome ${JSON.stringify(f)}`);
    this.#framing = "v2";
    const since = this.#sentSince;
    // Trust `recovered: true` only when it is consistent: same epoch, and not behind `since`.
    const recovered =
      since !== undefined &&
      f.recovered === true &&
      position.epoch === since.epoch &&
      position.offset >= since.offset;
    if (!recovered) this.#position = position;
    if (since && !recovered) this.#refusedSince = since;
    this.#emit("welcome", { ...position, ...(since ? { recovered, since: { ...since } } : {}) });
    if (since && !recovered && this.#socket === socket) {
      this.#emit("reset", { ...position, reason: "not_recovered" });
    }
  }

  #onMessage(socket: WebSocketLike, f: Record<string, unknown>): void {
    if (!("data" in f)) return this.#protocolError(`a message frame without data; skipped`);
    const json = f.data;
    const data = typeof json === "string" ? json : JSON.stringify(json);
    if (f.epoch === undefined && f.offset === undefined) {
      this.#emit("message", { data, json }); // a plain (not durable) message: no position
      return;
    }
    const position = checkedPosition(f);
    const last = this.#position;
    if (!position) return this.#resync(socket, `a message with a malformed position ${JSON.stringify(f)}`);
    if (!last || position.epoch !== last.epoch) {
      return this.#resync(socket, `epoch changed to ${position.epoch} without a reset`);
    }
    if (position.offset <= last.offset) return; // already delivered (or in the app's state)
    if (position.offset > last.offset + 1) {
      return this.#resync(socket, `offset ${position.offset} follows ${last.offset}: a gap`);
    }
    this.#position = position;
    this.#emit("message", { data, json, position: { ...position } });
  }

  #onClose(socket: WebSocketLike, event: CloseEventLike, deliberate = false): void {
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
    if (!opened && !deliberate) this.#unopened++;

    const error = parseCloseReason(event.reason);
    // `deliberate`: the client reconnects on purpose (resumeFrom), at once; not a failure.
    const decision: Decision = deliberate ? { action: "retry", delayMs: 0 } : decide(
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
    if (!deliberate) this.#failures++;
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
  return withQuery(url, [["token", encodeURIComponent(token)]]);
}

/** `url` without its fragment, with `name=value` pairs (already encoded) appended. */
function withQuery(url: string, pairs: [string, string][]): string {
  if (pairs.length === 0) return url;
  const hashAt = url.indexOf("#");
  const base = hashAt === -1 ? url : url.slice(0, hashAt);
  const separator = base.includes("?") ? "&" : "?";
  return `${base}${separator}${pairs.map(([name, value]) => `${name}=${value}`).join("&")}`;
}

function validPosition(position: Position): Position {
  const checked = checkedPosition(position);
  if (!checked) throw new TypeError(`not a position: ${JSON.stringify(position)}`);
  return checked;
}

function samePosition(a: Position, b: Position): boolean {
  return a.epoch === b.epoch && a.offset === b.offset;
}

function positionText(position: Position | undefined): string {
  return position ? formatPosition(position) : "the start";
}
