// websocket-service browser client: see docs/FRONTEND.md for the contract it implements.
export {
  RealtimeClient,
  parseCloseReason,
  withToken,
  type ClientEvents,
  type ClientState,
  type CloseEventLike,
  type MessageEventLike,
  type RealtimeClientOptions,
  type ServerCloseReason,
  type Timers,
  type TokenProvider,
  type TokenReason,
  type TokenRequest,
  type WebSocketFactory,
  type WebSocketLike,
} from "./client.js";
export {
  CloseCodes,
  DEFAULT_BACKOFF,
  decide,
  fullJitter,
  type BackoffOptions,
  type CloseContext,
  type Decision,
  type TokenRefresh,
} from "./policy.js";
