// A signed-in buyer opening /orders in Chromium on a throttled mobile
// network, cold (empty cache) and warm (the same browser again): bytes over
// the wire (every response's encoded length, headers included, as
// Chromium's DevTools protocol counts them) and time until the page has
// hydrated, on the page's own clock: from the start of the navigation to
// the app's `threadline:hydrated` performance mark (`ms`). Playwright
// notices the hydrated page some 100-200 ms later, polling from outside;
// that time, from the call to navigate, is `seen_ms`. Run by scripts/bench-web:
//   node end2end/bench/load.mjs <base-url> <session-token> <out.json>
import { writeFileSync } from 'node:fs';
import { chromium } from '@playwright/test';

const [baseURL, token, out] = process.argv.slice(2);
if (!out) throw new Error('usage: load.mjs <base-url> <session-token> <out.json>');

// Chromium DevTools' presets (bytes per second; latency in ms).
const PROFILES = {
  'Fast 3G': { latency: 562.5, downloadThroughput: (1.6e6 / 8) * 0.9, uploadThroughput: (750e3 / 8) * 0.9 },
  'Slow 4G': { latency: 150, downloadThroughput: (4e6 / 8) * 0.9, uploadThroughput: (3e6 / 8) * 0.9 },
};
const RUNS = 5;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'],
});

async function visit(page, cdp) {
  let bytes = 0;
  const requests = [];
  const finished = (e) => {
    bytes += e.encodedDataLength;
  };
  const sent = (e) => requests.push(new URL(e.request.url).pathname);
  cdp.on('Network.loadingFinished', finished);
  cdp.on('Network.requestWillBeSent', sent);
  const start = Date.now();
  await page.goto(`${baseURL}/orders`, { waitUntil: 'commit' });
  await page.waitForSelector('body[data-hydrated="true"]', { timeout: 120_000 });
  const seen = Date.now() - start;
  const ms = await page.evaluate(() => performance.getEntriesByName('threadline:hydrated')[0]?.startTime);
  if (typeof ms !== 'number') throw new Error('the page hydrated without its threadline:hydrated mark');
  cdp.off('Network.loadingFinished', finished);
  cdp.off('Network.requestWillBeSent', sent);
  return { ms: Math.round(ms), seen_ms: seen, bytes, requests };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const summary = (visits) => ({
  ms: median(visits.map((v) => v.ms)),
  seen_ms: median(visits.map((v) => v.seen_ms)),
  bytes: median(visits.map((v) => v.bytes)),
  requests: visits[0].requests,
});
const results = {};
for (const [name, conditions] of Object.entries(PROFILES)) {
  const cold = [];
  const warm = [];
  for (let run = 0; run < RUNS; run++) {
    const context = await browser.newContext();
    const { hostname } = new URL(baseURL);
    await context.addCookies([{ name: 'threadline_session', value: token, domain: hostname, path: '/' }]);
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, ...conditions });
    cold.push(await visit(page, cdp));
    // a warm visit is a later one: let the cold visit's prefetch of the other
    // pages' code (which starts once the page is interactive) finish first
    await page.waitForFunction(() => {
      const lazy = document.querySelector('meta[name="threadline-lazy"]')?.getAttribute('content') ?? '';
      const done = new Set(performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname));
      return lazy.split(' ').filter(Boolean).every((url) => done.has(url));
    }, null, { timeout: 120_000 });
    warm.push(await visit(page, cdp));
    await context.close();
  }
  results[name] = {
    conditions,
    cold: summary(cold),
    warm: summary(warm),
  };
  console.log(name, JSON.stringify({ cold: results[name].cold, warm: results[name].warm }));
}
await browser.close();
writeFileSync(out, JSON.stringify(results, null, 2));
