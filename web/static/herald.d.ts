// Types of herald.js, the client of herald's websocket protocol (herald.v1).
// herald.js takes its JSDoc types from this file and tsc checks the two
// against each other (web/test), so this is the one place they are written.
// Guide and examples: docs/CLIENT.md.

/** The websocket subprotocol herald speaks. */
export const PROTOCOL: 'herald.v1';

/** Close codes herald uses (docs/PROTOCOL.md). */
export const CloseCode: Readonly<{
  UNAUTHORIZED: 4001;
  PROTOCOL_ERROR: 4002;
  TOKEN_EXPIRED: 4008;
  TOO_SLOW: 4009;
  SHUTTING_DOWN: 4010;
  RATE_LIMITED: 4029;
  MESSAGE_TOO_BIG: 1009;
}>;

/** A position in a channel's log: an offset means something only with its epoch. */
export interface Position {
  epoch: string;
  offset: number;
}

/**
 * Keeps the last delivered position of each channel across page loads or
 * app starts. localStorage and sessionStorage fit; so does an async store
 * such as React Native's AsyncStorage, since results may be promises.
 */
export interface PositionStorage {
  getItem(key: string): string | null | undefined | Promise<string | null | undefined>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** The part of the standard WebSocket the client uses. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

/** A WebSocket constructor: globalThis.WebSocket, or the `ws` package's in Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/**
 * Reconnection delays: the n-th consecutive attempt waits a random time
 * between half and all of min(max, initial × factor^n) ms.
 */
export interface BackoffOptions {
  /** First delay in ms (500). */
  initial?: number;
  /** Longest delay in ms (15000). */
  max?: number;
  /** Growth per failed attempt (2). */
  factor?: number;
}

/** Timers and randomness; tests replace them. */
export interface ClockLike {
  now?: () => number;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (handle: any) => void;
  /** Uniform in [0, 1). */
  random?: () => number;
}

export interface ClientOptions {
  /**
   * herald's websocket URL, e.g. "wss://herald.example.com/ws"; http(s)
   * URLs and paths are accepted too. With several, reconnects go round
   * them. Default in a browser: /ws on the page's own host.
   */
  url?: string | string[];
  /** A JWT. With getToken too, it is used first. */
  token?: string;
  /**
   * Returns a fresh JWT. Called to connect when there is no usable token,
   * before the token expires (the new one is sent as a refresh frame; at
   * most once every 5 s), and after the server closed with 4001 or 4008. To
   * connect, it has connectTimeout ms to answer; a throw or a timeout is
   * reported as get_token_failed and retried with backoff.
   */
  getToken?: () => string | Promise<string>;
  /** WebSocket implementation [globalThis.WebSocket]. */
  WebSocket?: WebSocketConstructor;
  /** Keeps positions so that a new page or app start resumes where the last one stopped. */
  storage?: PositionStorage;
  /** Key prefix in storage ("herald:"); the channel name follows it. */
  storagePrefix?: string;
  backoff?: BackoffOptions;
  /** ms between liveness pings; 0 for none (25000). */
  pingInterval?: number;
  /** ms to wait for any frame after a ping before the connection counts as dead (10000). */
  pongTimeout?: number;
  /** ms from opening the socket to the `connected` frame before the attempt counts as failed, and that getToken may take to connect (15000). */
  connectTimeout?: number;
  /**
   * Refresh the token at most this many ms before it expires (60000; a
   * quarter of its lifetime when shorter). Refreshes are at least 5 s apart.
   */
  refreshMargin?: number;
  /** Frames sent per second at most, on average (40), and at once (200); more wait their turn, in order, under the server's 4029 limit (50 a second, bursts of 300). */
  frameRate?: number;
  frameBurst?: number;
  clock?: ClockLike;
}

/** What a handler learns besides the publication's data. */
export interface PublicationMeta {
  channel: string;
  offset: number;
  epoch: string;
  /** True for publications delivered by `backfill` from history rather than live. */
  history: boolean;
  /**
   * The data again, with every number kept as the JSON text herald sent
   * (JSON.rawJSON values: `JSON.stringify` prints them digit for digit), for
   * showing payloads exactly; null where the runtime lacks JSON.rawJSON.
   * Parsed on demand.
   */
  exact(): any | null;
}

/**
 * Receives each publication of a channel once, in offset order. For events
 * from ingress, `data` is a normalized event (docs/EVENTS.md).
 */
export type EventHandler = (data: any, meta: PublicationMeta) => void;

export interface SubscribeOptions {
  /** Resume after this position instead of the one remembered in memory or storage. */
  since?: Position;
  /**
   * When no position is known, first deliver the newest `backfill`
   * publications (1…1000) from history, then live ones.
   */
  backfill?: number;
}

export interface Subscription {
  channel: string;
  /** Removes this handler; the channel is left when no handler remains. */
  unsubscribe(): void;
}

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/**
 * An error the client reports. `code` is one of unauthorized,
 * token_expired, protocol_error, message_too_big, get_token_failed,
 * refresh_failed, handler_error, storage_error, bad_frame, websocket, or a
 * server error code (forbidden, bad_request, too_many_subscriptions,
 * unavailable, …).
 */
export interface HeraldError {
  code: string;
  message: string;
  /** True when the client stopped because of it (close() is implied). */
  fatal: boolean;
  channel?: string;
  cause?: unknown;
}

/** Events a client emits, by name. */
export interface ClientEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  /** The server accepted the token (expires: unix seconds); subscriptions follow. */
  connected: { client: string; node: string; expires: number; reconnected: boolean };
  /** The socket closed. reconnectIn: ms until the next attempt; null when the client stopped. */
  disconnected: { code: number; reason: string; reconnectIn: number | null };
  reconnecting: { attempt: number; delay: number; url: string };
  /** resumed: the subscribe carried `since`; recovered: nothing was missed. */
  subscribed: { channel: string; epoch: string; offset: number; recovered: boolean; resumed: boolean; reason?: string };
  /**
   * Publications after `previous` up to `offset` are lost for good
   * (reason epoch_mismatch or offset_expired, as herald says; or
   * offset_skipped, when a publication arrived beyond the next offset
   * without herald saying so): resync the channel from the application's
   * own source of truth. Delivery continues after `offset`.
   */
  gap: { channel: string; reason: string; epoch: string; offset: number; previous: Position | null };
  /** revoked: the server dropped it because a refreshed token no longer grants it. */
  unsubscribed: { channel: string; revoked: boolean };
  refreshed: { expires: number };
  error: HeraldError;
}

export interface HistoryReply {
  channel: string;
  epoch: string;
  /** Newest offset of the channel. */
  offset: number;
  recovered?: boolean;
  reason?: string;
  /** Oldest first. */
  publications: { offset: number; data: any }[];
  /** Publications were left out to keep the reply within its size bound:
   * ask again with `since` the last offset to read on (docs/PROTOCOL.md). */
  truncated?: boolean;
}

export interface ClientStats {
  /** Connections after the first that reached `connected`. */
  reconnects: number;
  /** Publications handed to handlers. */
  delivered: number;
  /** Publications dropped because their offset was already delivered. */
  duplicatesDropped: number;
}

export interface HeraldClient {
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(name: K, fn: (ev: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(name: K, fn: (ev: ClientEvents[K]) => void): void;
  /** Joins a channel; a second subscribe to the same channel adds a handler. */
  subscribe(channel: string, onEvent: EventHandler, opts?: SubscribeOptions): Subscription;
  /** Leaves the channel, for every handler. */
  unsubscribe(channel: string): void;
  /** Reads a channel's log without subscribing; rejects when not connected. */
  history(channel: string, opts?: { limit?: number; since?: Position }): Promise<HistoryReply>;
  /** The last delivered position of a channel, or null. */
  position(channel: string): Position | null;
  /** Stops for good: no more events, no reconnects. */
  close(): void;
  state(): ConnectionState;
  stats(): ClientStats;
}

/** Opens a client; it starts connecting on the next tick. */
export function connect(options: ClientOptions): HeraldClient;

/** A JWT's claims, read without verification: for display, never for trust. */
export interface TokenClaims {
  sub?: string;
  merchant?: string;
  channels?: string[];
  exp?: number;
  [claim: string]: unknown;
}

/** Reads a JWT's claims without verifying it; null for anything that is not a JWT. */
export function decodeToken(token: string): TokenClaims | null;

/**
 * The channels claims grant (SPEC §2): user:<sub>; merchant:<m> and
 * alerts:<m> for a merchant claim; every channel listed in `channels`.
 */
export function grantedChannels(claims: { sub?: unknown; merchant?: unknown; channels?: unknown } | null): string[];

/** The jittered delay in ms before reconnect attempt n (0-based). */
export function backoffDelay(n: number, opts: BackoffOptions, random: () => number): number;
