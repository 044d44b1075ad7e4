import { expect } from '@playwright/test';
import { consoleErrors, test, hydrated, isoDate, signIn, uniqueProduct, userPage } from './helpers';

test('a buyer places an order and sees it listed', async ({ browser }) => {
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const product = uniqueProduct('Bamboo socks');
  await buyer.getByText('New order').click();
  await buyer.getByLabel('Product', { exact: true }).fill(product);
  await buyer.getByLabel('Quantity', { exact: true }).fill('250');
  await buyer.getByLabel('Due date', { exact: true }).fill(isoDate(30));
  await buyer.getByRole('button', { name: 'Place order' }).click();
  await expect(buyer.getByText('Order placed.')).toBeVisible();
  const row = buyer.getByRole('row').filter({ hasText: product });
  await expect(row).toContainText('Pending');
  await expect(row).toContainText('250');

  await buyer.reload();
  await expect(buyer.getByRole('row').filter({ hasText: product })).toHaveCount(1);
  expect(consoleErrors(buyer)).toEqual([]);
});

test('a negative quantity is refused inline and creates nothing', async ({ browser }) => {
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const product = uniqueProduct('Negative tee');
  await buyer.getByText('New order').click();
  await buyer.getByLabel('Product', { exact: true }).fill(product);
  await buyer.getByLabel('Quantity', { exact: true }).fill('-5');
  await buyer.getByLabel('Due date', { exact: true }).fill(isoDate(30));
  await buyer.getByRole('button', { name: 'Place order' }).click();
  await expect(buyer.getByRole('alert')).toHaveText('quantity must be a whole number from 1 to 1,000,000');
  await buyer.reload();
  await expect(buyer.getByRole('row').filter({ hasText: product })).toHaveCount(0);
});

test('factory staff advance the stage of an order assigned to their factory', async ({ browser }) => {
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const product = uniqueProduct('Cargo pants');
  await buyer.getByText('New order').click();
  await buyer.getByLabel('Product', { exact: true }).fill(product);
  await buyer.getByLabel('Quantity', { exact: true }).fill('40');
  await buyer.getByLabel('Due date', { exact: true }).fill(isoDate(20));
  await buyer.getByRole('button', { name: 'Place order' }).click();
  const link = buyer.getByRole('row').filter({ hasText: product }).getByRole('link');
  const orderPath = new URL((await link.getAttribute('href'))!, 'http://x').pathname;

  const admin = await userPage(browser, 'admin@sleek.test');
  await admin.goto(orderPath);
  await hydrated(admin);
  await admin.getByLabel('Factory', { exact: true }).selectOption({ label: 'Dhaka Knitwear Ltd' });
  await admin.getByRole('button', { name: 'Assign' }).click();
  await expect(admin.locator('.order-head .badge')).toHaveText('Confirmed');

  const factory = await userPage(browser, 'factory@sleek.test');
  await factory.goto(orderPath);
  await hydrated(factory);
  await factory.getByRole('button', { name: 'Start cutting' }).click();
  await expect(factory.locator('[data-stage="cutting"]')).toContainText('In progress');
  await expect(factory.locator('.order-head .badge')).toHaveText('In production');
  await factory.getByRole('button', { name: 'Complete cutting' }).click();
  await expect(factory.locator('[data-stage="cutting"]')).toContainText('Done');
  await expect(factory.getByRole('button', { name: 'Start sewing' })).toBeVisible();

  await buyer.goto(orderPath);
  await expect(buyer.locator('[data-stage="cutting"]')).toContainText('Done');
  await expect(buyer.getByRole('button', { name: /Start|Complete/ })).toHaveCount(0);
  expect([...consoleErrors(buyer), ...consoleErrors(admin), ...consoleErrors(factory)]).toEqual([]);
});

test('a message reaches the other user\'s inbox', async ({ browser }) => {
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const body = uniqueProduct('Could you send fabric swatches?');
  await buyer.goto('/messages?tab=compose');
  await hydrated(buyer);
  await buyer.getByLabel('To', { exact: true }).selectOption({ label: 'Rahim Chowdhury (Dhaka Knitwear Ltd)' });
  await buyer.getByLabel('Message', { exact: true }).fill(body);
  await buyer.getByRole('button', { name: 'Send message' }).click();
  await expect(buyer).toHaveURL(/tab=sent/);
  await expect(buyer.locator('.message').filter({ hasText: body })).toContainText('not read yet');

  const factory = await userPage(browser, 'factory@sleek.test');
  await factory.goto('/messages');
  await hydrated(factory);
  const received = factory.locator('.message').filter({ hasText: body });
  await expect(received).toContainText('From Ava Brooks');
  await received.getByRole('button', { name: 'Mark read' }).click();
  await expect(received.getByRole('button', { name: 'Mark read' })).toHaveCount(0);

  await buyer.reload();
  await expect(buyer.locator('.message').filter({ hasText: body })).toContainText('Read ');
});

test('an empty message is refused inline', async ({ browser }) => {
  const buyer = await userPage(browser, 'buyer@sleek.test');
  await buyer.goto('/messages?tab=compose');
  await hydrated(buyer);
  await buyer.getByLabel('To', { exact: true }).selectOption({ label: 'Rahim Chowdhury (Dhaka Knitwear Ltd)' });
  await buyer.getByLabel('Message', { exact: true }).fill('   ');
  await buyer.getByRole('button', { name: 'Send message' }).click();
  await expect(buyer.getByRole('alert')).toHaveText('write a message before sending');
  await expect(buyer).toHaveURL(/tab=compose/);
});

test('an unknown order shows a clear error', async ({ browser }) => {
  const buyer = await userPage(browser, 'buyer@sleek.test');
  await buyer.goto('/orders/00000000-0000-4000-8000-000000000000');
  await expect(buyer.getByRole('alert')).toHaveText('order not found');
  await buyer.goto('/orders/not-an-id');
  await expect(buyer.getByRole('alert')).toContainText('not a valid order address');
});

test('a visitor is sent to sign in, and a wrong password is refused', async ({ page }) => {
  await page.goto('/orders');
  await expect(page).toHaveURL(/\/login$/);
  await hydrated(page);
  await page.getByLabel('Email', { exact: true }).fill('buyer@sleek.test');
  await page.getByLabel('Password', { exact: true }).fill('wrong password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert')).toHaveText('wrong email or password');
  await signIn(page, 'buyer2@sleek.test');
  await expect(page.locator('.whoami-name')).toHaveText('Noah Kim');
});
