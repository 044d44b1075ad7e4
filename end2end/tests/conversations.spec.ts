import { expect } from '@playwright/test';
import { connection, hydrated, test, uniqueProduct, unexpectedErrors, userPage } from './helpers';
import { confirmedOrder, sql } from './servers';

test('conversations group messages by person and order, count what is unread, and take a reply live', async ({ browser, baseURL }) => {
  const product = uniqueProduct('Chat jacket');
  const id = confirmedOrder(product);
  const number = sql(`select number from orders where id = '${id}'`);
  sql(`insert into messages (sender_id, recipient_id, order_id, body, created_at)
       select (select id from users where email = 'factory@sleek.test'), (select id from users where email = 'buyer@sleek.test'),
              '${id}', 'Fabric for ${product} arrives ' || i, now() - interval '1 minute' + i * interval '1 second'
       from generate_series(1, 3) as i`);

  const buyer = await userPage(browser, 'buyer@sleek.test');
  await buyer.goto(`${baseURL}/messages?tab=conversations`);
  await hydrated(buyer);
  await expect(connection(buyer)).toHaveAttribute('data-state', 'live');
  const conversation = buyer.getByRole('list', { name: 'Conversations' }).getByRole('listitem').filter({ hasText: `PO-${number}` });
  await expect(conversation).toContainText('Rahim Chowdhury');
  await expect(conversation).toContainText(`Fabric for ${product} arrives 3`);
  await expect(conversation.getByLabel('3 unread')).toBeVisible();

  await conversation.getByRole('link').click();
  await expect(buyer).toHaveURL(/tab=conversation&with=/);
  const thread = buyer.locator('ul[data-folder="conversation"] li');
  await expect(thread).toHaveCount(3);
  await expect(thread.last()).toContainText(`arrives 3`);

  // the factory answers from elsewhere: it lands at the bottom, live
  sql(`insert into messages (sender_id, recipient_id, order_id, body)
       values ((select id from users where email = 'factory@sleek.test'), (select id from users where email = 'buyer@sleek.test'),
               '${id}', 'Cutting starts Monday')`);
  await expect(thread).toHaveCount(4);
  await expect(thread.last()).toContainText('Cutting starts Monday');

  // the buyer replies in place
  await buyer.getByRole('textbox', { name: 'Reply' }).fill('Thanks, noted');
  await buyer.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(thread).toHaveCount(5);
  await expect(thread.last()).toContainText('Thanks, noted');
  expect(sql(`select count(*) from messages where order_id = '${id}' and body = 'Thanks, noted'`)).toBe('1');
  expect(unexpectedErrors(buyer)).toEqual([]);
});
