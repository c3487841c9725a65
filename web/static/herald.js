// herald.js: the JavaScript client of herald's websocket protocol (herald.v1,
// docs/PROTOCOL.md). One ES module with no dependencies, served by every
// herald node at /herald.js; it runs in browsers, web views and Node ≥ 20
// (pass a WebSocket implementation where there is no global one).
//
// What it promises the application: each publication of a subscribed
// channel is handed over once and in offset order, across disconnects,
// node restarts and (with storage) page reloads; when publications were
// lost for good, a "gap" event says so instead of silence.
//
// How: it remembers, per channel, the epoch and offset of the last
// publication it delivered, resubscribes with that as `since` on every
// reconnect, and drops anything at or below it. See docs/CLIENT.md.

/** The websocket subprotocol herald speaks. */
export const PROTOCOL = /** @type {const} */ ('herald.v1');

// Types live in herald.d.ts; these aliases let tsc check this file against it.
/** @typedef {import('./herald').Position} Position */
/** @typedef {import('./herald').BackoffOptions} BackoffOptions */
/** @typedef {import('./herald').ClientOptions} ClientOptions */
/** @typedef {import('./herald').WebSocketLike} WebSocketLike */
/** @typedef {import('./herald').EventHandler} EventHandler */
/** @typedef {import('./herald').SubscribeOptions} SubscribeOptions */
/** @typedef {import('./herald').Subscription} Subscription */
/** @typedef {import('./herald').ConnectionState} ConnectionState */
/** @typedef {import('./herald').ClientEvents} ClientEvents */
/** @typedef {import('./herald').HeraldError} HeraldError */
/** @typedef {import('./herald').HistoryReply} HistoryReply */
/** @typedef {import('./herald').HeraldClient} HeraldClient */
/** @typedef {import('./herald').TokenClaims} TokenClaims */

/** The longest delay setTimeout accepts. */
const MAX_TIMER = 2 ** 31 - 1;

/**
 * The least time between two token refreshes, in ms. Whatever the clocks
 * say, a client never refreshes in a loop; a token that truly expires
 * sooner than this is closed with 4008 and renewed by reconnecting.
 */
const MIN_REFRESH_GAP = 5000;

/** Close codes herald uses (docs/PROTOCOL.md). */
export const CloseCode = Object.freeze({
  UNAUTHORIZED: 4001,
  PROTOCOL_ERROR: 4002,
  TOKEN_EXPIRED: 4008,
  TOO_SLOW: 4009,
  SHUTTING_DOWN: 4010,
  RATE_LIMITED: 4029,
  MESSAGE_TOO_BIG: 1009,
});

/**
 * Reads a JWT's claims without verifying it: for showing what a token
 * grants, never for trusting it. Returns null for anything that is not a JWT.
 * @type {typeof import('./herald').decodeToken}
 */
export function decodeToken(token) {
  const parts = String(token || '').trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/**
 * The channels a token's claims grant (SPEC §2): user:<sub>, merchant:<m>
 * and alerts:<m> for a merchant claim, and every listed channel.
 * @type {typeof import('./herald').grantedChannels}
 */
export function grantedChannels(claims) {
  /** @type {string[]} */
  const out = [];
  if (!claims) return out;
  const add = (/** @type {string} */ c) => { if (!out.includes(c)) out.push(c); };
  if (typeof claims.sub === 'string' && claims.sub) add('user:' + claims.sub);
  if (typeof claims.merchant === 'string' && claims.merchant) {
    add('merchant:' + claims.merchant);
    add('alerts:' + claims.merchant);
  }
  if (Array.isArray(claims.channels)) {
    for (const c of claims.channels) if (typeof c === 'string') add(c);
  }
  return out;
}

/**
 * The delay before reconnect attempt n (0-based), with jitter so that
 * clients dropped together do not come back together.
 * @type {typeof import('./herald').backoffDelay}
 */
export function backoffDelay(n, opts, random) {
  const initial = opts.initial ?? 500;
  const max = opts.max ?? 15000;
  const factor = opts.factor ?? 2;
  const ceiling = Math.min(max, initial * Math.pow(factor, n));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Turns what the caller gave into a websocket URL.
 * @param {string | undefined} url
 * @returns {string}
 */
function wsURL(url) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  if (!url) {
    if (!base) throw new TypeError('herald: a url is required outside a browser');
    url = '/ws';
  }
  const u = new URL(url, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError('herald: url must be ws(s) or http(s): ' + u.protocol);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.toString();
}

/**
 * @typedef {object} Sub internal state of one subscribed channel
 * @property {string} channel
 * @property {Set<EventHandler>} handlers
 * @property {'loading' | 'idle' | 'subscribing' | 'active'} state
 * @property {number} backfill
 * @property {any} retryTimer
 * @property {number} retries subscribes refused as unavailable in a row
 */

/**
 * @typedef {object} Pending an outstanding request, by frame id
 * @property {'connect' | 'subscribe' | 'backfill' | 'unsubscribe' | 'history' | 'refresh' | 'ping'} kind
 * @property {Sub} [sub]
 * @property {Position | null} [since]
 * @property {(v: any) => void} [resolve]
 * @property {(e: any) => void} [reject]
 * @property {string} [token] a refresh's new token, adopted once accepted
 * @property {number} [at] when getToken handed that token over
 */

/** @returns {null} */
function noExact() {
  return null;
}

/**
 * Parses a frame again, keeping every number as the JSON text herald sent
 * (a JSON.rawJSON value), and returns the value at path — so that a
 * payload can be shown digit for digit: a provider's 2.00 stays 2.00, which
 * JSON.parse would make 2. Where the runtime lacks JSON.rawJSON (before
 * Chrome 114, Node 21) it returns null.
 * @param {string} text
 * @param {(string | number)[]} path
 * @returns {any}
 */
function exactAt(text, path) {
  const J = /** @type {any} */ (JSON);
  if (typeof J.rawJSON !== 'function') return null;
  // The reviver's third argument (source text access) is newer than the
  // TypeScript library's JSON.parse signature.
  /** @type {any} */
  let v = J.parse(text, function (/** @type {string} */ _key, /** @type {any} */ value, /** @type {any} */ context) {
    return typeof value === 'number' && context && typeof context.source === 'string' ? J.rawJSON(context.source) : value;
  });
  for (const k of path) v = v == null ? undefined : v[k];
  return v === undefined ? null : v;
}

/**
 * Opens a client; it starts connecting on the next tick.
 * @type {typeof import('./herald').connect}
 */
export function connect(options) {
  const opts = options || {};
  const urls = (Array.isArray(opts.url) ? opts.url : [opts.url]).map(wsURL);
  const WS = opts.WebSocket || /** @type {any} */ (globalThis).WebSocket;
  if (!WS) throw new TypeError('herald: no WebSocket implementation; pass options.WebSocket');
  if (!opts.token && !opts.getToken) throw new TypeError('herald: token or getToken is required');
  const clock = opts.clock || {};
  const now = clock.now || (() => Date.now());
  const setTimer = clock.setTimeout || ((fn, ms) => setTimeout(fn, ms));
  const clearTimer = clock.clearTimeout || ((h) => clearTimeout(h));
  const random = clock.random || Math.random;
  const backoff = opts.backoff || {};
  const pingInterval = opts.pingInterval ?? 25000;
  const pongTimeout = opts.pongTimeout ?? 10000;
  const connectTimeout = opts.connectTimeout ?? 15000;
  const refreshMargin = opts.refreshMargin ?? 60000;
  // herald closes a connection that sends frames faster than it allows
  // (4029; 50 a second, bursts of 300, by default): frames beyond this
  // client's own, lower pace wait their turn, in order.
  const frameRate = opts.frameRate ?? 40;
  const frameBurst = opts.frameBurst ?? 200;
  const storage = opts.storage || null;
  const prefix = opts.storagePrefix ?? 'herald:';

  /** @type {Map<string, Set<Function>>} */
  const listeners = new Map();
  /** @type {Map<string, Sub>} */
  const subs = new Map();
  /** @type {Map<string, Position>} last delivered position per channel, kept across unsubscribes */
  const positions = new Map();
  /** @type {Map<number, Pending>} */
  const pending = new Map();

  /** @type {ConnectionState} */
  let state = 'connecting';
  /** @type {WebSocketLike | null} */
  let socket = null;
  let connected = false; // the current socket got its connected frame
  let connectedAt = 0;
  let everConnected = false;
  let stopped = false;
  let nextID = 1;
  let failures = 0; // consecutive attempts that did not reach connected, or whose session ended within a second
  let limited = 0; // consecutive sessions closed with 4029 (rate limited)
  let slow = 0; // consecutive sessions closed with 4009 (too slow)
  // The wait before the next attempt, after `failures` failed ones.
  const retryDelay = () => backoffDelay(Math.max(failures - 1, 0), backoff, random);
  // The "immediate" reconnect, spread over up to backoff.initial: every
  // client of a draining node is closed at once, and must not all come
  // back in the same millisecond.
  const soon = () => Math.round(random() * (backoff.initial ?? 500));
  let urlIndex = 0;
  let token = opts.token || null;
  let tokenAt = now(); // when the token was handed over, by this client's clock
  let expiresMs = 0;
  let refreshedAt = -Infinity; // when the last refresh frame was sent
  let lastFrameAt = 0;
  /** @type {any} */ let reconnectTimer = null;
  /** @type {any} */ let refreshTimer = null;
  /** @type {any} */ let pingTimer = null;
  /** @type {any} */ let pongTimer = null;
  /** @type {any} */ let connectTimer = null;
  /** @type {any} */ let tokenTimer = null; // bounds a getToken call before connecting
  const stats = { reconnects: 0, delivered: 0, duplicatesDropped: 0 };

  /**
   * @param {string} name
   * @param {any} ev
   */
  function emit(name, ev) {
    const set = listeners.get(name);
    if (!set || set.size === 0) {
      if (name === 'error') console.error('herald: ' + ev.code + ': ' + ev.message);
      return;
    }
    for (const fn of [...set]) {
      try {
        fn(ev);
      } catch (err) {
        if (name !== 'error') emit('error', { code: 'handler_error', message: 'a "' + name + '" listener threw: ' + err, fatal: false, cause: err });
        else console.error('herald: an "error" listener threw', err);
      }
    }
  }

  /**
   * @param {string} code
   * @param {string} message
   * @param {{channel?: string, fatal?: boolean, cause?: unknown}} [extra]
   */
  function fail(code, message, extra = {}) {
    /** @type {HeraldError} */
    const err = { code, message, fatal: !!extra.fatal };
    if (extra.channel) err.channel = extra.channel;
    if (extra.cause !== undefined) err.cause = extra.cause;
    emit('error', err);
  }

  /** @param {ConnectionState} next */
  function setState(next) {
    if (state === next) return;
    const previous = state;
    state = next;
    emit('state', { state: next, previous });
  }

  /** @type {object[]} frames waiting for the pace (see frameRate) */
  let outbox = [];
  let allowance = frameBurst;
  let allowanceAt = 0;
  /** @type {any} */ let outboxTimer = null;

  /** Reports whether a frame may go now, and counts it if so. */
  function paced() {
    const t = now();
    allowance = Math.min(frameBurst, allowance + ((t - allowanceAt) * frameRate) / 1000);
    allowanceAt = t;
    if (allowance < 1) return false;
    allowance--;
    return true;
  }

  /** @param {object} frame */
  function send(frame) {
    if (!socket) return false;
    if (outbox.length === 0 && paced()) return write(frame);
    outbox.push(frame);
    if (!outboxTimer) outboxTimer = setTimer(drain, Math.ceil(1000 / frameRate));
    return true;
  }

  function drain() {
    outboxTimer = null;
    while (outbox.length > 0 && socket && paced()) write(/** @type {object} */ (outbox.shift()));
    if (outbox.length > 0 && socket) outboxTimer = setTimer(drain, Math.ceil(1000 / frameRate));
  }

  /** @param {object} frame */
  function write(frame) {
    if (!socket) return false;
    try {
      socket.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      fail('websocket', 'send failed: ' + err, { cause: err });
      return false;
    }
  }

  /**
   * @param {Pending} p
   * @param {object} frame
   */
  function request(p, frame) {
    const id = nextID++;
    pending.set(id, p);
    if (!send({ id, ...frame })) pending.delete(id);
    return id;
  }

  // ---- positions -------------------------------------------------------

  /**
   * @param {string} channel
   * @param {Position} pos
   */
  function remember(channel, pos) {
    positions.set(channel, pos);
    if (!storage) return;
    try {
      const r = storage.setItem(prefix + channel, JSON.stringify(pos));
      if (r && typeof r.then === 'function') r.then(undefined, (err) => fail('storage_error', 'saving a position: ' + err, { channel, cause: err }));
    } catch (err) {
      fail('storage_error', 'saving a position: ' + err, { channel, cause: err });
    }
  }

  /**
   * Loads a channel's stored position, then lets the subscription proceed.
   * @param {Sub} sub
   */
  function load(sub) {
    /** @param {any} raw */
    const done = (raw) => {
      if (subs.get(sub.channel) !== sub) return;
      if (!positions.has(sub.channel) && typeof raw === 'string') {
        try {
          const p = JSON.parse(raw);
          if (p && typeof p.epoch === 'string' && Number.isSafeInteger(p.offset) && p.offset >= 0) {
            positions.set(sub.channel, { epoch: p.epoch, offset: p.offset });
          }
        } catch {
          // A corrupt entry is as good as none: subscribe from now.
        }
      }
      sub.state = 'idle';
      if (connected) start(sub);
    };
    /** @param {any} err */
    const broken = (err) => {
      fail('storage_error', 'reading a position: ' + err, { channel: sub.channel, cause: err });
      done(null);
    };
    try {
      const r = storage ? storage.getItem(prefix + sub.channel) : null;
      if (r && typeof (/** @type {any} */ (r)).then === 'function') /** @type {Promise<any>} */ (r).then(done, broken);
      else done(r);
    } catch (err) {
      broken(err);
    }
  }

  // ---- subscriptions ---------------------------------------------------

  /**
   * Sends what joins a channel on the current connection: a subscribe with
   * since, or first a history request when backfill was asked for.
   * @param {Sub} sub
   */
  function start(sub) {
    if (sub.state !== 'idle' || !connected) return;
    const since = positions.get(sub.channel) || null;
    sub.state = 'subscribing';
    if (!since && sub.backfill > 0) {
      request({ kind: 'backfill', sub }, { type: 'history', channel: sub.channel, limit: sub.backfill });
      return;
    }
    /** @type {Record<string, unknown>} */
    const frame = { type: 'subscribe', channel: sub.channel };
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    request({ kind: 'subscribe', sub, since }, frame);
  }

  /**
   * @param {Sub} sub
   * @param {Position} since
   * @param {any} f
   */
  function onSubscribed(sub, since, f) {
    const pos = { epoch: String(f.epoch), offset: Number(f.offset) };
    if (!since) remember(sub.channel, pos);
    else if (!f.recovered) gap(sub.channel, f.reason || 'epoch_mismatch', pos, since);
    sub.state = 'active';
    sub.retries = 0;
    /** @type {ClientEvents['subscribed']} */
    const ev = { channel: sub.channel, epoch: pos.epoch, offset: pos.offset, recovered: !!f.recovered, resumed: !!since };
    if (f.reason) ev.reason = f.reason;
    emit('subscribed', ev);
  }

  /**
   * @param {string} channel
   * @param {string} reason
   * @param {Position} pos where the log continues from
   * @param {Position | null} previous
   */
  function gap(channel, reason, pos, previous) {
    // Never back within an epoch: what was handed on stays handed on, and
    // is not handed on again.
    const last = positions.get(channel);
    if (!last || last.epoch !== pos.epoch || last.offset < pos.offset) remember(channel, pos);
    emit('gap', { channel, reason, epoch: pos.epoch, offset: pos.offset, previous });
  }

  /**
   * Hands one publication to the handlers, once: anything at or below the
   * last delivered offset of the same epoch is a duplicate.
   * @param {Sub} sub
   * @param {string} epoch
   * @param {number} offset
   * @param {any} data
   * @param {boolean} history
   * @param {() => any} [exact] the data with its numbers' own digits
   */
  function deliver(sub, epoch, offset, data, history, exact = noExact) {
    const last = positions.get(sub.channel);
    if (last && last.epoch === epoch && offset <= last.offset) {
      stats.duplicatesDropped++;
      return;
    }
    if (last && last.epoch !== epoch) {
      // herald announces a new epoch before its publications; if that
      // frame was missed the application must still learn of the gap.
      gap(sub.channel, 'epoch_mismatch', { epoch, offset: offset - 1 }, last);
    } else if (last && offset > last.offset + 1) {
      // herald never skips an offset unannounced; should one be skipped
      // all the same, the promise stands: no loss goes unsaid.
      gap(sub.channel, 'offset_skipped', { epoch, offset: offset - 1 }, last);
    }
    remember(sub.channel, { epoch, offset });
    stats.delivered++;
    for (const fn of [...sub.handlers]) {
      try {
        fn(data, { channel: sub.channel, offset, epoch, history, exact });
      } catch (err) {
        fail('handler_error', 'a handler of ' + sub.channel + ' threw: ' + err, { channel: sub.channel, cause: err });
      }
    }
  }

  /**
   * @param {string} channel
   * @param {EventHandler} onEvent
   * @param {SubscribeOptions} [sopts]
   * @returns {Subscription}
   */
  function subscribe(channel, onEvent, sopts = {}) {
    if (typeof channel !== 'string' || !channel) throw new TypeError('herald: channel must be a non-empty string');
    if (typeof onEvent !== 'function') throw new TypeError('herald: onEvent must be a function');
    if (stopped) throw new Error('herald: client is closed');
    let sub = subs.get(channel);
    if (!sub) {
      sub = { channel, handlers: new Set(), state: 'loading', backfill: sopts.backfill || 0, retryTimer: null, retries: 0 };
      subs.set(channel, sub);
      if (sopts.since) positions.set(channel, { epoch: sopts.since.epoch, offset: sopts.since.offset });
      if (positions.has(channel)) {
        sub.state = 'idle';
        if (connected) start(sub);
      } else {
        load(sub);
      }
    }
    const s = sub;
    // Wrap so that the same function subscribed twice counts twice.
    /** @type {EventHandler} */
    const handler = (data, meta) => onEvent(data, meta);
    s.handlers.add(handler);
    return {
      channel,
      unsubscribe() {
        if (subs.get(channel) !== s) return;
        s.handlers.delete(handler);
        if (s.handlers.size === 0) unsubscribe(channel);
      },
    };
  }

  /** @param {string} channel */
  function unsubscribe(channel) {
    const sub = subs.get(channel);
    if (!sub) return;
    subs.delete(channel);
    if (sub.retryTimer) clearTimer(sub.retryTimer);
    // herald handles a connection's frames in order, so leaving right after
    // a subscribe still in flight is safe.
    if (connected && (sub.state === 'subscribing' || sub.state === 'active')) {
      request({ kind: 'unsubscribe', sub }, { type: 'unsubscribe', channel });
    }
  }

  // ---- connection --------------------------------------------------------

  /** Reports whether a token is known to be expired (or about to). */
  function stale(/** @type {string | null} */ t) {
    if (!t) return true;
    const claims = decodeToken(t);
    return !!claims && typeof claims.exp === 'number' && claims.exp * 1000 < now() + 5000;
  }

  async function open() {
    reconnectTimer = null;
    if (stopped) return;
    if (opts.getToken && stale(token)) {
      try {
        token = await askToken();
        tokenAt = now();
      } catch (err) {
        if (stopped) return;
        fail('get_token_failed', 'getToken: ' + err, { cause: err });
        failures++;
        schedule(retryDelay(), 0, 'getToken failed');
        return;
      }
      if (stopped) return;
    }
    const url = urls[urlIndex % urls.length];
    /** @type {WebSocketLike} */
    let ws;
    try {
      ws = new WS(url, PROTOCOL);
    } catch (err) {
      fail('websocket', 'cannot open ' + url + ': ' + err, { cause: err });
      failures++;
      urlIndex++;
      schedule(retryDelay(), 0, 'open failed');
      return;
    }
    socket = ws;
    connected = false;
    // A new connection, a new allowance on the server's side too.
    allowance = frameBurst;
    allowanceAt = now();
    const tok = token;
    ws.onopen = () => {
      if (ws !== socket) return;
      request({ kind: 'connect' }, { type: 'connect', token: tok });
    };
    ws.onmessage = (ev) => {
      if (ws === socket) onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === socket) closed(ev.code, ev.reason || '');
    };
    ws.onerror = () => {
      // A close event follows with the code; nothing to add here.
    };
    connectTimer = setTimer(() => {
      if (ws === socket && !connected) drop(1006, 'no connected frame within ' + connectTimeout + ' ms');
    }, connectTimeout);
  }

  /**
   * Calls getToken to connect, giving up after connectTimeout: a promise
   * that never settles (a fetch without a timeout, say) must not leave the
   * client connecting forever.
   * @returns {Promise<string>}
   */
  function askToken() {
    const getToken = /** @type {() => string | Promise<string>} */ (opts.getToken);
    /** @type {any} */
    let timer = null;
    /** @type {Promise<string>} */
    const answer = new Promise((resolve, reject) => {
      timer = tokenTimer = setTimer(() => {
        tokenTimer = null;
        reject(new Error('no token within ' + connectTimeout + ' ms'));
      }, connectTimeout);
      // A late answer, after the timeout, settles nothing: the next
      // attempt asks again.
      new Promise((r) => r(getToken())).then(resolve, reject);
    });
    return answer.finally(() => {
      if (tokenTimer !== timer) return;
      clearTimer(timer);
      tokenTimer = null;
    });
  }

  /**
   * Abandons the current socket (dead or too slow to authenticate) and
   * handles it as closed, without waiting for a close handshake that may
   * never come.
   * @param {number} code
   * @param {string} reason
   */
  function drop(code, reason) {
    const ws = socket;
    if (!ws) return;
    closed(code, reason);
    try {
      ws.close(1000, reason.slice(0, 120));
    } catch {
      // Already closing.
    }
  }

  /** @param {any} raw */
  function onFrame(raw) {
    lastFrameAt = now();
    /** @type {any} */
    let f;
    try {
      f = JSON.parse(typeof raw === 'string' ? raw : String(raw));
    } catch {
      fail('bad_frame', 'a frame from the server is not JSON');
      return;
    }
    if (!f || typeof f !== 'object') return;
    const p = typeof f.id === 'number' ? pending.get(f.id) : undefined;
    if (p) pending.delete(f.id);
    switch (f.type) {
      case 'connected':
        onConnected(f);
        break;
      case 'pub': {
        const sub = subs.get(f.channel);
        if (sub && sub.state === 'active') deliver(sub, String(f.epoch), Number(f.offset), f.data, false, () => exactAt(raw, ['data']));
        break;
      }
      case 'subscribed': {
        if (p && p.kind === 'subscribe' && p.sub) {
          if (subs.get(p.sub.channel) === p.sub) onSubscribed(p.sub, /** @type {Position} */ (p.since), f);
          break;
        }
        // Sent by the server on its own: publications were lost mid-subscription.
        const sub = subs.get(f.channel);
        if (sub && sub.state === 'active' && !f.recovered) {
          gap(sub.channel, f.reason || 'offset_expired', { epoch: String(f.epoch), offset: Number(f.offset) }, positions.get(sub.channel) || null);
        }
        break;
      }
      case 'history':
        if (p && p.kind === 'backfill' && p.sub) onBackfill(p.sub, f, raw);
        else if (p && p.resolve) p.resolve(f);
        break;
      case 'unsubscribed':
        if (!p) {
          // The server dropped it: a refreshed token no longer grants it.
          const sub = subs.get(f.channel);
          if (sub) {
            subs.delete(f.channel);
            emit('unsubscribed', { channel: f.channel, revoked: true });
          }
        } else if (p.sub) {
          emit('unsubscribed', { channel: p.sub.channel, revoked: false });
        }
        break;
      case 'refreshed':
        onRefreshed(p, f);
        break;
      case 'error':
        onError(p, f);
        break;
      default:
        // pong, and frame types of later protocol versions.
        break;
    }
  }

  /** @param {any} f */
  function onConnected(f) {
    if (connected) return;
    if (connectTimer) clearTimer(connectTimer);
    connectTimer = null;
    connected = true;
    connectedAt = now();
    expiresMs = Number(f.expires) * 1000;
    const reconnected = everConnected;
    everConnected = true;
    if (reconnected) stats.reconnects++;
    setState('connected');
    emit('connected', { client: String(f.client), node: String(f.node), expires: Number(f.expires), reconnected });
    scheduleRefresh();
    schedulePing();
    for (const sub of subs.values()) {
      if (sub.state === 'subscribing' || sub.state === 'active') sub.state = 'idle';
      start(sub);
    }
  }

  /**
   * @param {Sub} sub
   * @param {any} f
   * @param {string} text the frame as received
   */
  function onBackfill(sub, f, text) {
    if (subs.get(sub.channel) !== sub) return;
    // Not subscribed on the server yet: a handler that leaves sends nothing.
    sub.state = 'idle';
    const epoch = String(f.epoch);
    const pubs = f.publications || [];
    for (let i = 0; i < pubs.length; i++) {
      deliver(sub, epoch, Number(pubs[i].offset), pubs[i].data, true, () => exactAt(text, ['publications', i, 'data']));
      // A handler may have left the channel, or closed the client: then
      // nothing more, and no subscribe for a channel no one wants.
      if (stopped || subs.get(sub.channel) !== sub) return;
    }
    const top = positions.get(sub.channel);
    if (!top || top.epoch !== epoch) remember(sub.channel, { epoch, offset: Number(f.offset) });
    start(sub); // now with since: recovered, with whatever came after the history
  }

  /**
   * @param {Pending | undefined} p
   * @param {any} f
   */
  function onError(p, f) {
    const code = String(f.code || 'internal');
    const message = String(f.message || code);
    if (!p) {
      fail(code, message);
      return;
    }
    switch (p.kind) {
      case 'subscribe':
      case 'backfill': {
        const sub = /** @type {Sub} */ (p.sub);
        if (subs.get(sub.channel) !== sub) return;
        if (code === 'unavailable' || code === 'internal') {
          // The broker is down for a moment: try this channel again,
          // later each time, so that many channels retrying through an
          // outage do not add up to frames faster than the server allows.
          sub.state = 'idle';
          sub.retries++;
          fail(code, message + ' (retrying ' + sub.channel + ')', { channel: sub.channel });
          sub.retryTimer = setTimer(() => {
            sub.retryTimer = null;
            if (subs.get(sub.channel) === sub) start(sub);
          }, backoffDelay(sub.retries, backoff, random));
          return;
        }
        if (code === 'already_subscribed' && sub.retries < 3) {
          // The server holds a subscription this client had given up:
          // leave it, then subscribe again from the saved position (the
          // server answers a connection's frames in order).
          sub.retries++;
          // No sub on the request: its reply is no news for the application.
          request({ kind: 'unsubscribe' }, { type: 'unsubscribe', channel: sub.channel });
          sub.state = 'idle';
          start(sub);
          return;
        }
        // forbidden, bad_request, too_many_subscriptions: retrying cannot help.
        subs.delete(sub.channel);
        fail(code, message, { channel: sub.channel });
        return;
      }
      case 'history':
        if (p.reject) p.reject(Object.assign(new Error(message), { code }));
        return;
      case 'refresh':
        fail('refresh_failed', 'token refresh refused: ' + message);
        return;
      case 'unsubscribe':
        return; // not_subscribed: it is gone either way
      default:
        fail(code, message);
    }
  }

  /**
   * @param {Pending | undefined} p
   * @param {any} f
   */
  function onRefreshed(p, f) {
    if (p && p.token) {
      token = p.token;
      tokenAt = p.at || now();
    }
    const previous = expiresMs;
    expiresMs = Number(f.expires) * 1000;
    emit('refreshed', { expires: Number(f.expires) });
    scheduleRefresh(expiresMs <= previous);
  }

  /**
   * Plans the next token refresh, before the server would close with 4008.
   * @param {boolean} [noProgress] the last refresh did not extend the expiry
   */
  function scheduleRefresh(noProgress = false) {
    if (refreshTimer) clearTimer(refreshTimer);
    refreshTimer = null;
    if (!opts.getToken || !expiresMs) return;
    const left = timeLeft();
    let delay = left - Math.min(refreshMargin, left / 4);
    if (noProgress) {
      // getToken handed back a token that expires no later: try again
      // halfway, and let the server's 4008 decide if it never improves.
      if (left < 2000) return;
      delay = left / 2;
    }
    // However the clocks disagree, never a refresh loop: the server would
    // extend the expiry each time and be asked again at once, forever.
    delay = Math.max(delay, refreshedAt + MIN_REFRESH_GAP - now());
    // Timers overflow past 2^31-1 ms (about 24.8 days) and would fire at
    // once; a token that long-lived is refreshed after that instead.
    refreshTimer = setTimer(refresh, Math.min(MAX_TIMER, Math.max(0, delay)));
  }

  /**
   * Estimates how long the current token has left, in ms of this client's
   * clock.
   */
  function timeLeft() {
    // The expiry is the server's time. A clock behind it would refresh
    // too late, after a 4008: the token's own lifetime, counted from when
    // it was handed over, bounds the wait too. A clock ahead of it sees
    // the expiry already past, refreshed or not: then the lifetime is the
    // only estimate worth anything.
    const left = expiresMs - now();
    const claims = token ? decodeToken(token) : null;
    if (!claims || typeof claims.exp !== 'number' || typeof claims.iat !== 'number' || claims.exp <= claims.iat) return left;
    const lifetimeLeft = tokenAt + (claims.exp - claims.iat) * 1000 - now();
    return left > 0 ? Math.min(left, lifetimeLeft) : lifetimeLeft;
  }

  async function refresh() {
    refreshTimer = null;
    const ws = socket;
    if (!ws || !connected || !opts.getToken) return;
    let fresh;
    try {
      fresh = await opts.getToken();
    } catch (err) {
      fail('get_token_failed', 'getToken: ' + err, { cause: err });
      if (ws === socket) scheduleRefresh(true);
      return;
    }
    if (ws !== socket || !connected) return;
    // Adopted once the server accepts it (onRefreshed): a refused one must
    // not be the next connection's.
    refreshedAt = now();
    request({ kind: 'refresh', token: fresh, at: refreshedAt }, { type: 'refresh', token: fresh });
  }

  function schedulePing() {
    if (pingTimer) clearTimer(pingTimer);
    pingTimer = null;
    if (!pingInterval) return;
    pingTimer = setTimer(() => {
      pingTimer = null;
      if (!socket || !connected) return;
      const sentAt = now();
      request({ kind: 'ping' }, { type: 'ping' });
      pongTimer = setTimer(() => {
        pongTimer = null;
        if (lastFrameAt < sentAt) drop(1006, 'no answer to ping within ' + pongTimeout + ' ms');
      }, pongTimeout);
      schedulePing();
    }, pingInterval);
  }

  function clearConnectionTimers() {
    for (const t of [refreshTimer, pingTimer, pongTimer, connectTimer, tokenTimer, outboxTimer]) if (t) clearTimer(t);
    refreshTimer = pingTimer = pongTimer = connectTimer = tokenTimer = outboxTimer = null;
    for (const sub of subs.values()) {
      if (sub.retryTimer) clearTimer(sub.retryTimer);
      sub.retryTimer = null;
    }
  }

  /**
   * The current socket ended: decide whether and when to come back.
   * @param {number} code
   * @param {string} reason
   */
  function closed(code, reason) {
    const wasConnected = connected;
    const uptime = wasConnected ? now() - connectedAt : 0;
    socket = null;
    connected = false;
    clearConnectionTimers();
    // What waited was for the old connection; the new one subscribes anew.
    outbox = [];
    for (const p of pending.values()) {
      if (p.reject) p.reject(Object.assign(new Error('disconnected'), { code: 'disconnected' }));
    }
    pending.clear();
    for (const sub of subs.values()) if (sub.state !== 'loading') sub.state = 'idle';
    if (stopped) return;

    // An attempt that never reached connected failed. So did a session
    // that ended within a second, which is no proof the server is healthy:
    // no instant retry then, so a server that accepts and at once closes
    // again (a 1013 while its broker is down, say) is retried ever more
    // slowly, not several times a second. A longer one starts the backoff
    // afresh. (A 4029 or 4009 after connected escalates on its own count,
    // below.)
    const instant = wasConnected && uptime >= 1000;
    if (wasConnected && (instant || code === CloseCode.RATE_LIMITED || code === CloseCode.TOO_SLOW)) failures = 0;
    else failures++;
    // Rate limiting and slowness count across sessions (each one reaches
    // connected before it is closed): only a session that lasted a minute
    // forgets them.
    if (code !== CloseCode.RATE_LIMITED || uptime >= 60_000) limited = 0;
    if (code !== CloseCode.TOO_SLOW || uptime >= 60_000) slow = 0;
    switch (code) {
      case CloseCode.PROTOCOL_ERROR:
        return halt(code, reason, 'protocol_error', 'the server refused a frame as a protocol error (' + reason + '): a client bug');
      case CloseCode.MESSAGE_TOO_BIG:
        return halt(code, reason, 'message_too_big', 'a frame exceeded the server limit: a client bug');
      case CloseCode.UNAUTHORIZED:
        if (!opts.getToken) return halt(code, reason, 'unauthorized', 'the token was refused: ' + reason);
        fail('unauthorized', 'the token was refused (' + reason + '); asking getToken for another', {});
        token = null;
        return schedule(retryDelay(), code, reason);
      case CloseCode.TOKEN_EXPIRED:
        if (!opts.getToken) return halt(code, reason, 'token_expired', 'the token expired and there is no getToken to renew it');
        token = null;
        return schedule(instant ? soon() : retryDelay(), code, reason);
      case CloseCode.SHUTTING_DOWN:
        urlIndex++; // that node is going away: try the next one first
        return schedule(instant ? soon() : retryDelay(), code, reason);
      case CloseCode.TOO_SLOW:
        // Once is bad luck (a burst, a stalled tab): come back soon. Again
        // and again (a handler or a link that cannot keep up) is no better
        // for coming back at once: later each time, as for 4029.
        if (wasConnected) slow++;
        if (slow <= 1) return schedule(instant ? soon() : retryDelay(), code, reason);
        return schedule(backoffDelay(slow - 1 + failures, backoff, random), code, reason);
      case CloseCode.RATE_LIMITED:
        // Too many connections from this address, or frames too fast:
        // never at once, and later each time it happens again.
        // (Before connected, too many connections from this address, it
        // is one more failed attempt.)
        if (wasConnected) limited++;
        return schedule(backoffDelay(limited + failures, backoff, random), code, reason);
    }
    if (!wasConnected) urlIndex++;
    return schedule(retryDelay(), code, reason);
  }

  /**
   * @param {number} delay
   * @param {number} code
   * @param {string} reason
   */
  function schedule(delay, code, reason) {
    setState('reconnecting');
    if (code) emit('disconnected', { code, reason, reconnectIn: delay });
    emit('reconnecting', { attempt: failures + 1, delay, url: urls[urlIndex % urls.length] });
    reconnectTimer = setTimer(open, delay);
  }

  /**
   * Stops for good after a close that reconnecting cannot fix.
   * @param {number} code
   * @param {string} reason
   * @param {string} errCode
   * @param {string} message
   */
  function halt(code, reason, errCode, message) {
    stopped = true;
    setState('closed');
    fail(errCode, message, { fatal: true });
    emit('disconnected', { code, reason, reconnectIn: null });
  }

  function close() {
    if (stopped && !socket) {
      setState('closed');
      return;
    }
    stopped = true;
    if (reconnectTimer) clearTimer(reconnectTimer);
    reconnectTimer = null;
    const ws = socket;
    const was = connected;
    closed(1000, 'client closed');
    if (ws) {
      try {
        ws.close(1000, 'client closed');
      } catch {
        // Already closing.
      }
    }
    setState('closed');
    if (ws || was) emit('disconnected', { code: 1000, reason: 'client closed', reconnectIn: null });
  }

  /**
   * @param {string} channel
   * @param {{limit?: number, since?: Position}} [hopts]
   * @returns {Promise<HistoryReply>}
   */
  function history(channel, hopts = {}) {
    if (!connected) return Promise.reject(Object.assign(new Error('not connected'), { code: 'disconnected' }));
    return new Promise((resolve, reject) => {
      /** @type {Record<string, unknown>} */
      const frame = { type: 'history', channel };
      if (hopts.limit) frame.limit = hopts.limit;
      if (hopts.since) frame.since = { offset: hopts.since.offset, epoch: hopts.since.epoch };
      request({ kind: 'history', resolve, reject }, frame);
    });
  }

  /** @type {HeraldClient} */
  const client = {
    on(name, fn) {
      let set = listeners.get(name);
      if (!set) listeners.set(name, (set = new Set()));
      set.add(fn);
      return () => client.off(name, fn);
    },
    off(name, fn) {
      listeners.get(name)?.delete(fn);
    },
    subscribe,
    unsubscribe,
    history,
    position: (channel) => {
      const p = positions.get(channel);
      return p ? { epoch: p.epoch, offset: p.offset } : null;
    },
    close,
    state: () => state,
    stats: () => ({ ...stats }),
  };
  // Connect on the next tick, so listeners added right after connect()
  // see the first events.
  reconnectTimer = setTimer(open, 0);
  return client;
}
