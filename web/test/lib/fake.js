// Fakes for unit tests of herald.js: a WebSocket whose server side the test
// plays frame by frame, and a clock whose time only moves when told to.

/** A manual clock: timers fire only inside advance(). */
export class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.seq = 0;
    /** @type {Map<number, {at: number, fn: () => void}>} */
    this.timers = new Map();
    this.randomValue = 0.5;
  }

  /** The clock option for connect(). */
  options() {
    return {
      now: () => this.t,
      setTimeout: (fn, ms) => {
        const id = ++this.seq;
        this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
        return id;
      },
      clearTimeout: (id) => this.timers.delete(id),
      random: () => this.randomValue,
    };
  }

  /** Moves time forward, firing due timers in order; awaits microtasks between them. */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next = null;
      for (const [id, tm] of this.timers) {
        if (tm.at <= end && (!next || tm.at < next[1].at || (tm.at === next[1].at && id < next[0]))) next = [id, tm];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
    await flush();
  }

  /** Delays of pending timers, for asserting backoff. */
  pending() {
    return [...this.timers.values()].map((tm) => tm.at - this.t).sort((a, b) => a - b);
  }
}

/** Lets pending promise callbacks run. */
export async function flush() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

/**
 * Makes a WebSocket class whose instances are recorded in `sockets`; with
 * a clock, each records when it sent each frame (sentAt).
 * @param {FakeClock} [clock]
 */
export function fakeWebSocket(clock) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.sentAt = [];
      this.closed = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      if (this.closed) throw new Error('send on a closed socket');
      this.sent.push(JSON.parse(data));
      this.sentAt.push(clock ? clock.t : 0);
    }
    close(code, reason) {
      this.closed = { code, reason, byClient: true };
    }
    // Server side, driven by the test.
    open() {
      this.onopen?.({});
    }
    frame(obj) {
      this.onmessage?.({ data: JSON.stringify(obj) });
    }
    serverClose(code, reason = '') {
      this.closed = { code, reason, byClient: false };
      this.onclose?.({ code, reason });
    }
    /** The last frame the client sent of a type. */
    last(type) {
      return [...this.sent].reverse().find((f) => f.type === type);
    }
    /** Every frame the client sent of a type. */
    all(type) {
      return this.sent.filter((f) => f.type === type);
    }
    /** Opens and answers the connect frame. */
    accept({ expires = 4_000_000_000, node = 'n1' } = {}) {
      this.open();
      const c = this.last('connect');
      this.frame({ id: c.id, type: 'connected', client: 'c' + sockets.length, node, expires });
      return c;
    }
    /** Answers the last subscribe to channel. */
    answerSubscribe(channel, { epoch = 'E', offset = 0, recovered, reason } = {}) {
      const s = [...this.sent].reverse().find((f) => f.type === 'subscribe' && f.channel === channel);
      const f = { id: s.id, type: 'subscribed', channel, epoch, offset, recovered: recovered ?? !!s.since };
      if (reason) f.reason = reason;
      this.frame(f);
      return s;
    }
    pub(channel, offset, data = { n: offset }, epoch = 'E') {
      this.frame({ type: 'pub', channel, offset, epoch, data });
    }
  }
  return { FakeWebSocket, sockets };
}

/** An HS256-looking JWT with the given claims (signature not checked by the client). */
export function unsignedToken(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;
}

/** A localStorage stand-in. */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
}
