import { test as base, expect, type Browser, type BrowserContext, type Page } from '@playwright/test';

/** The browser contexts a test opened with `userPage`, closed when it ends. */
const opened = new Set<BrowserContext>();

/**
 * Playwright's `test`, closing the test's signed-in pages afterwards, so no
 * page of an earlier test keeps its socket, heartbeats and polls running.
 */
export const test = base.extend<{ closeUserPages: void }>({
  closeUserPages: [
    async ({}, use) => {
      await use();
      await Promise.all([...opened].map((context) => context.close()));
      opened.clear();
    },
    { auto: true },
  ],
});

export const PASSWORD = 'threadline';

/** Waits until the Wasm app has hydrated, so clicks reach Rust handlers. */
export async function hydrated(page: Page) {
  await expect(page.locator('body[data-hydrated="true"]')).toHaveCount(1);
}

export async function signIn(page: Page, email: string) {
  await page.goto('/login');
  await hydrated(page);
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(/\/orders$/);
  await expect(page.getByRole('heading', { name: 'Orders' })).toBeVisible();
  await hydrated(page);
}

/** A signed-in page in its own browser context (its own cookies). */
export async function userPage(browser: Browser, email: string): Promise<Page> {
  const context = await browser.newContext();
  opened.add(context);
  const page = await context.newPage();
  const errors: string[] = [];
  const thrown: string[] = [];
  page.on('pageerror', (e) => {
    errors.push(String(e));
    thrown.push(String(e));
  });
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  Object.assign(page, { consoleErrors: errors, pageErrors: thrown });
  await signIn(page, email);
  return page;
}

export function consoleErrors(page: Page): string[] {
  return (page as Page & { consoleErrors?: string[] }).consoleErrors ?? [];
}

/** Errors thrown in the page and not caught (a panic in the app is one). */
export function pageErrors(page: Page): string[] {
  return (page as Page & { pageErrors?: string[] }).pageErrors ?? [];
}

/**
 * Console errors other than the browser's own network log: connections
 * refused while a test keeps the server down or blocks the socket, requests
 * in flight (a prefetch, a poll) cut when a test kills the server, and error
 * statuses of requests the server rightly refuses.
 */
export function unexpectedErrors(page: Page): string[] {
  return consoleErrors(page).filter(
    (e) =>
      !/WebSocket connection to .* failed|Failed to load resource: (net::ERR_CONNECTION_(REFUSED|RESET)|the server responded with a status of 4\d\d)/.test(e),
  );
}

/** The connection indicator's state: connecting, live, reconnecting, polling or offline. */
export function connection(page: Page) {
  return page.locator('.connection-status');
}

/** A product name no other test uses. */
export function uniqueProduct(what: string): string {
  return `${what} ${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

export function isoDate(daysFromNow: number): string {
  const d = new Date(Date.now() + daysFromNow * 86_400_000);
  return d.toISOString().slice(0, 10);
}
