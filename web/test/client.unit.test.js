// Unit tests of herald.js's connection logic against a fake WebSocket and a
// manual clock: reconnect and backoff, resume without loss or duplicates,
// gaps, close codes, token refresh, persistence.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { connect, decodeToken, grantedChannels, backoffDelay } from '../static/herald.js';
import { FakeClock, fakeWebSocket, flush, unsignedToken, MemoryStorage } from './lib/fake.js';

const TOKEN = unsignedToken({ sub: '42', merchant: 'acme', exp: 4_000_000_000 });

/** A client on fakes, recording every event it emits. */
function setup(extra = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocket(clock);
  const events = [];
  const client = connect({
    url: 'http://herald.test',
    token: TOKEN,
    WebSocket: FakeWebSocket,
    clock: clock.options(),
    backoff: { initial: 1000, max: 8000, factor: 2 },
    pingInterval: 0,
    ...extra,
  });
  for (const name of ['state', 'connected', 'disconnected', 'reconnecting', 'subscribed', 'gap', 'unsubscribed', 'refreshed', 'error']) {
    client.on(name, (ev) => events.push({ name, ...ev }));
  }
  const got = [];
  const collect = (data, meta) => got.push({ ...meta, data });
  return { clock, sockets, events, client, got, collect, last: () => sockets[sockets.length - 1] };
}

const named = (events, name) => events.filter((e) => e.name === name);
const offsets = (got, channel = 'user:42') => got.filter((g) => g.channel === channel).map((g) => g.offset);

test('connects with the subprotocol and a connect frame, then subscribes', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', collect);
  await clock.advance(0);
  assert.equal(sockets.length, 1);
  const ws = sockets[0];
  assert.equal(ws.url, 'ws://herald.test/ws');
  assert.equal(ws.protocols, 'herald.v1');
  assert.equal(ws.sent.length, 0, 'nothing is sent before the socket opens');
  const c = ws.accept();
  assert.deepEqual(ws.sent[0], { id: c.id, type: 'connect', token: TOKEN });
  assert.deepEqual(ws.last('subscribe'), { id: ws.last('subscribe').id, type: 'subscribe', channel: 'user:42' });
  ws.answerSubscribe('user:42', { offset: 5 });
  ws.pub('user:42', 6);
  ws.pub('user:42', 7);
  assert.deepEqual(offsets(got), [6, 7]);
  assert.deepEqual(got[0].data, { n: 6 });
  assert.equal(client.state(), 'connected');
  assert.deepEqual(client.position('user:42'), { epoch: 'E', offset: 7 });
  assert.equal(named(events, 'connected')[0].reconnected, false);
});

test('drops publications at or below the last delivered offset', async () => {
  const { clock, client, got, collect, last } = setup();
  client.subscribe('user:42', collect);
  await clock.advance(0);
  last().accept();
  last().answerSubscribe('user:42', { offset: 0 });
  for (const o of [1, 2, 2, 1, 3]) last().pub('user:42', o);
  assert.deepEqual(offsets(got), [1, 2, 3]);
  assert.equal(client.stats().duplicatesDropped, 2);
});

test('reconnects after a dropped connection and resumes with since: each publication once, in order', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', collect);
  client.subscribe('merchant:acme', collect);
  await clock.advance(0);
  let ws = sockets[0];
  ws.accept();
  ws.answerSubscribe('user:42', { offset: 2 });
  ws.answerSubscribe('merchant:acme', { epoch: 'M', offset: 0 });
  ws.pub('user:42', 3);
  ws.pub('merchant:acme', 1, {}, 'M');
  await clock.advance(2000); // connected for a while
  ws.serverClose(1006);
  assert.equal(client.state(), 'reconnecting');
  const d = named(events, 'disconnected')[0];
  assert.equal(d.code, 1006);
  assert.ok(d.reconnectIn >= 500 && d.reconnectIn <= 1000, `first delay ${d.reconnectIn} within [initial/2, initial]`);
  await clock.advance(d.reconnectIn - 1);
  assert.equal(sockets.length, 1, 'no attempt before the delay');
  await clock.advance(1);
  assert.equal(sockets.length, 2);
  ws = sockets[1];
  ws.accept();
  assert.deepEqual(ws.last('subscribe').channel, 'merchant:acme');
  const subs = ws.all('subscribe');
  assert.deepEqual(subs.find((s) => s.channel === 'user:42').since, { offset: 3, epoch: 'E' });
  assert.deepEqual(subs.find((s) => s.channel === 'merchant:acme').since, { offset: 1, epoch: 'M' });
  ws.answerSubscribe('user:42', { offset: 6, recovered: true });
  // The missed ones, with an overlap a buggy server might send.
  for (const o of [3, 4, 5, 6, 7]) ws.pub('user:42', o);
  assert.deepEqual(offsets(got), [3, 4, 5, 6, 7]);
  const s = named(events, 'subscribed').filter((e) => e.channel === 'user:42');
  assert.deepEqual([s[0].resumed, s[1].resumed, s[1].recovered], [false, true, true]);
  assert.equal(named(events, 'gap').length, 0);
  assert.equal(named(events, 'connected')[1].reconnected, true);
  assert.equal(client.stats().reconnects, 1);
});

test('backoff grows with each failed attempt, is capped, and resets once connected', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  clock.randomValue = 0.999999; // the top of each jitter range
  sockets[0].serverClose(1006); // never connected: a failed attempt
  const delays = [];
  for (let i = 0; i < 6; i++) {
    const r = named(events, 'reconnecting').at(-1);
    delays.push(r.delay);
    await clock.advance(r.delay);
    sockets.at(-1).serverClose(1006);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000, 8000]);
  await clock.advance(named(events, 'reconnecting').at(-1).delay);
  sockets.at(-1).accept();
  await clock.advance(5000);
  sockets.at(-1).serverClose(1011);
  assert.equal(named(events, 'reconnecting').at(-1).delay, 1000);
});

test('a server that accepts and at once closes is retried ever more slowly', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  clock.randomValue = 0.999999; // the top of each jitter range
  const delays = [];
  for (let i = 0; i < 5; i++) {
    sockets.at(-1).accept();
    await clock.advance(100);
    sockets.at(-1).serverClose(1013, 'broker unavailable');
    const r = named(events, 'reconnecting').at(-1);
    delays.push(r.delay);
    await clock.advance(r.delay);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000]);
  // A session that lasts starts the backoff afresh.
  sockets.at(-1).accept();
  await clock.advance(5000);
  sockets.at(-1).serverClose(1013, 'broker unavailable');
  assert.equal(named(events, 'reconnecting').at(-1).delay, 1000);
});

test('a node refusing before connected (4010 while it drains) is retried ever more slowly', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  clock.randomValue = 0.999999;
  const delays = [];
  for (let i = 0; i < 3; i++) {
    sockets.at(-1).serverClose(4010, 'node shutting down');
    const r = named(events, 'reconnecting').at(-1);
    delays.push(r.delay);
    await clock.advance(r.delay);
  }
  assert.deepEqual(delays, [1000, 2000, 4000]);
});

test('backoff jitter spreads clients between half and all of the delay', () => {
  const opts = { initial: 1000, max: 30000, factor: 2 };
  assert.equal(backoffDelay(0, opts, () => 0), 500);
  assert.equal(backoffDelay(0, opts, () => 0.999999), 1000);
  assert.equal(backoffDelay(3, opts, () => 0.5), 6000);
  assert.equal(backoffDelay(10, opts, () => 0), 15000);
  assert.equal(backoffDelay(0, {}, () => 1), 500, 'default initial is 500 ms');
});

for (const code of [4009, 4010]) {
  test(`close ${code}: the first reconnect is immediate (but for jitter), later ones back off`, async () => {
    const { clock, sockets, client, got, collect, events } = setup();
    client.subscribe('user:42', collect);
    await clock.advance(0);
    sockets[0].accept();
    sockets[0].answerSubscribe('user:42', { offset: 10 });
    sockets[0].pub('user:42', 11);
    await clock.advance(3000);
    clock.randomValue = 0;
    sockets[0].serverClose(code, code === 4010 ? 'node shutting down' : 'send queue overflow');
    assert.equal(named(events, 'disconnected')[0].reconnectIn, 0);
    await clock.advance(0);
    assert.equal(sockets.length, 2, 'reconnected at once');
    clock.randomValue = 0.5;
    sockets[1].serverClose(1006); // that node is not back yet
    const r = named(events, 'reconnecting').at(-1);
    assert.ok(r.delay >= 500, `second attempt waits (${r.delay} ms)`);
    await clock.advance(r.delay);
    sockets[2].accept();
    const s = sockets[2].answerSubscribe('user:42', { offset: 12, recovered: true });
    assert.deepEqual(s.since, { offset: 11, epoch: 'E' });
    sockets[2].pub('user:42', 12);
    assert.deepEqual(offsets(got), [11, 12]);
  });
}

for (const code of [4008, 4009, 4010]) {
  test(`close ${code}: the immediate reconnect is spread over backoff.initial, so a drained node's clients do not all come back at once`, async () => {
    const getToken = () => unsignedToken({ sub: '42', exp: 4_000_000_000 });
    const delays = [];
    for (const r of [0, 0.25, 0.999]) {
      const { clock, sockets, events } = setup({ token: undefined, getToken });
      await clock.advance(0);
      sockets[0].accept();
      await clock.advance(5000);
      clock.randomValue = r;
      sockets[0].serverClose(code, 'because');
      delays.push(named(events, 'disconnected')[0].reconnectIn);
    }
    assert.deepEqual(delays, [0, 250, 999]);
  });
}

test('close 4009 again and again: one step later each time, until a session lasts a minute', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  clock.randomValue = 0.999999;
  const delays = [];
  for (let i = 0; i < 5; i++) {
    sockets.at(-1).accept();
    await clock.advance(5000); // connected, then too slow again
    sockets.at(-1).serverClose(4009, 'send queue overflow');
    const d = named(events, 'disconnected').at(-1).reconnectIn;
    delays.push(d);
    await clock.advance(d);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000]);
  // A session that lasted a minute forgets the earlier ones.
  sockets.at(-1).accept();
  await clock.advance(61_000);
  sockets.at(-1).serverClose(4009, 'send queue overflow');
  assert.equal(named(events, 'disconnected').at(-1).reconnectIn, 1000);
});

test('close 4010 moves on to the next URL', async () => {
  const { clock, sockets, client } = setup({ url: ['ws://a.test/ws', 'ws://b.test/ws'] });
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  assert.equal(sockets[0].url, 'ws://a.test/ws');
  sockets[0].accept();
  await clock.advance(2000);
  sockets[0].serverClose(4010, 'node shutting down');
  await clock.advance(1000);
  assert.equal(sockets[1].url, 'ws://b.test/ws');
});

test('a session closed within a second gets no instant retry, so a loop cannot spin', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].serverClose(4009);
  assert.ok(named(events, 'disconnected')[0].reconnectIn > 0);
});

for (const [code, errCode] of [[4002, 'protocol_error'], [1009, 'message_too_big'], [4001, 'unauthorized'], [4008, 'token_expired']]) {
  test(`close ${code} without getToken is reported as ${errCode} and stops`, async () => {
    const { clock, sockets, client, events } = setup();
    client.subscribe('user:42', () => {});
    await clock.advance(0);
    sockets[0].accept();
    await clock.advance(5000);
    sockets[0].serverClose(code, 'because');
    const err = named(events, 'error');
    assert.equal(err.length, 1);
    assert.equal(err[0].code, errCode);
    assert.equal(err[0].fatal, true);
    assert.equal(named(events, 'disconnected')[0].reconnectIn, null);
    assert.equal(client.state(), 'closed');
    await clock.advance(120_000);
    assert.equal(sockets.length, 1, 'no reconnect');
    assert.ok(!JSON.stringify(events).includes(TOKEN), 'the token appears in no event');
  });
}

test('close 4008 with getToken: a new token, an immediate reconnect, and resume', async () => {
  let n = 0;
  const tokens = [];
  const getToken = async () => {
    const t = unsignedToken({ sub: '42', exp: 4_000_000_000, n: ++n });
    tokens.push(t);
    return t;
  };
  const { clock, sockets, client, got, collect, events } = setup({ token: undefined, getToken, refreshMargin: 1000 });
  client.subscribe('user:42', collect);
  await clock.advance(0);
  assert.equal(n, 1, 'getToken gives the first token');
  sockets[0].accept();
  assert.equal(sockets[0].last('connect').token, tokens[0]);
  sockets[0].answerSubscribe('user:42', { offset: 1 });
  sockets[0].pub('user:42', 2);
  await clock.advance(2000);
  sockets[0].serverClose(4008, 'token expired');
  const { reconnectIn } = named(events, 'disconnected')[0];
  assert.ok(reconnectIn >= 0 && reconnectIn < 1000, `within backoff.initial (${reconnectIn} ms)`);
  await clock.advance(reconnectIn);
  assert.equal(n, 2);
  sockets[1].accept();
  assert.equal(sockets[1].last('connect').token, tokens[1]);
  assert.deepEqual(sockets[1].last('subscribe').since, { offset: 2, epoch: 'E' });
  assert.equal(named(events, 'error').length, 0);
});

test('close 4001 with getToken asks for another token and retries with backoff', async () => {
  let n = 0;
  const getToken = () => unsignedToken({ sub: '42', exp: 4_000_000_000, n: ++n });
  const { clock, sockets, client, events } = setup({ token: undefined, getToken });
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  sockets[0].open();
  sockets[0].serverClose(4001, 'invalid token: signature is invalid');
  assert.equal(named(events, 'error')[0].code, 'unauthorized');
  assert.equal(named(events, 'error')[0].fatal, false);
  const delay = named(events, 'reconnecting').at(-1).delay;
  assert.ok(delay > 0);
  await clock.advance(delay);
  assert.equal(n, 2);
  sockets[1].accept();
  assert.equal(client.state(), 'connected');
});

test('a getToken that never answers is given up after connectTimeout, reported, and asked again later', async () => {
  let n = 0;
  let late = null;
  const getToken = () => {
    n++;
    if (n === 1) return new Promise((resolve) => (late = resolve)); // a fetch that hangs
    return unsignedToken({ sub: '42', exp: 4_000_000_000, n });
  };
  const { clock, sockets, client, events } = setup({ token: undefined, getToken, connectTimeout: 3000 });
  await clock.advance(2999);
  assert.deepEqual([n, sockets.length, client.state()], [1, 0, 'connecting']);
  await clock.advance(1);
  assert.deepEqual(named(events, 'error').map((e) => [e.code, e.fatal]), [['get_token_failed', false]]);
  assert.match(named(events, 'error')[0].message, /no token within 3000 ms/);
  assert.equal(client.state(), 'reconnecting');
  const delay = named(events, 'reconnecting').at(-1).delay;
  assert.ok(delay > 0, 'with backoff');
  await clock.advance(delay);
  assert.equal(n, 2);
  sockets[0].accept();
  assert.equal(sockets[0].last('connect').token, unsignedToken({ sub: '42', exp: 4_000_000_000, n: 2 }));
  // The first answer, arriving late, changes nothing.
  late(unsignedToken({ sub: '42', exp: 4_000_000_000, n: 1 }));
  await clock.advance(60_000);
  assert.deepEqual([sockets.length, client.state()], [1, 'connected']);
});

test('close() while getToken hangs leaves no timer behind', async () => {
  const { clock, sockets, client } = setup({ token: undefined, getToken: () => new Promise(() => {}) });
  await clock.advance(100);
  client.close();
  assert.deepEqual(clock.pending(), []);
  await clock.advance(60_000);
  assert.deepEqual([sockets.length, client.state()], [0, 'closed']);
});

test('refreshes the token before it expires, through getToken and a refresh frame', async () => {
  let n = 0;
  const getToken = () => unsignedToken({ sub: '42', n: ++n });
  const { clock, sockets, client, events } = setup({ token: undefined, getToken, refreshMargin: 60_000 });
  await clock.advance(0);
  const expires = (clock.t + 100_000) / 1000; // 100 s: refresh a quarter before
  sockets[0].accept({ expires });
  await clock.advance(74_000);
  assert.equal(sockets[0].all('refresh').length, 0);
  await clock.advance(1_000);
  const r = sockets[0].last('refresh');
  assert.ok(r, 'refresh sent 25 s before expiry');
  assert.equal(r.token, unsignedToken({ sub: '42', n: 2 }));
  sockets[0].frame({ id: r.id, type: 'refreshed', expires: expires + 100 });
  assert.deepEqual(named(events, 'refreshed'), [{ name: 'refreshed', expires: expires + 100 }]);
  await clock.advance(100_000);
  assert.equal(sockets[0].all('refresh').length, 2, 'and again before the new expiry');
  assert.equal(client.state(), 'connected');
});

test('a token valid for months is not refreshed in a loop (timers overflow past 24.8 days)', async () => {
  const getToken = () => unsignedToken({ sub: '42' });
  const { clock, sockets } = setup({ token: undefined, getToken });
  await clock.advance(0);
  sockets[0].accept({ expires: (clock.t + 90 * 86400_000) / 1000 });
  await clock.advance(1000);
  assert.equal(sockets[0].all('refresh').length, 0);
  assert.deepEqual(clock.pending(), [2 ** 31 - 1 - 1000]);
});

test('a refused refresh is reported; the server then closes 4008 and the client reconnects', async () => {
  const getToken = () => unsignedToken({ sub: '42' });
  const { clock, sockets, client, events } = setup({ token: undefined, getToken });
  await clock.advance(0);
  sockets[0].accept({ expires: (clock.t + 8000) / 1000 });
  await clock.advance(6000);
  const r = sockets[0].last('refresh');
  sockets[0].frame({ id: r.id, type: 'error', code: 'forbidden', message: 'refresh token is for another sub' });
  assert.equal(named(events, 'error')[0].code, 'refresh_failed');
  sockets[0].serverClose(4008, 'token expired');
  await clock.advance(1000);
  assert.equal(sockets.length, 2);
  assert.equal(client.state(), 'reconnecting');
});

test('a resume that cannot be recovered is a gap event, and delivery goes on from the new position', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', collect);
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('user:42', { offset: 0 });
  sockets[0].pub('user:42', 1);
  sockets[0].pub('user:42', 2);
  await clock.advance(2000);
  sockets[0].serverClose(4010);
  await clock.advance(1000);
  sockets[1].accept();
  sockets[1].answerSubscribe('user:42', { epoch: 'F', offset: 0, recovered: false, reason: 'epoch_mismatch' });
  sockets[1].pub('user:42', 1, { n: 'new' }, 'F');
  const gaps = named(events, 'gap');
  assert.equal(gaps.length, 1);
  assert.deepEqual(gaps[0], { name: 'gap', channel: 'user:42', reason: 'epoch_mismatch', epoch: 'F', offset: 0, previous: { epoch: 'E', offset: 2 } });
  assert.deepEqual(got.map((g) => `${g.epoch}:${g.offset}`), ['E:1', 'E:2', 'F:1']);
  assert.equal(named(events, 'subscribed').at(-1).recovered, false);
});

test('a gap announced by the server mid-subscription is a gap event', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', collect);
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('user:42', { offset: 4 });
  sockets[0].pub('user:42', 5);
  sockets[0].frame({ type: 'subscribed', channel: 'user:42', epoch: 'E', offset: 9, recovered: false, reason: 'offset_expired' });
  sockets[0].pub('user:42', 10);
  assert.deepEqual(named(events, 'gap').map((g) => [g.reason, g.offset, g.previous.offset]), [['offset_expired', 9, 5]]);
  assert.deepEqual(offsets(got), [5, 10]);
});

test('a gap announced below the last delivered offset does not hand anything on twice', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', collect);
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('user:42', { offset: 0 });
  for (const o of [1, 2, 3, 4, 5]) sockets[0].pub('user:42', o);
  sockets[0].frame({ type: 'subscribed', channel: 'user:42', epoch: 'E', offset: 3, recovered: false, reason: 'offset_expired' });
  for (const o of [4, 5, 6]) sockets[0].pub('user:42', o);
  assert.equal(named(events, 'gap').length, 1);
  assert.deepEqual(offsets(got), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(client.position('user:42'), { epoch: 'E', offset: 6 });
});

test('a publication beyond the next offset, unannounced, is a gap event before it is delivered', async () => {
  const { clock, sockets, client, got, events } = setup();
  const order = [];
  client.subscribe('user:42', (data, meta) => {
    got.push(meta);
    order.push('pub ' + meta.offset);
  });
  client.on('gap', (g) => order.push('gap ' + g.offset));
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('user:42', { offset: 4 });
  sockets[0].pub('user:42', 5);
  sockets[0].pub('user:42', 8); // 6 and 7 never came
  sockets[0].pub('user:42', 9);
  assert.deepEqual(named(events, 'gap'), [{ name: 'gap', channel: 'user:42', reason: 'offset_skipped', epoch: 'E', offset: 7, previous: { epoch: 'E', offset: 5 } }]);
  assert.deepEqual(order, ['pub 5', 'gap 7', 'pub 8', 'pub 9']);
  assert.deepEqual(client.position('user:42'), { epoch: 'E', offset: 9 });
});

test('a subscription the server revokes after a refresh is gone, also after reconnects', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('alerts:acme', () => {});
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('alerts:acme');
  sockets[0].answerSubscribe('user:42');
  sockets[0].frame({ type: 'unsubscribed', channel: 'alerts:acme' });
  assert.deepEqual(named(events, 'unsubscribed'), [{ name: 'unsubscribed', channel: 'alerts:acme', revoked: true }]);
  await clock.advance(2000);
  sockets[0].serverClose(1006);
  await clock.advance(1000);
  sockets[1].accept();
  assert.deepEqual(sockets[1].all('subscribe').map((s) => s.channel), ['user:42']);
});

test('a refused subscribe is reported with its channel and not retried', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:7', () => {});
  await clock.advance(0);
  sockets[0].accept();
  const s = sockets[0].last('subscribe');
  sockets[0].frame({ id: s.id, type: 'error', code: 'forbidden', message: 'token does not grant user:7' });
  assert.deepEqual(named(events, 'error').map((e) => [e.code, e.channel, e.fatal]), [['forbidden', 'user:7', false]]);
  await clock.advance(2000);
  sockets[0].serverClose(1006);
  await clock.advance(1000);
  sockets[1].accept();
  assert.equal(sockets[1].all('subscribe').length, 0);
});

test('a subscribe refused as unavailable is retried on the same connection', async () => {
  const { clock, sockets, client } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  sockets[0].accept();
  const s = sockets[0].last('subscribe');
  sockets[0].frame({ id: s.id, type: 'error', code: 'unavailable', message: 'broker unavailable; retry' });
  await clock.advance(2000);
  assert.equal(sockets[0].all('subscribe').length, 2);
});

test('a subscribe refused as unavailable again and again is retried later each time', async () => {
  const { clock, sockets, client } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  clock.randomValue = 0.999999; // the top of each jitter range
  sockets[0].accept();
  const refuse = () => {
    const s = sockets[0].last('subscribe');
    sockets[0].frame({ id: s.id, type: 'error', code: 'unavailable', message: 'broker unavailable; retry' });
  };
  const gaps = [];
  for (let i = 0; i < 4; i++) {
    refuse();
    const sent = sockets[0].all('subscribe').length;
    let waited = 0;
    while (sockets[0].all('subscribe').length === sent) {
      await clock.advance(100);
      waited += 100;
    }
    gaps.push(waited);
  }
  assert.deepEqual(gaps, [2000, 4000, 8000, 8000]);
  sockets[0].answerSubscribe('user:42', { offset: 1 });
});

test('hundreds of channels retrying through a broker outage keep under the server frame rate', async () => {
  const { clock, sockets, client } = setup();
  const channels = Array.from({ length: 256 }, (_, i) => 'c:' + i);
  for (const ch of channels) client.subscribe(ch, () => {});
  await clock.advance(0);
  const ws = sockets[0];
  ws.accept();
  let answered = 0;
  for (let ms = 0; ms < 60_000; ms += 50) {
    // The broker is down: every subscribe is refused as unavailable.
    for (const f of ws.sent.slice(answered)) {
      if (f.type === 'subscribe') ws.frame({ id: f.id, type: 'error', code: 'unavailable', message: 'broker unavailable; retry' });
    }
    answered = ws.sent.length;
    await clock.advance(50);
  }
  assert.ok(ws.all('subscribe').length > 3 * 256, 'each channel was retried several times');
  // herald's limit: 50 frames a second, bursts of 300.
  let allowance = 300;
  for (let i = 0; i < ws.sentAt.length; i++) {
    if (i > 0) allowance = Math.min(300, allowance + ((ws.sentAt[i] - ws.sentAt[i - 1]) * 50) / 1000);
    allowance--;
    assert.ok(allowance >= 0, `frame ${i} (${ws.sent[i].type}) at ${ws.sentAt[i] - ws.sentAt[0]} ms is over the server limit`);
  }
  assert.equal(ws.closed, null);
});

test('a handler that unsubscribes during a backfill ends it; no subscribe follows', async () => {
  const { clock, sockets, client } = setup();
  const got = [];
  const sub = client.subscribe('merchant:acme', (data, meta) => {
    got.push(meta.offset);
    if (meta.offset === 8) sub.unsubscribe();
  }, { backfill: 3 });
  await clock.advance(0);
  sockets[0].accept();
  const h = sockets[0].last('history');
  sockets[0].frame({ id: h.id, type: 'history', channel: 'merchant:acme', epoch: 'E', offset: 9, publications: [{ offset: 7, data: {} }, { offset: 8, data: {} }, { offset: 9, data: {} }] });
  await clock.advance(1000);
  assert.deepEqual(got, [7, 8]);
  assert.equal(sockets[0].all('subscribe').length, 0);
  assert.equal(sockets[0].all('unsubscribe').length, 0, 'nothing to leave on the server');
  // Subscribing again later works as usual.
  client.subscribe('merchant:acme', () => {});
  await clock.advance(0);
  assert.deepEqual(sockets[0].last('subscribe').since, { offset: 8, epoch: 'E' });
});

test('a handler that closes the client during a backfill ends it there', async () => {
  const { clock, sockets, client } = setup();
  const got = [];
  client.subscribe('merchant:acme', (data, meta) => {
    got.push(meta.offset);
    if (meta.offset === 8) client.close();
  }, { backfill: 3 });
  await clock.advance(0);
  sockets[0].accept();
  const h = sockets[0].last('history');
  sockets[0].frame({ id: h.id, type: 'history', channel: 'merchant:acme', epoch: 'E', offset: 9, publications: [{ offset: 7, data: {} }, { offset: 8, data: {} }, { offset: 9, data: {} }] });
  await clock.advance(1000);
  assert.deepEqual(got, [7, 8]);
  assert.equal(client.state(), 'closed');
  assert.equal(client.stats().delivered, 2);
});

test('already_subscribed is mended: the client leaves, then subscribes again from its position', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', collect, { since: { epoch: 'E', offset: 4 } });
  await clock.advance(0);
  sockets[0].accept();
  const s = sockets[0].last('subscribe');
  sockets[0].frame({ id: s.id, type: 'error', code: 'already_subscribed', message: 'already subscribed to user:42' });
  const after = sockets[0].sent.slice(sockets[0].sent.indexOf(s) + 1).map((f) => f.type);
  assert.deepEqual(after, ['unsubscribe', 'subscribe']);
  sockets[0].frame({ id: sockets[0].last('unsubscribe').id, type: 'unsubscribed', channel: 'user:42' });
  assert.deepEqual(named(events, 'unsubscribed'), [], 'the mend is no news for the application');
  assert.deepEqual(sockets[0].last('subscribe').since, { offset: 4, epoch: 'E' });
  sockets[0].answerSubscribe('user:42', { offset: 4 });
  sockets[0].pub('user:42', 5);
  assert.deepEqual(offsets(got), [5]);
});

test('a clock behind the server still refreshes before the token expires', async () => {
  const skew = 120_000; // the server's clock is two minutes ahead
  let n = 0;
  const { clock, sockets } = setup({
    token: undefined,
    refreshMargin: 60_000,
    getToken: () => {
      const iat = Math.floor((clock.t + skew) / 1000);
      return unsignedToken({ sub: '42', n: ++n, iat, exp: iat + 100 });
    },
  });
  await clock.advance(0);
  const expires = Math.floor((clock.t + skew) / 1000) + 100; // the server's expiry, 100 s away
  sockets[0].accept({ expires });
  await clock.advance(76_000);
  assert.equal(sockets[0].all('refresh').length, 1, 'refreshed a quarter of the lifetime before its end');
});

/**
 * Plays a server whose clock is `skew` ms behind the client's: it accepts
 * with a token lifetime of `ttl` s and answers every refresh `latency` ms
 * after it was sent (getToken's fetch and the round trip) by extending the
 * expiry, as herald does. Counts refreshes and getToken calls over `ms`.
 */
async function refreshAgainstSlowServer({ skew, ttl, claims, ms, latency = 1000 }) {
  let calls = 0;
  const serverNow = () => Math.floor((clock.t - skew) / 1000);
  const { clock, sockets, events } = setup({
    token: undefined,
    getToken: () => {
      calls++;
      const iat = serverNow();
      return unsignedToken(claims ? { sub: '42', n: calls, iat, exp: iat + ttl } : { sub: '42', n: calls });
    },
  });
  await clock.advance(0);
  sockets[0].accept({ expires: serverNow() + ttl });
  let answered = 0;
  for (let t = 0; t < ms; t += 50) {
    const due = sockets[0].sent.filter((f, i) => f.type === 'refresh' && sockets[0].sentAt[i] + latency <= clock.t);
    for (const r of due.slice(answered)) {
      sockets[0].frame({ id: r.id, type: 'refreshed', expires: serverNow() + ttl });
      answered++;
    }
    await clock.advance(50);
  }
  assert.equal(sockets.length, 1, 'one connection throughout');
  return { calls, refreshes: sockets[0].all('refresh').length, events };
}

test('a clock ahead of the server does not refresh in a loop: at most one refresh per 5 s', async () => {
  // The token carries no lifetime: nothing tells how long it has left.
  // Each answer extends the expiry (a second or more passed on the
  // server), so without a floor each would be followed by another at once.
  const { refreshes, calls } = await refreshAgainstSlowServer({ skew: 600_000, ttl: 300, claims: false, ms: 30_000 });
  assert.ok(refreshes >= 1 && refreshes <= 7, `${refreshes} refreshes in 30 s`);
  assert.equal(calls, refreshes + 1, 'getToken: the first token, then one per refresh');
});

test('a clock ahead of the server refreshes by the token\'s lifetime (exp − iat) when the expiry looks past', async () => {
  const early = await refreshAgainstSlowServer({ skew: 600_000, ttl: 300, claims: true, ms: 200_000 });
  assert.equal(early.refreshes, 0, 'nothing while most of the lifetime is left');
  const due = await refreshAgainstSlowServer({ skew: 600_000, ttl: 300, claims: true, ms: 260_000 });
  assert.equal(due.refreshes, 1, 'refreshed refreshMargin before the lifetime ends');
  assert.equal(due.calls, 2, 'getToken: the first token, then the refresh');
});

for (const lasted of [5000, 100]) {
  test(`close 4029 after ${lasted} ms: never an instant retry, and one step later each time it happens again`, async () => {
    const { clock, sockets, client, events } = setup();
    client.subscribe('user:42', () => {});
    await clock.advance(0);
    clock.randomValue = 0.999999;
    const delays = [];
    for (let i = 0; i < 4; i++) {
      sockets.at(-1).accept();
      await clock.advance(lasted); // connected, then closed: too many frames
      sockets.at(-1).serverClose(4029, 'too many frames');
      const d = named(events, 'disconnected').at(-1);
      assert.equal(d.code, 4029);
      delays.push(d.reconnectIn);
      await clock.advance(d.reconnectIn);
    }
    assert.deepEqual(delays, [2000, 4000, 8000, 8000]);
    // A session that lasted a minute forgets the earlier ones.
    sockets.at(-1).accept();
    await clock.advance(61_000);
    sockets.at(-1).serverClose(4029, 'too many frames');
    assert.equal(named(events, 'disconnected').at(-1).reconnectIn, 2000);
  });
}

test('close 4029 before connected (too many connections from this address) backs off one step at a time', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  clock.randomValue = 0.999999;
  const delays = [];
  for (let i = 0; i < 3; i++) {
    sockets.at(-1).serverClose(4029, 'too many connections from your address');
    const d = named(events, 'disconnected').at(-1).reconnectIn;
    delays.push(d);
    await clock.advance(d);
  }
  assert.deepEqual(delays, [2000, 4000, 8000]);
});

test('unsubscribe leaves the channel and ignores its later publications', async () => {
  const { clock, sockets, client, got, collect } = setup();
  const sub = client.subscribe('user:42', collect);
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('user:42');
  sockets[0].pub('user:42', 1);
  sub.unsubscribe();
  assert.equal(sockets[0].last('unsubscribe').channel, 'user:42');
  sockets[0].pub('user:42', 2);
  assert.deepEqual(offsets(got), [1]);
});

test('two handlers on one channel share one server subscription', async () => {
  const { clock, sockets, client } = setup();
  const a = [];
  const b = [];
  const sa = client.subscribe('user:42', (d, m) => a.push(m.offset));
  client.subscribe('user:42', (d, m) => b.push(m.offset));
  await clock.advance(0);
  sockets[0].accept();
  assert.equal(sockets[0].all('subscribe').length, 1);
  sockets[0].answerSubscribe('user:42');
  sockets[0].pub('user:42', 1);
  sa.unsubscribe();
  sockets[0].pub('user:42', 2);
  assert.deepEqual([a, b], [[1], [1, 2]]);
  assert.equal(sockets[0].all('unsubscribe').length, 0);
});

test('a handler that throws is reported and does not stop delivery', async () => {
  const { clock, sockets, client, got, collect, events } = setup();
  client.subscribe('user:42', () => {
    throw new Error('boom');
  });
  client.subscribe('user:42', collect);
  await clock.advance(0);
  sockets[0].accept();
  sockets[0].answerSubscribe('user:42');
  sockets[0].pub('user:42', 1);
  sockets[0].pub('user:42', 2);
  assert.deepEqual(offsets(got), [1, 2]);
  assert.equal(named(events, 'error').filter((e) => e.code === 'handler_error').length, 2);
});

for (const kind of ['sync', 'async']) {
  test(`positions persist in ${kind} storage, so a new client resumes where the last stopped`, async () => {
    const mem = new MemoryStorage();
    const storage = kind === 'sync' ? mem : { getItem: async (k) => mem.getItem(k), setItem: async (k, v) => mem.setItem(k, v) };
    const first = setup({ storage });
    first.client.subscribe('user:42', first.collect);
    await first.clock.advance(0);
    first.sockets[0].accept();
    assert.equal(first.sockets[0].last('subscribe').since, undefined, 'nothing stored yet');
    first.sockets[0].answerSubscribe('user:42', { offset: 3 });
    first.sockets[0].pub('user:42', 4);
    await flush();
    first.client.close();
    assert.equal(mem.getItem('herald:user:42'), JSON.stringify({ epoch: 'E', offset: 4 }));

    const second = setup({ storage });
    second.client.subscribe('user:42', second.collect);
    await second.clock.advance(0);
    second.sockets[0].accept();
    await flush();
    assert.deepEqual(second.sockets[0].last('subscribe').since, { offset: 4, epoch: 'E' });
  });
}

test('a corrupt stored position is ignored', async () => {
  const mem = new MemoryStorage();
  mem.setItem('herald:user:42', '{not json');
  const { clock, sockets, client } = setup({ storage: mem });
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  sockets[0].accept();
  assert.equal(sockets[0].last('subscribe').since, undefined);
});

test('backfill delivers recent history once, then subscribes after it', async () => {
  const { clock, sockets, client, got, collect } = setup();
  client.subscribe('merchant:acme', collect, { backfill: 2 });
  await clock.advance(0);
  sockets[0].accept();
  const h = sockets[0].last('history');
  assert.deepEqual(h, { id: h.id, type: 'history', channel: 'merchant:acme', limit: 2 });
  assert.equal(sockets[0].all('subscribe').length, 0);
  sockets[0].frame({ id: h.id, type: 'history', channel: 'merchant:acme', epoch: 'E', offset: 9, publications: [{ offset: 8, data: {} }, { offset: 9, data: {} }] });
  const s = sockets[0].last('subscribe');
  assert.deepEqual(s.since, { offset: 9, epoch: 'E' });
  sockets[0].answerSubscribe('merchant:acme', { offset: 10, recovered: true });
  sockets[0].pub('merchant:acme', 10);
  assert.deepEqual(got.map((g) => [g.offset, g.history]), [[8, true], [9, true], [10, false]]);
});

test('a connection that answers no ping is dropped and replaced', async () => {
  const { clock, sockets, client, events } = setup({ pingInterval: 1000, pongTimeout: 500 });
  await clock.advance(0);
  sockets[0].accept();
  await clock.advance(1000);
  const p = sockets[0].last('ping');
  assert.ok(p);
  sockets[0].frame({ id: p.id, type: 'pong' });
  await clock.advance(1000);
  assert.equal(client.state(), 'connected', 'answered pings keep it');
  await clock.advance(500); // the second ping went unanswered
  assert.equal(client.state(), 'reconnecting');
  assert.equal(sockets[0].closed.byClient, true);
  assert.equal(named(events, 'disconnected')[0].code, 1006);
});

test('an attempt that gets no connected frame in time is abandoned', async () => {
  const { clock, sockets, client } = setup({ connectTimeout: 3000 });
  await clock.advance(0);
  sockets[0].open();
  await clock.advance(3000);
  assert.equal(client.state(), 'reconnecting');
  await clock.advance(1000);
  assert.equal(sockets.length, 2);
});

test('close stops everything', async () => {
  const { clock, sockets, client, events } = setup();
  client.subscribe('user:42', () => {});
  await clock.advance(0);
  sockets[0].accept();
  client.close();
  assert.equal(client.state(), 'closed');
  assert.equal(sockets[0].closed.code, 1000);
  assert.equal(named(events, 'disconnected').at(-1).reconnectIn, null);
  await clock.advance(60_000);
  assert.equal(sockets.length, 1);
  assert.deepEqual(clock.pending(), []);
  assert.throws(() => client.subscribe('user:42', () => {}));
});

test('history resolves with the reply and rejects on an error', async () => {
  const { clock, sockets, client } = setup();
  await assert.rejects(client.history('user:42'), { code: 'disconnected' });
  await clock.advance(0);
  sockets[0].accept();
  const ok = client.history('user:42', { limit: 5 });
  const h = sockets[0].last('history');
  sockets[0].frame({ id: h.id, type: 'history', channel: 'user:42', epoch: 'E', offset: 0, publications: [] });
  assert.equal((await ok).epoch, 'E');
  const bad = client.history('user:9');
  const h2 = sockets[0].last('history');
  sockets[0].frame({ id: h2.id, type: 'error', code: 'forbidden', message: 'no' });
  await assert.rejects(bad, { code: 'forbidden' });
});

test('decodeToken and grantedChannels read what a token grants', () => {
  const t = unsignedToken({ sub: 'demo', merchant: 'demo', channels: ['user:other', 'merchant:demo'], exp: 1 });
  const c = decodeToken(t);
  assert.equal(c.sub, 'demo');
  assert.deepEqual(grantedChannels(c), ['user:demo', 'merchant:demo', 'alerts:demo', 'user:other']);
  assert.deepEqual(grantedChannels(decodeToken(unsignedToken({ sub: 'x' }))), ['user:x']);
  assert.equal(decodeToken('not a token'), null);
  assert.equal(decodeToken('a.!!!.c'), null);
  assert.deepEqual(grantedChannels(null), []);
});

test('URLs: http(s) become ws(s), and a bare host gets /ws', async () => {
  const { clock, sockets } = setup({ url: 'https://h.test:8443' });
  await clock.advance(0);
  assert.equal(sockets[0].url, 'wss://h.test:8443/ws');
  assert.throws(() => connect({ url: 'ftp://x', token: TOKEN, WebSocket: class {} }), /ws\(s\) or http\(s\)/);
  assert.throws(() => connect({ url: 'ws://x/ws', WebSocket: class {} }), /token or getToken/);
});
