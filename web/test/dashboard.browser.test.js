// The dashboard in headless Chromium against real herald processes: the
// `herald --dev` link, live rows from ingress, invalid tokens, a dropped
// network resumed exactly once, a restarted embedded broker shown as a gap,
// and a restart on the Redis engine resumed exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { launch, openPage } from './lib/browser.js';
import {
  ARTIFACTS, fixture, ingress, mintToken, publish, startNode, startProxy, startRedisPair, waitFor, sleep,
} from './lib/herald.js';

/** @type {import('playwright-core').Browser} */
let browser;
before(async () => {
  browser = await launch();
  mkdirSync(ARTIFACTS, { recursive: true });
});
after(async () => {
  await browser?.close();
});

/** A Kriptomat exchange webhook with its own transaction id (and state). */
function exchange(id, state = 'SUCCESS') {
  const body = JSON.parse(fixture('kriptomat', 'exchange_buy'));
  return JSON.stringify({ ...body, id, state });
}
const exchangeID = (id, state = 'SUCCESS') => `kriptomat:exchange.buy:${id}:${state}`;

/** Waits until the dashboard has every granted channel subscribed. */
async function waitLive(page, n = 3) {
  await page.waitForFunction((n) => document.querySelectorAll('#channel-list label[data-live]').length === n, n);
}

const status = (page) => page.getAttribute('#status', 'data-state');
const rowsWithID = (page, id) => page.locator(`tr.event[data-id="${id}"]`).count();
const logText = (page) => page.textContent('#log-lines');

/** Asserts the token shows nowhere but in the password field, and was never logged. */
async function assertTokenHidden(page, consoleLines, token) {
  // textContent too: it includes the closed connection log.
  const text = await page.evaluate(() => document.body.innerText + document.body.textContent + document.title);
  assert.ok(!text.includes(token), 'token in the page text');
  assert.ok(!page.url().includes(token), 'token left in the address bar');
  assert.ok(!consoleLines.some((l) => l.includes(token)), 'token in the console');
  assert.equal(await page.getAttribute('#token', 'type'), 'password');
}

/**
 * Starts a --dev node and reads its banner: the dashboard link (with a
 * token) and Kriptomat's webhook secret.
 * @param {import('node:test').TestContext} t
 */
async function startDev(t) {
  const node = await startNode({ dev: true });
  t.after(() => node.stop());
  const out = await waitFor(() => /Publish directly/.test(node.logs()) && node.logs(), 5000, 'the --dev banner');
  const link = /Dashboard:\s+(\S+)/.exec(out)[1];
  const secret = /Bearer ([0-9a-f]+)".*\/ingress\/kriptomat/.exec(out)[1];
  return { node, link, secret, out };
}

test('the herald --dev link shows an ingress event live, styled and with its raw payload', async (t) => {
  const { node, link, secret, out } = await startDev(t);
  const token = new URL(link).hash.slice('#token='.length);
  assert.ok(link.startsWith(node.url + '/#token='), link);

  const { page, context, consoleLines } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(link);
  // The dev merchant's channels, and those of the merchant that 0xpay's
  // samples name themselves.
  const oxpay = 'b2a46898-7e6d-4c13-8a31-47154c43ee8b';
  await waitLive(page, 5);
  assert.equal(await status(page), 'connected');
  assert.deepEqual((await page.locator('#channel-list label').allTextContents()).sort(),
    [' alerts:' + oxpay, ' alerts:demo', ' merchant:' + oxpay, ' merchant:demo', ' user:demo']);
  assert.match(await page.textContent('#identity'), /sub demo · merchant demo/);

  const t0 = performance.now();
  await ingress(node, 'kriptomat', fixture('kriptomat', 'exchange_buy'), secret);
  const row = page.locator(`tr.event[data-id="${exchangeID(58463)}"]`);
  // The latency is reported, not judged: the machine running the suite is
  // shared.
  await row.waitFor({ state: 'visible', timeout: 5000 });
  const latency = performance.now() - t0;
  t.diagnostic(`ingress POST to visible row: ${latency.toFixed(0)} ms`);

  assert.equal(await row.getAttribute('data-channel'), 'merchant:demo');
  assert.equal(await row.locator('td[data-label="provider"]').textContent(), 'kriptomat');
  assert.equal(await row.locator('td[data-label="type"]').textContent(), 'exchange.buy');
  assert.equal(await row.locator('.chip').getAttribute('class'), 'chip status-succeeded');
  const amounts = await row.locator('td[data-label="amounts"]').textContent();
  assert.match(amounts, /amount 0\.0623414132 BTC/);
  assert.match(amounts, /fee 2\.00 EUR/, 'decimal strings exactly as sent');
  await row.locator('button.raw-toggle').click();
  const raw = page.locator('tr.raw:not([hidden]) pre');
  assert.match(await raw.textContent(), /"pair": "btceur"/);
  assert.match(await raw.textContent(), /"fee": 2\.00,/, 'the raw payload keeps the provider\'s digits');
  assert.match(await raw.textContent(), /"amount": 0\.0623414132,/);
  assert.ok(!(await page.locator('tr.raw:not([hidden]) .raw-note').isVisible()), 'no rounding to tell');

  // A master balance alert stands out; a late PENDING is shown as stale.
  await ingress(node, 'kriptomat', fixture('kriptomat', 'master_balance'), secret);
  const alert = page.locator('tr.event[data-channel="alerts:demo"]');
  await alert.waitFor({ timeout: 10000 });
  assert.match(await alert.getAttribute('class'), /\balert\b/);
  assert.equal(await alert.locator('.alert-badge').count(), 1);
  const bg = await alert.evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.notEqual(bg, 'rgba(0, 0, 0, 0)', 'alert rows have a background');

  await ingress(node, 'kriptomat', exchange(58463, 'PENDING'), secret);
  const stale = page.locator(`tr.event[data-id="${exchangeID(58463, 'PENDING')}"]`);
  await stale.waitFor({ timeout: 10000 });
  assert.match(await stale.getAttribute('class'), /\bstale\b/);
  assert.match(await stale.locator('td[data-label="status"]').textContent(), /stale.*now succeeded/);

  for (const name of ['deposit', 'withdrawal', 'kyc_status', 'bank_account']) {
    await ingress(node, 'kriptomat', fixture('kriptomat', name), secret);
  }
  await page.waitForFunction(() => document.querySelectorAll('tr.event').length >= 7);
  assert.equal(await page.textContent('#count-events'), String(await page.locator('tr.event').count()));
  // Newest first.
  const ids = await page.locator('tr.event').evaluateAll((rs) => rs.map((r) => r.dataset.id));
  assert.equal(ids.at(-1), exchangeID(58463));

  // Data published through the API need not be an event, nor an object:
  // its row shows it, raw included, without an error.
  const apiKey = /API key:\s+(\S+)/.exec(out)[1];
  const res = await fetch(`${node.url}/v1/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ channel: 'user:demo', data: 'hello' }),
  });
  assert.equal(res.status, 200);
  const plain = page.locator('tr.event[data-channel="user:demo"]');
  await plain.waitFor({ timeout: 10000 });
  await plain.locator('button.raw-toggle').click();
  assert.equal(await plain.locator('xpath=following-sibling::tr[1]//pre').textContent(), '"hello"');
  await assertTokenHidden(page, consoleLines, token);
  assert.deepEqual(consoleLines, [], 'no errors, no Content-Security-Policy violations');
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });

  // On a phone: the same events (from history), no sideways scrolling.
  const phone = await openPage(browser, { width: 390, height: 844 });
  t.after(() => phone.context.close());
  await phone.page.goto(link);
  await waitLive(phone.page, 5);
  await phone.page.waitForFunction(() => document.querySelectorAll('tr.event').length >= 7);
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow} px wider than the phone`);
  await phone.page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
});

test('a browser that cannot keep a number\'s digits says so above the raw payload', async (t) => {
  const { node, link, secret } = await startDev(t);
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  await page.addInitScript(() => {
    // As in browsers before JSON.rawJSON.
    delete (/** @type {any} */ (JSON)).rawJSON;
  });
  await page.goto(link);
  await waitLive(page, 5);
  await ingress(node, 'kriptomat', fixture('kriptomat', 'exchange_buy'), secret);
  const row = page.locator(`tr.event[data-id="${exchangeID(58463)}"]`);
  await row.waitFor({ state: 'visible', timeout: 5000 });
  assert.match(await row.locator('td[data-label="amounts"]').textContent(), /fee 2\.00 EUR/, 'the amounts are exact anyway');
  await row.locator('button.raw-toggle').click();
  const detail = page.locator('tr.raw:not([hidden])');
  assert.match(await detail.locator('pre').textContent(), /"fee": 2,/);
  assert.ok(await detail.locator('.raw-note').isVisible(), 'the rounding is told');
  assert.match(await detail.locator('.raw-note').textContent(), /2\.00 shows as 2/);
});

test('an invalid token gets a clear message', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const { page, context, consoleLines } = await openPage(browser);
  t.after(() => context.close());

  await page.goto(`${node.url}/#token=not-a-jwt`);
  await page.locator('#message').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#message'), /not a herald token/);

  const forged = mintToken({ secret: 'some other secret' });
  await page.fill('#token', forged);
  await page.click('#connect');
  await page.waitForFunction(() => /refused the token/.test(document.getElementById('message')?.textContent || ''));
  assert.match(await page.textContent('#message'), /herald refused the token: invalid token/);
  assert.equal(await status(page), 'closed');

  const expired = mintToken({ ttl: -60 });
  await page.fill('#token', expired);
  await page.click('#connect');
  await page.waitForFunction(() => /refused the token/.test(document.getElementById('message')?.textContent || ''));
  assert.match(await page.textContent('#message'), /expired/);
  await sleep(1500);
  const attempts = (await logText(page)).match(/disconnected/g) || [];
  assert.equal(attempts.length, 2, 'one refusal per token, no retry loop');
  await assertTokenHidden(page, consoleLines, forged);
});

test('an expired token replaced by a new one for the same identity: the page resumes, nothing skipped', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  // Long enough for the page to load, connect and show a row on a loaded
  // machine before the token expires.
  await page.goto(`${node.url}/#token=${mintToken({ ttl: 12 })}`);
  await waitLive(page);
  await publish(node, 'merchant:demo', { n: 0 });
  await page.locator('tr.event').first().waitFor();
  await waitFor(async () => /disconnected: 4008/.test(await logText(page)), 40000, 'close 4008 in the log');
  // More than a backfill shows, published while the page had no token.
  for (let i = 1; i <= 60; i++) await publish(node, 'merchant:demo', { n: i });
  await page.fill('#token', mintToken());
  await page.click('#connect');
  await waitFor(async () => (await page.locator('tr.event').count()) === 61, 10000, '61 rows');
  assert.match(await logText(page), /subscribed merchant:demo at offset 61, resumed with nothing missed/);
  assert.equal(await page.locator('#gap-notice').isVisible(), false);
  // Switched off and on, the channel goes on from where it is: no row twice.
  const box = page.locator('#channel-list input[value="merchant:demo"]');
  await box.uncheck();
  await box.check();
  const resumes = async () => ((await logText(page)) || '').match(/subscribed merchant:demo at offset 61, resumed/g)?.length;
  await waitFor(async () => (await resumes()) === 2, 10000, 'the second resume');
  await publish(node, 'merchant:demo', { n: 61 });
  await waitFor(async () => (await page.locator('tr.event').count()) === 62, 10000, '62 rows');
  await sleep(300);
  assert.equal(await page.locator('tr.event').count(), 62);
});

test('a new token for the same identity resumes a channel switched off before, rather than showing its rows again', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(`${node.url}/#token=${mintToken()}`);
  await waitLive(page);
  for (let n = 1; n <= 2; n++) await publish(node, 'merchant:demo', { n });
  await waitFor(async () => (await page.locator('tr.event').count()) === 2, 10000, '2 rows');
  await page.locator('#channel-list input[value="merchant:demo"]').uncheck();
  await publish(node, 'merchant:demo', { n: 3 }); // while switched off

  await page.fill('#token', mintToken());
  await page.click('#connect');
  await waitLive(page);
  await waitFor(async () => (await page.locator('tr.event').count()) >= 3, 10000, 'the row published meanwhile');
  await sleep(300); // room for a duplicate to show up, if there were one
  const offsets = await page.locator('tr.event[data-channel="merchant:demo"]').evaluateAll((rs) => rs.map((r) => Number(r.dataset.offset)));
  assert.deepEqual(offsets, [3, 2, 1], 'each row once');
  assert.match(await logText(page), /subscribed merchant:demo at offset 3, resumed with nothing missed/);
});

test('a dropped network: the page reconnects, resumes, and shows what was published meanwhile exactly once', async (t) => {
  const node = await startNode();
  const proxy = await startProxy(node.port);
  t.after(async () => {
    await proxy.close();
    await node.stop();
  });
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(`${proxy.url}/#token=${mintToken()}`);
  await waitLive(page);
  await ingress(node, 'kriptomat', exchange(1000));
  await page.locator(`tr.event[data-id="${exchangeID(1000)}"]`).waitFor();

  proxy.cut();
  await waitFor(async () => (await status(page)) === 'reconnecting', 5000, 'reconnecting');
  for (const id of [1001, 1002, 1003]) await ingress(node, 'kriptomat', exchange(id));
  await sleep(300);
  const t0 = performance.now();
  proxy.restore();
  await waitFor(async () => (await status(page)) === 'resumed', 10000, 'resumed');
  t.diagnostic(`network back to resumed: ${(performance.now() - t0).toFixed(0)} ms`);
  await ingress(node, 'kriptomat', exchange(1004));
  await page.locator(`tr.event[data-id="${exchangeID(1004)}"]`).waitFor({ timeout: 10000 });
  await sleep(200); // room for a duplicate to show up, if there were one

  for (const id of [1000, 1001, 1002, 1003, 1004]) assert.equal(await rowsWithID(page, exchangeID(id)), 1, `rows of ${id}`);
  const offsets = await page.locator('tr.event[data-channel="merchant:demo"]').evaluateAll((rs) => rs.map((r) => Number(r.dataset.offset)));
  assert.deepEqual(offsets, [5, 4, 3, 2, 1], 'newest first, each offset once');
  assert.equal(await page.isHidden('#gap-notice'), true);
  assert.equal(await page.textContent('#count-gaps'), '0');
  assert.equal(await page.textContent('#count-reconnects'), '1');
});

test('a restarted embedded broker loses history: the page says so with a gap notice', async (t) => {
  let node = await startNode({ name: 'a' });
  const port = node.port;
  t.after(() => node.stop());
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(`${node.url}/#token=${mintToken()}`);
  await waitLive(page);
  await ingress(node, 'kriptomat', exchange(2000));
  await page.locator(`tr.event[data-id="${exchangeID(2000)}"]`).waitFor();
  assert.equal(await page.isHidden('#gap-notice'), true);
  // A full table (500 events, each a row and its hidden raw row), so that
  // what follows the gaps pushes the oldest out.
  for (let n = 0; n < 500; n++) await publish(node, 'merchant:demo', { n });
  await waitFor(async () => (await page.textContent('#count-events')) === '501', 20000, '501 events');

  await node.stop('SIGTERM');
  await waitFor(async () => /disconnected: 4010 node shutting down/.test(await logText(page)), 5000, 'close 4010 in the log');
  node = await startNode({ name: 'a', port });
  await page.locator('#gap-notice').waitFor({ state: 'visible', timeout: 10000 });
  assert.match(await page.textContent('#gap-text'), /publications were lost \(epoch_mismatch\)/);
  assert.equal(await status(page), 'gap');
  assert.ok(Number(await page.textContent('#count-gaps')) >= 1);
  assert.ok((await page.locator('tr.gap-row').count()) >= 1);

  await ingress(node, 'kriptomat', exchange(2001));
  await page.locator(`tr.event[data-id="${exchangeID(2001)}"]`).waitFor({ timeout: 10000 });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-gap.png') });
  // The table was full before the gaps: the rows after them pushed the
  // oldest events out, each with its raw row, never the one without the other.
  const broken = await page.evaluate(() => [...document.querySelectorAll('#event-rows > tr')].flatMap((tr, i, all) => {
    if (tr.classList.contains('event') && !all[i + 1]?.classList.contains('raw')) return [`event row ${i} without its raw row`];
    if (tr.classList.contains('raw') && !all[i - 1]?.classList.contains('event')) return [`raw row ${i} without its event`];
    return [];
  }));
  assert.deepEqual(broken, []);
  assert.ok((await page.locator('tr.event').count()) <= 500);
});

test('Redis engine: SIGTERM (4010), events posted to another node meanwhile, restart: shown exactly once', async (t) => {
  const pair = await startRedisPair(t);
  const { a, b } = pair;

  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  await page.goto(`${a.url}/#token=${mintToken()}`);
  await waitLive(page);
  await ingress(a, 'kriptomat', exchange(3000));
  await page.locator(`tr.event[data-id="${exchangeID(3000)}"]`).waitFor();

  await a.stop('SIGTERM');
  await waitFor(async () => /disconnected: 4010 node shutting down/.test(await logText(page)), 5000, 'close 4010 in the log');
  for (const id of [3001, 3002, 3003]) await ingress(b, 'kriptomat', exchange(id));
  await pair.restartA();
  const t0 = performance.now();
  await waitFor(async () => (await status(page)) === 'resumed', 15000, 'resumed');
  t.diagnostic(`node a listening again to resumed: ${(performance.now() - t0).toFixed(0)} ms (reconnect backoff)`);
  await ingress(b, 'kriptomat', exchange(3004)); // live, through Redis to node a
  await page.locator(`tr.event[data-id="${exchangeID(3004)}"]`).waitFor({ timeout: 10000 });
  await sleep(200);

  for (const id of [3000, 3001, 3002, 3003, 3004]) assert.equal(await rowsWithID(page, exchangeID(id)), 1, `rows of ${id}`);
  assert.equal(await page.isHidden('#gap-notice'), true);
  assert.equal(await page.textContent('#count-gaps'), '0');
  assert.match(await logText(page), /subscribed merchant:demo at offset \d+, resumed with nothing missed/);
  assert.equal(await page.textContent('#count-reconnects'), '1');
});

test('herald.js with localStorage: after a reload the page resumes where the last one stopped', async (t) => {
  const node = await startNode();
  t.after(() => node.stop());
  const { page, context } = await openPage(browser);
  t.after(() => context.close());
  const token = mintToken({ sub: '42', merchant: '' });
  // The page's own client, as an application would write it; the dashboard
  // page is only the origin here (without a token it stays idle).
  const watch = () => page.evaluate(async (token) => {
    const { connect } = await import('/herald.js');
    const w = /** @type {any} */ (window);
    w.got = [];
    const client = connect({ token, storage: localStorage });
    return new Promise((resolve) => {
      client.on('subscribed', resolve);
      client.subscribe('user:42', (data) => w.got.push(data.n));
    });
  }, token);
  const got = () => page.evaluate(() => /** @type {any} */ (window).got);

  await page.goto(`${node.url}/`);
  assert.equal((await watch()).resumed, false);
  for (let n = 1; n <= 3; n++) await publish(node, 'user:42', { n });
  await page.waitForFunction(() => /** @type {any} */ (window).got.length === 3);

  await page.reload();
  for (let n = 4; n <= 6; n++) await publish(node, 'user:42', { n }); // while no page listens
  const again = await watch();
  assert.deepEqual([again.resumed, again.recovered], [true, true]);
  await page.waitForFunction(() => /** @type {any} */ (window).got.length >= 3);
  await sleep(200);
  assert.deepEqual(await got(), [4, 5, 6]);
});
