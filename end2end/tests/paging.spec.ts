import { expect } from '@playwright/test';
import { connection, hydrated, test, uniqueProduct, unexpectedErrors, userPage } from './helpers';
import { sql } from './servers';

test('a long history: search, load more, counts, and a live change lands in place', async ({ browser, baseURL }) => {
  const product = uniqueProduct('Archive tee');
  // 70 orders of the buyer, older than anything else, one minute apart
  sql(`insert into orders (buyer_id, product, quantity, due_date, created_at)
       select (select id from users where email = 'buyer@sleek.test'), '${product} ' || i, i, current_date + 30,
              now() - interval '400 days' + i * interval '1 minute'
       from generate_series(1, 70) as i`);
  const page = await userPage(browser, 'buyer@sleek.test');
  await page.goto(`${baseURL}/orders?q=${encodeURIComponent(product)}`);
  await hydrated(page);
  await expect(connection(page)).toHaveAttribute('data-state', 'live');

  const rows = page.locator('tbody tr');
  await expect(rows).toHaveCount(50);
  await expect(rows.first()).toContainText(`${product} 70`);
  // the chips count the whole history the search matches
  await expect(page.getByRole('link', { name: /^All/ }).locator('.count')).toHaveText('70');
  await expect(page.getByRole('link', { name: /^Pending/ }).locator('.count')).toHaveText('70');
  // the filters stay in the URL
  await page.getByRole('link', { name: /^Pending/ }).click();
  await expect(page).toHaveURL(/status=pending/);
  await expect(page).toHaveURL(/q=/);
  await expect(rows).toHaveCount(50);

  await page.getByRole('button', { name: 'Load more' }).click();
  await expect(rows).toHaveCount(70);
  await expect(rows.last()).toContainText(`${product} 1`);
  await expect(page.getByText("That's every order.")).toBeVisible();
  await expect(page.getByRole('button', { name: 'Load more' })).toHaveCount(0);

  // a change deep in the loaded window, by another writer: it leaves the pending list, live
  sql(`update orders set status = 'cancelled' where product = '${product} 3'`);
  await expect(rows).toHaveCount(69);
  await expect(page.getByRole('link', { name: /^Cancelled/ }).locator('.count')).toHaveText('1');
  await expect(page.locator('td.product').getByText(`${product} 3`, { exact: true })).toHaveCount(0);
  // a new one lands at the top, nothing already loaded is repeated
  sql(`insert into orders (buyer_id, product, quantity, due_date)
       values ((select id from users where email = 'buyer@sleek.test'), '${product} new', 1, current_date + 3)`);
  await expect(rows.first()).toContainText(`${product} new`);
  await expect(rows).toHaveCount(70);
  const labels = await rows.locator('td:first-child').allTextContents();
  expect(new Set(labels).size).toBe(labels.length);
  expect(unexpectedErrors(page)).toEqual([]);
});
