// herald.js from Node against real herald processes, with the `ws`
// package as its WebSocket (Node 20 has no global one without a flag).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { connect } from '../static/herald.js';
import { mintToken, publish, startNode, startRedisPair, waitFor } from './lib/herald.js';

/** A client on node(s) that records what it delivers and the events it emits. */
function watch(t, url, opts = {}) {
  const got = [];
  const events = [];
  const client = connect({ url, WebSocket, backoff: { initial: 100, max: 1000 }, ...opts });
  for (const name of ['connected', 'disconnected', 'subscribed', 'gap', 'refreshed', 'error']) {
    client.on(name, (ev) => events.push({ name, ...ev }));
  }
  t.after(() => client.close());
  const collect = (data, meta) => got.push({ n: data.n, offset: meta.offset, epoch: meta.epoch });
  return { client, got, events, collect, named: (n) => events.filter((e) => e.name === n) };
}

async function publishN(node, channel, from, to) {
  for (let n = from; n <= to; n++) await publish(node, channel, { n });
}

test('delivers publications in order, and resumes across a node restart with a gap when the log was lost', async (t) => {
  let node = await startNode({ name: 'a' });
  t.after(() => node.stop());
  const w = watch(t, node.url, { token: mintToken({ sub: '42', merchant: '' }) });
  w.client.subscribe('user:42', w.collect);
  await waitFor(() => w.named('subscribed').length === 1, 5000, 'subscribed');
  await publishN(node, 'user:42', 1, 3);
  await waitFor(() => w.got.length === 3, 5000, '3 publications');
  assert.deepEqual(w.got.map((g) => g.n), [1, 2, 3]);

  // SIGTERM closes with 4010; the embedded broker's history dies with it.
  const port = node.port;
  await node.stop('SIGTERM');
  await waitFor(() => w.named('disconnected').some((d) => d.code === 4010), 5000, 'close 4010');
  node = await startNode({ name: 'a', port });
  await waitFor(() => w.named('gap').length === 1, 10000, 'gap');
  const gap = w.named('gap')[0];
  assert.equal(gap.reason, 'epoch_mismatch');
  assert.deepEqual(gap.previous, { epoch: w.got[0].epoch, offset: 3 });
  await publishN(node, 'user:42', 1, 2);
  await waitFor(() => w.got.length === 5, 5000, 'publications of the new epoch');
  assert.deepEqual(w.got.slice(3).map((g) => g.offset), [1, 2]);
  assert.notEqual(w.got[3].epoch, w.got[0].epoch);
  assert.equal(w.named('error').length, 0);
});

test('refreshes a short-lived token before it expires, keeping the connection', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  // The client refreshes with a quarter of the lifetime left (about 3 s
  // here: exp is whole seconds, so a token lives 11-12 s), room for a
  // loaded machine; two refreshes take about 18 s.
  let minted = 0;
  const getToken = () => {
    minted++;
    return mintToken({ sub: '7', merchant: '', ttl: 12 });
  };
  const w = watch(t, node.url, { getToken });
  w.client.subscribe('user:7', w.collect);
  await waitFor(() => w.named('refreshed').length >= 2, 60000, 'two refreshes');
  await publishN(node, 'user:7', 1, 1);
  await waitFor(() => w.got.length === 1, 5000, 'a publication after the refreshes');
  assert.equal(w.named('connected').length, 1, 'never reconnected');
  assert.equal(w.named('disconnected').length, 0);
  assert.ok(minted >= 3);
});

test('without getToken, an expired token (4008) is reported once and not retried', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  // Long enough to connect on a loaded machine before it expires.
  const w = watch(t, node.url, { token: mintToken({ sub: '7', merchant: '', ttl: 10 }) });
  await waitFor(() => w.client.state() === 'closed', 40000, 'closed');
  assert.equal(w.named('connected').length, 1, 'connected before the token expired');
  assert.deepEqual(w.named('error').map((e) => [e.code, e.fatal]), [['token_expired', true]]);
  assert.deepEqual(w.named('disconnected').map((d) => d.code), [4008]);
});

test('a channel the token does not grant is refused with its channel; the others work', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const w = watch(t, node.url, { token: mintToken({ sub: '42', merchant: 'acme' }) });
  w.client.subscribe('user:43', w.collect);
  w.client.subscribe('merchant:acme', w.collect);
  await waitFor(() => w.named('error').length === 1 && w.named('subscribed').length === 1, 5000, 'answers');
  assert.deepEqual(w.named('error').map((e) => [e.code, e.channel]), [['forbidden', 'user:43']]);
  await publishN(node, 'merchant:acme', 1, 1);
  await waitFor(() => w.got.length === 1, 5000, 'a publication');
});

test('Redis engine: a node drains (4010), the client moves to another and misses nothing', async (t) => {
  const pair = await startRedisPair(t);
  const { a, b } = pair;

  const w = watch(t, [a.url, b.url], { token: mintToken({ sub: '42', merchant: '' }) });
  w.client.subscribe('user:42', w.collect);
  await waitFor(() => w.named('subscribed').length === 1, 5000, 'subscribed');
  await publishN(a, 'user:42', 1, 3);
  await waitFor(() => w.got.length === 3, 5000, 'first publications');

  // Publish on b while a drains, so some land while the client moves.
  const draining = a.stop('SIGTERM');
  await publishN(b, 'user:42', 4, 20);
  await draining;
  await waitFor(() => w.got.length === 20, 10000, 'all 20');
  assert.deepEqual(w.got.map((g) => g.n), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.equal(w.named('gap').length, 0);
  const nodes = w.named('connected').map((c) => c.node);
  assert.deepEqual(nodes, ['a', 'b']);
  const resumed = w.named('subscribed')[1];
  assert.equal(resumed.resumed, true);
  assert.equal(resumed.recovered, true);
});
