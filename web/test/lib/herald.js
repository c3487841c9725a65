// Test harness: runs real herald processes (the binary the Go test built,
// in HERALD_BIN) and redis-server on 127.0.0.1, mints tokens, posts
// webhooks. Every process started here is killed when the test ends.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = process.env.HERALD_ROOT || path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = process.env.HERALD_BIN || path.join(ROOT, 'herald');
export const ARTIFACTS = process.env.HERALD_ARTIFACTS || path.join(ROOT, 'test-artifacts');

export const JWT_SECRET = 'web-test-jwt-secret-0123456789abcdef';
export const API_KEY = 'web-test-api-key';
export const KRIPTOMAT_SECRET = 'web-test-kriptomat-secret';
export const MERCHANT = 'demo';

/** Processes to kill when the test process ends, whatever happens. */
const running = new Set();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** A free TCP port on 127.0.0.1 (free a moment ago). */
export async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {net.AddressInfo} */ (srv.address());
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** An HS256 token signed with JWT_SECRET. */
export function mintToken({ sub = 'demo', merchant = MERCHANT, channels, ttl = 3600, secret = JWT_SECRET } = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + ttl };
  if (merchant) claims.merchant = merchant;
  if (channels) claims.channels = channels;
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** A fixture body from testdata/<provider>/<name>.json. */
export function fixture(provider, name) {
  return readFileSync(path.join(ROOT, 'testdata', provider, name + '.json'), 'utf8');
}

/**
 * A herald node process.
 * @typedef {object} HeraldNode
 * @property {string} url http://127.0.0.1:port
 * @property {number} port
 * @property {import('node:child_process').ChildProcess} proc
 * @property {() => string} logs what it printed so far
 * @property {Promise<number | null>} exited resolves with the exit code
 * @property {(signal?: NodeJS.Signals) => Promise<number | null>} stop signals it (SIGTERM) and waits for the exit
 */

/**
 * Starts herald and waits until it listens.
 * @param {{port?: number, name?: string, env?: Record<string, string>, args?: string[], dev?: boolean}} [o]
 * @returns {Promise<HeraldNode>}
 */
export async function startNode(o = {}) {
  const env = {
    PATH: process.env.PATH || '/usr/bin:/bin',
    HOME: process.env.HOME || '/tmp',
    HERALD_NODE_ID: o.name || 'web-test',
    HERALD_LOG_FORMAT: 'json',
    HERALD_DRAIN_WINDOW: '1s',
    HERALD_SHUTDOWN_TIMEOUT: '15s',
    ...(o.dev ? {} : {
      HERALD_JWT_SECRET: JWT_SECRET,
      HERALD_API_KEY: API_KEY,
      HERALD_INGRESS_KRIPTOMAT_SECRET: KRIPTOMAT_SECRET,
      HERALD_INGRESS_KRIPTOMAT_MERCHANT: MERCHANT,
    }),
    ...o.env,
  };
  const args = [...(o.dev ? ['--dev'] : []), '--addr', `127.0.0.1:${o.port ?? 0}`, ...(o.args || [])];
  const proc = spawn(BIN, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  let out = '';
  let resolveAddr;
  const listening = new Promise((resolve) => (resolveAddr = resolve));
  const onData = (chunk) => {
    out += chunk;
    const m = /"msg":"herald listening","addr":"([^"]+)"|msg="herald listening" addr=(\S+)/.exec(out);
    if (m) resolveAddr(m[1] || m[2]);
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const exited = new Promise((resolve) => proc.on('exit', (code) => {
    running.delete(proc);
    resolve(code);
  }));
  let timer;
  const addr = await Promise.race([
    listening,
    exited.then((code) => {
      throw new Error(`herald exited (${code}) before listening:\n${out}`);
    }),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`herald did not listen within 15 s:\n${out}`)), 15000);
    }),
  ]).finally(() => clearTimeout(timer));
  const port = Number(String(addr).split(':').pop());
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    logs: () => out,
    exited,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 15000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** POSTs a webhook to node's ingress with the provider secret. */
export async function ingress(node, provider, body, secret = KRIPTOMAT_SECRET) {
  const res = await fetch(`${node.url}/ingress/${provider}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const json = await res.json().catch(() => null);
  if (res.status !== 200) throw new Error(`ingress ${provider}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** Publishes data to channel through the server API; returns {channel, offset, epoch}. */
export async function publish(node, channel, data) {
  const res = await fetch(`${node.url}/v1/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(10000),
  });
  const json = await res.json().catch(() => null);
  if (res.status !== 200) throw new Error(`publish ${channel}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * A redis-server on a free port, without persistence, or null with the
 * reason when herald's Redis engine is not in this build.
 */
export async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  const exited = new Promise((resolve) => proc.on('exit', (code) => {
    running.delete(proc);
    resolve(code);
  }));
  let out = '';
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('redis-server did not start:\n' + out)), 10000);
    proc.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
    proc.stdout.on('data', (c) => {
      out += c;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(t);
        resolve(undefined);
      }
    });
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Starts redis-server and two herald nodes on it (HERALD_REDIS_URL), a and
 * b, all stopped when the test ends.
 * @param {import('node:test').TestContext} t
 */
export async function startRedisPair(t) {
  const redis = await startRedis();
  const env = { HERALD_REDIS_URL: redis.url };
  const a = await startNode({ name: 'a', env });
  const b = await startNode({ name: 'b', env });
  const pair = {
    env,
    a,
    b,
    /** Starts node a again on its port, after it was stopped. */
    async restartA() {
      pair.a = await startNode({ name: 'a', port: a.port, env });
      return pair.a;
    },
  };
  // Nodes first: a node whose Redis vanished spends its drain retrying.
  t.after(async () => {
    await Promise.all([pair.a.stop(), b.stop()]);
    await redis.stop();
  });
  return pair;
}

/**
 * A TCP proxy on 127.0.0.1 in front of target: cut() drops every
 * connection and refuses new ones, as a lost mobile network does, until
 * restore().
 */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      down = false;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls cond every 20 ms until it returns a truthy value or timeout ms pass. */
export async function waitFor(cond, timeout = 5000, what = 'condition') {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(20);
  }
}
