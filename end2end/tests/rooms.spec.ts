import { expect } from '@playwright/test';
import { connection, hydrated, test, uniqueProduct, unexpectedErrors, userPage } from './helpers';
import { confirmedOrder } from './servers';

test('two people on an order see each other viewing and typing, live', async ({ browser, baseURL }) => {
  const product = uniqueProduct('Viewed polo');
  const id = confirmedOrder(product);
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const staff = await userPage(browser, 'factory@sleek.test');
  for (const page of [buyer, staff]) {
    await page.goto(`${baseURL}/orders/${id}`);
    await hydrated(page);
    await expect(connection(page)).toHaveAttribute('data-state', 'live');
  }

  // each sees the other's avatar, not their own
  await expect(buyer.getByTestId('viewers').getByRole('listitem')).toHaveAttribute('title', 'Rahim Chowdhury');
  await expect(staff.getByTestId('viewers').getByRole('listitem')).toHaveAttribute('title', 'Ava Brooks');

  // the buyer types in the order's thread: the factory sees it, the buyer does not see themselves
  await buyer.getByRole('textbox', { name: 'Message' }).pressSequentially('When will the polos ship?');
  await expect(staff.getByTestId('typing')).toHaveText('Ava Brooks is typing…');
  await expect(buyer.getByTestId('typing')).toHaveText('');
  // sending ends it at once
  await buyer.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(staff.getByTestId('typing')).toHaveText('');
  await expect(staff.getByText('When will the polos ship?')).toBeVisible();

  // leaving the page takes the avatar away
  await staff.goto(`${baseURL}/orders`);
  await expect(buyer.getByTestId('viewers')).toHaveCount(0);
  expect([...unexpectedErrors(buyer), ...unexpectedErrors(staff)]).toEqual([]);
});

test('compose: the recipient sees who is writing to them, and contacts show who is online', async ({ browser, baseURL }) => {
  const staff = await userPage(browser, 'factory@sleek.test');
  await staff.goto(`${baseURL}/messages`);
  await hydrated(staff);
  await expect(connection(staff)).toHaveAttribute('data-state', 'live');

  const buyer = await userPage(browser, 'buyer@sleek.test');
  await buyer.goto(`${baseURL}/messages?tab=compose`);
  await hydrated(buyer);
  // the factory's staff have Threadline open: a green dot
  const person = buyer.getByRole('list', { name: 'People' }).getByRole('listitem').filter({ hasText: 'Rahim Chowdhury' });
  await expect(person.getByRole('img', { name: 'online' })).toBeVisible();
  await buyer.getByLabel('To').selectOption({ label: 'Rahim Chowdhury (Dhaka Knitwear Ltd)' });
  await buyer.getByRole('textbox', { name: 'Message' }).pressSequentially('About the next season');
  await expect(staff.getByTestId('typing')).toHaveText('Ava Brooks (to you) is typing…');
  expect([...unexpectedErrors(buyer), ...unexpectedErrors(staff)]).toEqual([]);
});
