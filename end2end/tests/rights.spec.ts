import { expect } from '@playwright/test';
import { connection, hydrated, test, uniqueProduct, unexpectedErrors, userPage } from './helpers';
import { confirmedOrder, sql } from './servers';

test('an order moved to another factory leaves that factory\'s list and open page, live', async ({ browser, baseURL }) => {
  const product = uniqueProduct('Moved tee');
  const id = confirmedOrder(product);
  const list = await userPage(browser, 'factory@sleek.test');
  await expect(connection(list)).toHaveAttribute('data-state', 'live');
  await expect(list.getByRole('row').filter({ hasText: product })).toHaveCount(1);
  const detail = await list.context().newPage();
  await detail.goto(`${baseURL}/orders/${id}`);
  await hydrated(detail);
  await expect(connection(detail)).toHaveAttribute('data-state', 'live');
  await expect(detail.getByRole('heading', { name: new RegExp(product) })).toBeVisible();

  // an operator moves it to the other factory, with psql
  sql(`update orders set factory_id = (select id from factories where name = 'Porto Stitch Works') where id = '${id}'`);

  await expect(list.getByRole('row').filter({ hasText: product })).toHaveCount(0);
  await expect(detail.getByTestId('order-gone')).toContainText('no longer visible to you');
  await expect(detail.getByText(product)).toHaveCount(0);
  expect([...unexpectedErrors(list), ...unexpectedErrors(detail)]).toEqual([]);
});

test('signing out in one tab closes the other tab\'s live connection', async ({ browser }) => {
  const first = await userPage(browser, 'buyer2@sleek.test');
  const second = await first.context().newPage();
  await second.goto('/orders');
  await hydrated(second);
  await expect(connection(second)).toHaveAttribute('data-state', 'live');

  await first.getByRole('button', { name: 'Sign out' }).click();
  await expect(first).toHaveURL(/\/login$/);
  // the server closed the second tab's socket at the sign-out: it follows
  await expect(second).toHaveURL(/\/login$/, { timeout: 5_000 });
  await expect(second.getByRole('heading', { name: 'Sign in' })).toBeVisible();
  expect(unexpectedErrors(second)).toEqual([]);
});
