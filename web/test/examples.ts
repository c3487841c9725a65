// The examples of docs/CLIENT.md, type-checked against herald.d.ts by tsc
// (go test ./web runs it). Never executed: it only has to compile.
import { connect, decodeToken, grantedChannels, type HeraldClient, type PositionStorage } from '../static/herald.js';

declare const AsyncStorage: PositionStorage & { removeItem(key: string): Promise<void> };
declare const AppState: { addEventListener(type: 'change', fn: (state: string) => void): void };
declare function reloadFromBackend(channel: string, reason: string): void;
declare function showLogin(message: string): void;
declare function notify(type: string, status: string): void;
declare function refetchAccount(userId: string): void;

export function browserPage(): HeraldClient {
  const client = connect({
    url: 'wss://herald.example.com/ws',
    getToken: () => fetch('/api/herald-token').then((r) => {
      if (!r.ok) throw new Error('herald token: HTTP ' + r.status);
      return r.text();
    }),
    storage: localStorage,
  });
  client.subscribe('merchant:acme', (event, { offset }) => {
    console.log(offset, event.type, event.status, event.amounts?.amount?.value);
  });
  client.on('gap', ({ channel, reason }) => reloadFromBackend(channel, reason));
  client.on('state', ({ state }) => (document.body.dataset.herald = state));
  client.on('error', (e) => e.fatal && showLogin(e.message));
  return client;
}

export function startHerald(userId: string, api: { heraldToken(): Promise<string> }): () => HeraldClient {
  const open = () => {
    const c = connect({
      url: 'wss://herald.example.com/ws',
      getToken: () => api.heraldToken(),
      storage: AsyncStorage,
      storagePrefix: `herald:${userId}:`,
    });
    c.subscribe(`user:${userId}`, (event) => {
      notify(event.type, event.status);
    });
    c.on('gap', () => refetchAccount(userId));
    return c;
  };
  let client = open();
  AppState.addEventListener('change', (s) => {
    if (s === 'background') client.close();
    else if (s === 'active' && client.state() === 'closed') client = open();
  });
  return () => client;
}

export function grants(token: string): string[] {
  return grantedChannels(decodeToken(token));
}

export async function types(client: HeraldClient): Promise<number> {
  const pos = client.position('user:1');
  const h = await client.history('user:1', { limit: 10, ...(pos ? { since: pos } : {}) });
  client.on('disconnected', (d) => {
    const next: number | null = d.reconnectIn;
    return next;
  });
  // @ts-expect-error: events are typed by name
  client.on('connected', (e) => e.reconnectIn);
  return h.publications.length + client.stats().duplicatesDropped;
}
