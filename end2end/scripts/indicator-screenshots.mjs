// Renders the connection status indicator in each of its states, for the
// README: node end2end/scripts/indicator-screenshots.mjs [http://127.0.0.1:3000]
// (with the app running, e.g. from ./scripts/run). Writes docs/connection-status-*.png.
import { chromium } from '@playwright/test';
import path from 'node:path';

const base = process.argv[2] ?? 'http://127.0.0.1:3000';
const out = path.resolve(new URL('.', import.meta.url).pathname, '../../docs');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function signedIn(prepare) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 200 }, deviceScaleFactor: 2 });
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.locator('body[data-hydrated="true"]').waitFor();
  await page.fill('input[name=email]', 'buyer@sleek.test');
  await page.fill('input[name=password]', 'threadline');
  await page.click('button[type=submit]');
  await page.waitForURL(/\/orders$/);
  if (prepare) await prepare(page, context);
  await page.goto(`${base}/orders`);
  await page.locator('body[data-hydrated="true"]').waitFor();
  return { page, context };
}

async function shoot(state, prepare, after) {
  const { page, context } = await signedIn(prepare);
  if (after) await after(page, context);
  const indicator = page.locator(`.connection-status[data-state="${state}"]`);
  await indicator.waitFor({ timeout: 30_000 });
  await page.locator('.topbar-right').screenshot({ path: path.join(out, `connection-status-${state}.png`) });
  console.log(`${state}: ${(await indicator.textContent()).trim()}`);
  await context.close();
}

const blockSocket = (page) => page.routeWebSocket(/realtime/, (ws) => ws.close({ code: 1011, reason: 'blocked' }));
await shoot('live');
await shoot('connecting', (page) => page.routeWebSocket(/realtime/, () => {}));
await shoot('reconnecting', async (page) => {
  await blockSocket(page);
  await page.route('**/api/poll_changes*', (route) => route.abort());
});
await shoot('polling', blockSocket);
await shoot('offline', null, (page, context) => context.setOffline(true));
await browser.close();
