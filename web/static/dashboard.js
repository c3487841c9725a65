// The live dashboard: takes a token (the form, or #token= in the URL as
// `herald --dev` prints it), lists the channels it grants, and shows their
// events newest first through herald.js. Everything from the network is
// written with textContent, never parsed as HTML: payloads come from
// payment providers.
import { connect, decodeToken, grantedChannels } from './herald.js';

const MAX_ROWS = 500; // older rows are dropped to keep a long-open page light
const BACKFILL = 50; // recent events shown when a channel is opened
const TOKEN_KEY = 'herald.dashboard.token'; // sessionStorage: survives a reload of this tab only

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('token-form'));
const input = /** @type {HTMLInputElement} */ ($('token'));
const rows = $('event-rows');

/** @type {import('./herald').HeraldClient | null} */
let client = null;
/** @type {Map<string, import('./herald').Subscription>} */
const subscriptions = new Map();
const counts = { events: 0, reconnects: 0, gaps: 0 };
let reconnected = false; // the current connection is a reconnect
/** @type {{sub: string, merchant: string} | null} whose events the table shows */
let identity = null;
/** @type {Map<string, import('./herald').Position>} where a new token for the same identity resumes each channel */
let resumeFrom = new Map();
/** @type {string[]} the channels the current token grants */
let granted = [];
let gapSinceConnect = false;

/**
 * Adds a line to the connection log (newest first, the last 50 kept).
 * @param {string} text
 */
function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString([], { hour12: false })} ${text}`;
  const list = $('log-lines');
  list.prepend(li);
  while (list.children.length > 50) list.lastElementChild?.remove();
}

/**
 * Shows a message under the token field.
 * @param {string} text
 * @param {'error' | 'info'} [kind]
 */
function message(text, kind = 'error') {
  const m = $('message');
  m.textContent = text;
  m.dataset.kind = kind;
  m.hidden = !text;
}

/**
 * @param {string} state idle, connecting, connected, reconnecting, resuming, resumed, gap, closed
 * @param {string} text
 */
function status(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
}

function showCounts() {
  $('count-events').textContent = String(counts.events);
  $('count-reconnects').textContent = String(counts.reconnects);
  $('count-gaps').textContent = String(counts.gaps);
}

/**
 * Formats an instant as local time of day, with the full instant as a tooltip.
 * @param {string | undefined} iso
 */
function timeCell(iso) {
  const td = cell('', 'time');
  const d = iso ? new Date(iso) : new Date();
  td.textContent = isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
  td.title = isNaN(d.getTime()) ? '' : d.toISOString();
  return td;
}

/**
 * @param {string} text
 * @param {string} [label] column name, shown beside the value on narrow screens
 */
function cell(text, label = '') {
  const td = document.createElement('td');
  td.textContent = text;
  if (label) td.dataset.label = label;
  return td;
}

/**
 * Amounts as the provider sent them: "amount 0.0623414132 BTC · fee 2.00 EUR".
 * @param {Record<string, {value?: string, currency?: string}> | undefined} amounts
 */
function amountsText(amounts) {
  if (!amounts || typeof amounts !== 'object') return '';
  return Object.entries(amounts)
    .map(([name, a]) => `${name} ${a && a.value != null ? a.value : '?'}${a && a.currency ? ' ' + a.currency : ''}`)
    .join(' · ');
}

/**
 * @param {string} channel
 * @param {any} ev
 */
function isAlert(channel, ev) {
  return channel.startsWith('alerts:') || (ev && typeof ev.type === 'string' && ev.type.startsWith('master_balance.'));
}

/**
 * Adds one publication at the top of the table.
 * @param {any} data
 * @param {import('./herald').PublicationMeta} meta
 */
function addEvent(data, meta) {
  const ev = data && typeof data === 'object' ? data : { value: data };
  const tr = document.createElement('tr');
  tr.className = 'event';
  tr.dataset.channel = meta.channel;
  tr.dataset.offset = String(meta.offset);
  if (typeof ev.id === 'string') tr.dataset.id = ev.id;
  if (isAlert(meta.channel, ev)) tr.classList.add('alert');
  if (meta.history) tr.classList.add('history');

  tr.append(timeCell(ev.received_at || ev.occurred_at), cell(meta.channel, 'channel'), cell(str(ev.provider), 'provider'));
  const type = cell(str(ev.type), 'type');
  if (tr.classList.contains('alert')) type.prepend(badge('alert', 'alert-badge'));
  tr.append(type);

  const st = cell('', 'status');
  if (ev.status) st.append(badge(str(ev.status), 'chip status-' + str(ev.status).replace(/[^a-z_]/g, '')));
  if (ev.stale === true) {
    tr.classList.add('stale');
    const b = badge('stale', 'stale-badge');
    b.title = 'arrived after a later status' + (ev.current_status ? ` (now ${ev.current_status})` : '');
    st.append(b);
    if (ev.current_status) st.append(document.createTextNode(` now ${ev.current_status}`));
  }
  tr.append(st, cell(str(ev.user), 'user'), cell(amountsText(ev.amounts), 'amounts'));

  const rawTd = cell('');
  const btn = document.createElement('button');
  btn.type = 'button';
  btn.className = 'raw-toggle';
  btn.textContent = 'raw';
  btn.setAttribute('aria-expanded', 'false');
  rawTd.append(btn);
  tr.append(rawTd);

  const detail = document.createElement('tr');
  detail.className = 'raw';
  detail.hidden = true;
  const dtd = document.createElement('td');
  dtd.colSpan = 8;
  const note = document.createElement('p');
  note.className = 'raw-note';
  note.hidden = true;
  note.textContent = 'Numbers as this browser reads them: it cannot keep their digits (no JSON.rawJSON), so 2.00 shows as 2 and long decimals may be rounded. The amounts column is exact.';
  const pre = document.createElement('pre');
  dtd.append(note, pre);
  detail.append(dtd);
  btn.addEventListener('click', () => {
    if (!pre.textContent) {
      // The provider's own digits (2.00, not 2) where the browser can keep them.
      const exact = meta.exact ? meta.exact() : null;
      note.hidden = exact !== null;
      const shown = exact ?? ev;
      // Data published through the API need not be an event, nor an object.
      const isEvent = shown !== null && typeof shown === 'object' && 'raw' in shown;
      pre.textContent = JSON.stringify(isEvent ? shown.raw : shown, null, 2);
    }
    detail.hidden = !detail.hidden;
    btn.setAttribute('aria-expanded', String(!detail.hidden));
  });

  rows.prepend(tr, detail);
  trim();
  counts.events++;
  showCounts();
  $('empty').hidden = true;
}

/**
 * Drops the oldest rows beyond room for MAX_ROWS events (2 × MAX_ROWS rows).
 * An event is two rows, itself and its hidden raw row, and a gap one (so
 * gaps take the room of half an event each): an event's pair goes as a
 * whole, or the raw row of the oldest one left would be missing.
 */
function trim() {
  while (rows.children.length > MAX_ROWS * 2) {
    const last = rows.lastElementChild;
    if (last?.classList.contains('raw')) last.previousElementSibling?.remove();
    last?.remove();
  }
}

/**
 * Marks a gap in the table and in the notice above it.
 * @param {import('./herald').ClientEvents['gap']} g
 */
function addGap(g) {
  counts.gaps++;
  gapSinceConnect = true;
  showCounts();
  const text = `${g.channel}: publications were lost (${g.reason}); events before this point may be missing. ` +
    'Resync from the system of record.';
  $('gap-text').textContent = text;
  $('gap-notice').hidden = false;
  const tr = document.createElement('tr');
  tr.className = 'gap-row';
  tr.dataset.channel = g.channel;
  const td = cell(`gap on ${g.channel} (${g.reason}) — continuing after offset ${g.offset}`);
  td.colSpan = 8;
  tr.append(td);
  rows.prepend(tr);
  trim();
  status('gap', 'gap');
  log(`gap on ${g.channel}: ${g.reason}; continuing after offset ${g.offset}`);
}

/**
 * @param {string} text
 * @param {string} className
 */
function badge(text, className) {
  const s = document.createElement('span');
  s.className = className;
  s.textContent = text;
  return s;
}

/** @param {unknown} v */
function str(v) {
  return v == null ? '' : String(v);
}

/**
 * Lists the channels a token grants, each a checkbox that subscribes.
 * @param {string[]} channels
 */
function showChannels(channels) {
  const list = $('channel-list');
  list.replaceChildren();
  for (const ch of channels) {
    const label = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.value = ch;
    box.checked = true;
    box.addEventListener('change', () => (box.checked ? open(ch) : leave(ch)));
    label.append(box, document.createTextNode(' ' + ch));
    list.append(label);
  }
  $('channels').hidden = channels.length === 0;
}

/**
 * Shows whether a channel's subscription is in effect on the current connection.
 * @param {string} channel
 * @param {boolean} live
 */
function markLive(channel, live) {
  for (const box of $('channel-list').querySelectorAll('input')) {
    if (box.value === channel) box.parentElement?.toggleAttribute('data-live', live);
  }
}

/** @param {string} channel */
function open(channel) {
  if (!client || subscriptions.has(channel)) return;
  // Once: a channel switched off and on again continues from the client's
  // own position.
  const since = resumeFrom.get(channel);
  resumeFrom.delete(channel);
  subscriptions.set(channel, client.subscribe(channel, addEvent, since ? { since } : { backfill: BACKFILL }));
}

/** @param {string} channel */
function leave(channel) {
  markLive(channel, false);
  subscriptions.get(channel)?.unsubscribe();
  subscriptions.delete(channel);
}

function stop() {
  client?.close();
  client = null;
  subscriptions.clear();
  $('disconnect').hidden = true;
  $('channels').hidden = true;
  $('identity').hidden = true;
}

/**
 * Starts watching with a token: decodes what it grants, connects, subscribes.
 * @param {string} token
 */
function start(token) {
  const claims = decodeToken(token);
  // A new token for the same identity (the last one expired, say)
  // resumes each channel where the table stands, with nothing missed:
  // every channel whose rows the table shows, also one switched off (or
  // revoked) since, which the new token opens again.
  const same = !!client && !!claims && !!identity && claims.sub === identity.sub && (claims.merchant || '') === identity.merchant;
  const previous = resumeFrom;
  resumeFrom = new Map();
  if (same && client) {
    for (const ch of new Set([...granted, ...previous.keys()])) {
      const pos = client.position(ch) || previous.get(ch);
      if (pos) resumeFrom.set(ch, pos);
    }
  }
  stop();
  message('');
  if (!same) {
    // Another identity: start from an empty table.
    rows.replaceChildren();
    counts.events = counts.reconnects = counts.gaps = 0;
    showCounts();
    $('empty').hidden = false;
    $('gap-notice').hidden = true;
  }
  identity = null;
  if (!claims || typeof claims.sub !== 'string') {
    message('That is not a herald token: expected a JWT with a "sub" claim.');
    status('idle', 'not connected');
    return;
  }
  identity = { sub: claims.sub, merchant: typeof claims.merchant === 'string' ? claims.merchant : '' };
  const channels = grantedChannels(claims);
  granted = channels;
  const exp = typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : null;
  const id = $('identity');
  id.textContent = `sub ${claims.sub}` + (claims.merchant ? ` · merchant ${claims.merchant}` : '') +
    (exp ? ` · expires ${exp.toLocaleString()}` : '');
  id.hidden = false;
  if (exp && exp.getTime() < Date.now()) message(`This token expired at ${exp.toLocaleString()}; herald will refuse it.`, 'info');
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Private mode: the token just does not survive a reload.
  }

  const c = connect({ token });
  client = c;
  status('connecting', 'connecting…');
  c.on('state', ({ state }) => {
    if (state !== 'connected') for (const ch of subscriptions.keys()) markLive(ch, false);
    if (state === 'reconnecting') status('reconnecting', 'reconnecting…');
    if (state === 'closed') status('closed', 'disconnected');
  });
  c.on('connected', (e) => {
    reconnected = e.reconnected;
    gapSinceConnect = false;
    counts.reconnects = c.stats().reconnects;
    showCounts();
    status(e.reconnected ? 'resuming' : 'connected', e.reconnected ? 'resuming…' : 'connected');
    $('status').title = `node ${e.node}`;
    log(`${e.reconnected ? 'reconnected' : 'connected'} to node ${e.node}`);
  });
  c.on('subscribed', (e) => {
    markLive(e.channel, true);
    log(`subscribed ${e.channel} at offset ${e.offset}` + (e.resumed ? (e.recovered ? ', resumed with nothing missed' : `, not recovered (${e.reason})`) : ''));
    if (!reconnected || gapSinceConnect) return;
    if (e.recovered) status('resumed', 'resumed');
  });
  c.on('gap', addGap);
  c.on('unsubscribed', (e) => {
    if (!e.revoked) return;
    // A refreshed token no longer grants it.
    subscriptions.delete(e.channel);
    for (const box of $('channel-list').querySelectorAll('input')) if (box.value === e.channel) box.checked = false;
    markLive(e.channel, false);
    log(`${e.channel} is no longer granted`);
  });
  c.on('disconnected', (e) => {
    log(`disconnected: ${e.code}${e.reason ? ' ' + e.reason : ''}` + (e.reconnectIn != null ? `; retrying in ${e.reconnectIn} ms` : ''));
    if (e.reconnectIn != null) status('reconnecting', `reconnecting in ${(e.reconnectIn / 1000).toFixed(1)} s (${e.code})`);
  });
  c.on('error', (e) => {
    log(`error ${e.code}: ${e.message}`);
    if (e.code === 'unauthorized' || e.code === 'token_expired') {
      message('herald refused the token: ' + e.message.replace(/^the token was refused: /, ''));
      try {
        sessionStorage.removeItem(TOKEN_KEY);
      } catch {
        // Nothing stored.
      }
    } else if (e.fatal || e.channel) {
      message(e.message);
    }
  });
  $('disconnect').hidden = false;
  showChannels(channels);
  for (const ch of channels) open(ch);
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  start(input.value.trim());
});

$('disconnect').addEventListener('click', () => {
  stop();
  status('idle', 'not connected');
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
});

$('gap-dismiss').addEventListener('click', () => {
  $('gap-notice').hidden = true;
});

// #token=… in the URL (the link herald --dev prints): take it, then remove
// it from the address bar so it is not left in history or shared links.
function tokenFromURL() {
  const params = new URLSearchParams(location.hash.slice(1));
  const t = params.get('token');
  if (t) history.replaceState(null, '', location.pathname + location.search);
  return t;
}

let initial = tokenFromURL();
if (!initial) {
  try {
    initial = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    initial = null;
  }
}
if (initial) {
  input.value = initial;
  start(initial);
}
