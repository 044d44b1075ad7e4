import { expect } from '@playwright/test';
import { hydrated, pageErrors, test, unexpectedErrors, userPage } from './helpers';

const IMMUTABLE = 'public, max-age=31536000, immutable';

test('the bundle is served precompressed under hashed names, cached for good; pages are compressed and revalidated', async ({
  browser,
  baseURL,
  request,
}) => {
  const page = await userPage(browser, 'buyer@sleek.test');
  const bundle: string[] = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname.startsWith('/pkg/')) bundle.push(new URL(r.url()).pathname);
  });
  await page.goto(`${baseURL}/orders`);
  await hydrated(page);

  // the page names its JS, Wasm and CSS by content hash
  const html = await page.content();
  const names = ['js', 'wasm', 'css'].map((ext) => {
    const m = html.match(new RegExp(`/pkg/threadline\\.[0-9a-f]{16}\\.${ext}`));
    expect(m, `a hashed .${ext} in the page`).not.toBeNull();
    return m![0];
  });
  for (const name of names) expect(bundle).toContain(name);

  for (const name of names) {
    for (const [encoding, wanted] of [
      ['br, gzip', 'br'],
      ['gzip', 'gzip'],
      ['identity', undefined],
    ] as const) {
      const response = await request.get(name, { headers: { 'Accept-Encoding': encoding } });
      expect(response.status(), name).toBe(200);
      const headers = response.headers();
      expect(headers['content-encoding'], `${name} for ${encoding}`).toBe(wanted);
      expect(headers['cache-control'], name).toBe(IMMUTABLE);
      expect(headers['vary'] ?? '', name).toMatch(/accept-encoding/i);
    }
  }
  const wasm = await request.get(names[1], { headers: { 'Accept-Encoding': 'br' } });
  expect(wasm.headers()['content-type']).toBe('application/wasm');

  // a page: compressed on the fly, and never used without asking
  const orders = await page.request.get(`${baseURL}/orders`, { headers: { 'Accept-Encoding': 'gzip' } });
  expect(orders.status()).toBe(200);
  expect(orders.headers()['content-encoding']).toBe('gzip');
  expect(orders.headers()['cache-control']).toBe('no-cache');
  expect(await orders.text()).toContain('data-order-id');
  // its headers name the bundle, so the Wasm download starts before the HTML is read
  const link = orders.headers()['link'] ?? '';
  expect(link).toContain(`<${names[1]}>; rel=preload; as=fetch; type="application/wasm"; crossorigin`);
  expect(link).toContain(`<${names[0]}>; rel=modulepreload`);
  expect(link).toContain(`<${names[2]}>; rel=preload; as=style`);
  // and the browser uses that download: the Wasm came over the network once
  expect(bundle.filter((p) => p === names[1]).length, bundle.join(' ')).toBe(1);

  // a file that is not there is a 404, not a page
  expect((await request.get('/pkg/threadline.0000000000000000.wasm')).status()).toBe(404);

  // the main Wasm imports the loader of the lazy routes' code, also hashed
  expect(bundle.some((p) => /^\/pkg\/__wasm_split\.[0-9a-f]{16}\.js$/.test(p)), bundle.join(' ')).toBe(true);

  // the messages page's code is not in the main Wasm: opening it fetches
  // its chunks, hashed and served like the rest
  bundle.length = 0;
  await page.goto(`${baseURL}/messages`);
  await hydrated(page);
  const lazy = bundle.filter((p) => p.endsWith('.wasm') && !names.includes(p));
  expect(lazy.length, bundle.join(' ')).toBeGreaterThan(0);
  for (const name of lazy) {
    expect(name).toMatch(/^\/pkg\/(chunk|split)_\w+\.[0-9a-f]{16}\.wasm$/);
    const response = await request.get(name, { headers: { 'Accept-Encoding': 'br' } });
    expect(response.headers()['content-encoding'], name).toBe('br');
    expect(response.headers()['cache-control'], name).toBe(IMMUTABLE);
  }

  // a second visit takes the bundle from the cache: only the page and its data come over the network
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const urls = new Map<string, string>();
  let bundleBytes = 0;
  cdp.on('Network.requestWillBeSent', (e) => urls.set(e.requestId, new URL(e.request.url).pathname));
  cdp.on('Network.loadingFinished', (e) => {
    if (urls.get(e.requestId)?.startsWith('/pkg/')) bundleBytes += e.encodedDataLength;
  });
  for (const path of ['/orders', '/messages']) {
    await page.goto(`${baseURL}${path}`);
    await hydrated(page);
  }
  expect([...urls.values()].filter((p) => p.startsWith('/pkg/')).length).toBeGreaterThan(0);
  expect(bundleBytes).toBe(0);
  expect(unexpectedErrors(page)).toEqual([]);
});

test('once the page is interactive the other pages\' code is cached: opening messages with the network down still works', async ({
  browser,
  baseURL,
}) => {
  const page = await userPage(browser, 'buyer@sleek.test');
  const fetched = new Set<string>();
  page.on('requestfinished', (r) => fetched.add(new URL(r.url()).pathname));
  await page.goto(`${baseURL}/orders`);
  const lazy = (await page.locator('meta[name="threadline-lazy"]').getAttribute('content'))!.split(' ');
  expect(lazy.length).toBeGreaterThan(0);
  await hydrated(page);
  await expect.poll(() => lazy.filter((url) => !fetched.has(url))).toEqual([]);

  await page.context().setOffline(true);
  await page.getByRole('link', { name: 'Messages' }).first().click();
  await expect(page).toHaveURL(/\/messages$/);
  await expect(page.getByRole('heading', { name: 'Messages' })).toBeVisible();
  await page.context().setOffline(false);
  // the app is alive: the way back works without a page load
  await page.getByRole('link', { name: 'Orders' }).first().click();
  await expect(page.getByRole('heading', { name: 'Orders' })).toBeVisible();
  expect(pageErrors(page)).toEqual([]);
});

test('opening an order whose code cannot be fetched (the network dropped before the prefetch had it) waits, and opens once the code arrives', async ({
  browser,
  baseURL,
}) => {
  const page = await userPage(browser, 'buyer@sleek.test');
  // no lazy module can be had: the prefetch fails, and so does the first try
  // to load the order page's code
  const lazyModule = /\/pkg\/(split|chunk)_\w+\.[0-9a-f]{16}\.wasm$/;
  await page.route(lazyModule, (route) => route.abort('internetdisconnected'));
  const failed: string[] = [];
  page.on('requestfailed', (r) => {
    if (lazyModule.test(new URL(r.url()).pathname)) failed.push(new URL(r.url()).pathname);
  });
  await page.goto(`${baseURL}/orders`);
  await hydrated(page);
  const lazy = (await page.locator('meta[name="threadline-lazy"]').getAttribute('content'))!.split(' ');
  await expect.poll(() => lazy.filter((url) => !failed.includes(url))).toEqual([]);

  const link = page.locator('tr[data-order-id] a').first();
  const label = (await link.textContent())!;
  const before = failed.length;
  await link.click();
  await expect.poll(() => failed.slice(before).some((p) => p.includes('split___order_detail'))).toBe(true);
  const waiting = page.getByRole('status').filter({ hasText: 'Waiting for the network to open this page' });
  await expect(waiting).toBeVisible();
  // the network is back: the next try loads it, and the order opens
  await page.unroute(lazyModule);
  await expect(page).toHaveURL(/\/orders\/[0-9a-f-]{36}$/);
  await expect(page.getByRole('heading', { level: 1, name: new RegExp(label) })).toBeVisible({ timeout: 20_000 });
  await expect(waiting).toBeHidden();
  expect(pageErrors(page)).toEqual([]);
});
