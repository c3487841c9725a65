// Headless Chromium for the dashboard tests: the system's /usr/bin/chromium
// driven by playwright-core, never a downloaded browser. The flags keep it
// from reaching out to the network (there is none here to reach).
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches Chromium with a fresh profile (Playwright makes a temporary one). */
export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
}

/**
 * Opens a page that records its console, so a test can check that no
 * token is ever logged.
 * @param {import('playwright-core').Browser} browser
 * @param {{width: number, height: number}} [viewport]
 */
export async function openPage(browser, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  /** @type {string[]} */
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  page.on('pageerror', (e) => consoleLines.push('pageerror: ' + e.message));
  return { page, context, consoleLines };
}
