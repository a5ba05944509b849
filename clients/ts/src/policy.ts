// What to do after a socket closed: the close-code table of docs/FRONTEND.md as a pure function,
// so that it can be tested without sockets or timers.

/** Close codes websocket-service sends (README "Close codes"), plus 1006 from the browser. */
export const CloseCodes = {
  /** Normal close. */
  NORMAL: 1000,
  /** No close frame: network loss, or a refused handshake (HTTP 503 while the node drains). */
  ABNORMAL: 1006,
  /** WebSocket protocol violation by the client. */
  PROTOCOL_ERROR: 1002,
  /** The client sent a binary frame. */
  UNSUPPORTED_DATA: 1003,
  /** Token missing, malformed, bad signature, expired, wrong algorithm, or origin refused. */
  POLICY_VIOLATION: 1008,
  /** A client frame over the server's limit. */
  MESSAGE_TOO_BIG: 1009,
  /** Internal server failure. */
  INTERNAL_ERROR: 1011,
  /** The server is draining (deploy): reconnect, with jitter. */
  SERVICE_RESTART: 1012,
  /** The node is at its connection cap: try again later. */
  TRY_AGAIN_LATER: 1013,
  /** This user has too many sockets open (tabs). */
  USER_QUOTA: 4000,
  /** The token expired during the session: reconnect with a fresh one. */
  TOKEN_EXPIRED: 4001,
  /** Disconnected by the operator API (logout, account locked): do not reconnect. */
  DISCONNECTED: 4003,
  /** Idle timeout or heartbeat lost. */
  TIMEOUT: 4008,
  /** The client did not read fast enough (send queue full). */
  SLOW_CONSUMER: 4009,
} as const;

/** Timing knobs of the reconnect policy, in milliseconds. */
export interface BackoffOptions {
  /** Window of the first retry: a uniformly random delay in [0, this). Doubles per failure. */
  initialDelayMs: number;
  /** Largest window for ordinary retries. */
  maxDelayMs: number;
  /** 1013 / 4000 (node or user at capacity): wait at least this, plus a window that doubles. */
  busyDelayMs: number;
  /** Largest delay after 1013 / 4000. */
  busyMaxDelayMs: number;
  /** 4001: a fresh token fixes it, so reconnect within this window. */
  expiredDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialDelayMs: 1_000,
  maxDelayMs: 30_000,
  busyDelayMs: 5_000,
  busyMaxDelayMs: 120_000,
  expiredDelayMs: 500,
};

/** Why a fresh token is needed before the next attempt (passed to the token provider). */
export type TokenRefresh = "expired" | "rejected";

export type Decision =
  | {
      action: "retry";
      /** Delay before the next attempt. */
      delayMs: number;
      /** Ask the token provider for a fresh token first, and why. */
      refresh?: TokenRefresh;
    }
  | {
      action: "stop";
      /** `auth`: the token was refused (1008 twice) or the session was ended by the operator
       * (4003): retrying cannot help. */
      reason: "auth";
    };

export interface CloseContext {
  /** The close code (1006 when there was no close frame). */
  code: number;
  /** Consecutive attempts that did not reach a stable connection, before this one. */
  failures: number;
  /** The previous close was also 1008 (the refresh did not help). */
  previousWasAuthFailure: boolean;
}

/** "Full jitter": uniform in [0, min(cap, base * 2^n)). */
export function fullJitter(baseMs: number, capMs: number, n: number, random: () => number): number {
  const window = Math.min(capMs, baseMs * 2 ** Math.min(n, 30));
  return Math.floor(random() * window);
}

/** What to do after a close: the table of docs/FRONTEND.md. */
export function decide(ctx: CloseContext, backoff: BackoffOptions, random: () => number): Decision {
  const ordinary = (): { action: "retry"; delayMs: number } => ({
    action: "retry",
    delayMs: fullJitter(backoff.initialDelayMs, backoff.maxDelayMs, ctx.failures, random),
  });
  switch (ctx.code) {
    case CloseCodes.POLICY_VIOLATION:
      // The token (or the origin) was refused. One retry with a token the provider was told is
      // rejected; if that is refused too, retrying cannot help.
      if (ctx.previousWasAuthFailure) return { action: "stop", reason: "auth" };
      return { ...ordinary(), refresh: "rejected" };
    case CloseCodes.DISCONNECTED:
      // The platform ended this user's sessions on purpose (logout elsewhere, account locked):
      // reconnecting, even with a fresh token, would undo what the operator asked for.
      return { action: "stop", reason: "auth" };
    case CloseCodes.TOKEN_EXPIRED:
      return {
        action: "retry",
        delayMs: Math.floor(random() * backoff.expiredDelayMs),
        refresh: "expired",
      };
    case CloseCodes.TRY_AGAIN_LATER:
    case CloseCodes.USER_QUOTA: {
      // Capacity problems: reconnecting quickly would only add load. Floor plus doubling jitter.
      const delay =
        backoff.busyDelayMs +
        fullJitter(backoff.busyDelayMs, backoff.busyMaxDelayMs, ctx.failures, random);
      return { action: "retry", delayMs: Math.min(delay, backoff.busyMaxDelayMs) };
    }
    case CloseCodes.SERVICE_RESTART:
    // The server spreads its closes over its drain window; the jitter spreads the reconnects of
    // clients closed in the same instant. Falls through to the ordinary backoff, whose first
    // window (failures = 0 after a stable connection) is [0, initialDelayMs).
    default:
      // 1000 from the server, 1006 (network, refused handshake), 1002/1003/1009 (a client bug:
      // reported through the close event), 1011, 4008, 4009, and codes this version does not
      // know: reconnect with jittered exponential backoff.
      return ordinary();
  }
}
