import { expect, type Page } from '@playwright/test';
import { connection, consoleErrors, test, hydrated, uniqueProduct, unexpectedErrors, userPage } from './helpers';
import { confirmedOrder, PrivateServer, sql } from './servers';

async function openOrder(page: Page, base: string, id: string) {
  await page.goto(`${base}/orders/${id}`);
  await hydrated(page);
  await expect(connection(page)).toHaveAttribute('data-state', 'live');
}

// (how fast is measured by scripts/bench: commit-to-browser latency; here, that it arrives at all without a reload)
test('a message, a production update and a stage advance reach the other user live', async ({ browser, baseURL }) => {
  const id = confirmedOrder(uniqueProduct('Live tee'));
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const factory = await userPage(browser, 'factory@sleek.test');
  await openOrder(buyer, baseURL!, id);
  await openOrder(factory, baseURL!, id);

  await factory.getByLabel('Production update', { exact: true }).fill('Fabric is on the cutting table');
  await factory.getByRole('button', { name: 'Post update' }).click();
  await expect(buyer.locator('.feed-item').filter({ hasText: 'Fabric is on the cutting table' })).toBeVisible();

  // the buyer starts writing; the stage moving meanwhile leaves the draft alone
  await expect(buyer.getByLabel('To', { exact: true })).toHaveValue(/.+/);
  await buyer.getByLabel('Message', { exact: true }).fill('Looks great, thanks!');
  await factory.getByRole('button', { name: 'Start cutting' }).click();
  await expect(buyer.locator('[data-stage="cutting"]')).toContainText('In progress');
  await expect(buyer.locator('.order-head .badge')).toHaveText('In production');
  await expect(buyer.getByLabel('Message', { exact: true })).toHaveValue('Looks great, thanks!');
  await buyer.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(factory.locator('.bubble').filter({ hasText: 'Looks great, thanks!' })).toBeVisible();

  // the sender sees each of their own changes once, confirmed
  await expect(buyer.locator('.bubble').filter({ hasText: 'Looks great, thanks!' })).toHaveCount(1);
  await expect(buyer.locator('.bubble[data-pending]')).toHaveCount(0);
  await expect(factory.locator('.feed-item').filter({ hasText: 'Fabric is on the cutting table' })).toHaveCount(1);
  expect([...consoleErrors(buyer), ...consoleErrors(factory)]).toEqual([]);
});

test('lists, the bell and the inbox update live, with a toast for messages elsewhere', async ({ browser, baseURL }) => {
  // factory2 has no other traffic during the run, so its bell counts only this test
  const buyer = await userPage(browser, 'buyer@sleek.test');
  const factory = await userPage(browser, 'factory2@sleek.test');
  await expect(connection(buyer)).toHaveAttribute('data-state', 'live');
  await factory.goto(`${baseURL}/messages`);
  await hydrated(factory);
  await expect(connection(factory)).toHaveAttribute('data-state', 'live');

  // an order created elsewhere appears in the buyer's list
  const product = uniqueProduct('Listed live');
  confirmedOrder(product);
  await expect(buyer.getByRole('row').filter({ hasText: product })).toContainText('Confirmed');

  // a message to the factory: its inbox shows it, the bell counts it; the buyer's page is elsewhere
  const unreadBefore = Number((await factory.getByTestId('unread-count').textContent()) ?? '0');
  const body = uniqueProduct('Inbox live');
  sql(`insert into messages (sender_id, recipient_id, body)
       values ((select id from users where email = 'buyer@sleek.test'), (select id from users where email = 'factory2@sleek.test'), '${body}')`);
  await expect(factory.locator('.message').filter({ hasText: body })).toContainText('From Ava Brooks');
  await expect(factory.getByTestId('unread-count')).toHaveText(String(unreadBefore + 1));

  // a reply while the buyer looks at the orders list: a toast
  const reply = uniqueProduct('Toast reply');
  sql(`insert into messages (sender_id, recipient_id, body)
       values ((select id from users where email = 'factory2@sleek.test'), (select id from users where email = 'buyer@sleek.test'), '${reply}')`);
  await expect(buyer.locator('.toast').filter({ hasText: reply })).toBeVisible();

  // read receipts: the factory marks it read; the buyer's sent folder says so
  await buyer.goto(`${baseURL}/messages?tab=sent`);
  await hydrated(buyer);
  await expect(connection(buyer)).toHaveAttribute('data-state', 'live');
  await factory.locator('.message').filter({ hasText: body }).getByRole('button', { name: 'Mark read' }).click();
  await expect(buyer.locator('.message').filter({ hasText: body })).toContainText('Read ');
  expect([...consoleErrors(buyer), ...consoleErrors(factory)]).toEqual([]);
});

test('an optimistic message the server rejects rolls back with the error', async ({ browser, baseURL }) => {
  const id = confirmedOrder(uniqueProduct('Rollback tee'));
  const buyer = await userPage(browser, 'buyer@sleek.test');
  await openOrder(buyer, baseURL!, id);
  // slow the request down so the pending state can be seen
  await buyer.route('**/api/send_message*', async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 400));
    await route.continue();
  });
  await expect(buyer.getByLabel('To', { exact: true })).toHaveValue(/.+/);
  await buyer.getByLabel('Message', { exact: true }).fill('x'.repeat(6000));
  await buyer.getByRole('button', { name: 'Send', exact: true }).click();
  await expect(buyer.locator('.bubble[data-pending]')).toContainText('Sending…');
  await expect(buyer.locator('.thread [role="alert"]')).toHaveText('a message must be at most 5,000 characters');
  await expect(buyer.locator('.bubble[data-pending]')).toHaveCount(0);
  await expect(buyer.locator('.bubble')).toHaveCount(0);
  expect(Number(sql(`select count(*) from messages where order_id = '${id}'`))).toBe(0);
  expect(unexpectedErrors(buyer)).toEqual([]);
});

test('an optimistic stage advance the server refuses rolls back', async ({ browser, baseURL }) => {
  const id = confirmedOrder(uniqueProduct('Refused advance'));
  const factory = await userPage(browser, 'factory@sleek.test');
  // relay the socket, so that the page can be kept from hearing of one change
  let deaf = false;
  await factory.routeWebSocket(/realtime/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      if (!deaf) ws.send(message);
    });
  });
  await openOrder(factory, baseURL!, id);
  // the order is cancelled behind the page's back
  deaf = true;
  sql(`update orders set status = 'cancelled' where id = '${id}'`);
  await factory.getByRole('button', { name: 'Start cutting' }).click();
  await expect(factory.locator('.timeline [role="alert"]')).toHaveText('production cannot change while the order is cancelled');
  await expect(factory.locator('[data-stage="cutting"]')).toContainText('Not started');
  expect(unexpectedErrors(factory)).toEqual([]);
});

test('a change that reaches the page while its code is still loading shows once it is interactive', async ({ browser, baseURL }) => {
  const id = confirmedOrder(uniqueProduct('Slow code tee'));
  const buyer = await userPage(browser, 'buyer@sleek.test');
  // the order page's own code is held back until the page's socket (opened by
  // the header's bell) has brought the notification the stage change made
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  await buyer.route(/\/pkg\/split___order_detail/, async (route) => {
    await released;
    await route.continue();
  });
  const notified = new Promise<void>((resolve) => {
    buyer.on('websocket', (ws) =>
      ws.on('framereceived', ({ payload }) => {
        if (typeof payload === 'string' && payload.includes('"notifications"') && payload.includes(id)) resolve();
      }),
    );
  });
  // rendered with the stage not started; the change commits before the
  // page's stage subscription exists
  await buyer.goto(`${baseURL}/orders/${id}`, { waitUntil: 'commit' });
  sql(`update production_stages set status = 'in_progress' where order_id = '${id}' and stage = 'cutting'`);
  await notified;
  release();
  await hydrated(buyer);
  await expect(buyer.locator('[data-stage="cutting"]')).toContainText('In progress');
  expect(unexpectedErrors(buyer)).toEqual([]);
});

test.describe('with a server of its own', () => {
  test.describe.configure({ mode: 'serial' });

  test('the page rides out a server restart and gets what was committed meanwhile, once', async ({ browser }) => {
    const server = new PrivateServer(3110, 'threadline_e2e_restart');
    await server.start();
    try {
      const id = confirmedOrder(uniqueProduct('Restart tee'));
      const buyer = await userPage(browser, 'buyer@sleek.test');
      const factory = await userPage(browser, 'factory@sleek.test');
      await openOrder(buyer, server.url, id);
      await openOrder(factory, server.url, id);

      await server.stop();
      await expect(connection(buyer)).toHaveAttribute('data-state', /reconnecting|polling/);
      await expect(connection(buyer)).toContainText(/Reconnecting|Polling/);

      // committed while the server is down: by psql, and by the other user's side of the database
      sql(`insert into order_updates (order_id, author_id, text)
           values ('${id}', (select id from users where email = 'factory@sleek.test'), 'Written during the outage')`);
      sql(`update production_stages set status = 'in_progress' where order_id = '${id}' and stage = 'cutting'`);

      await server.start();
      for (const page of [buyer, factory]) {
        await expect(connection(page)).toHaveAttribute('data-state', 'live', { timeout: 20_000 });
        await expect(page.locator('.feed-item').filter({ hasText: 'Written during the outage' })).toHaveCount(1);
        await expect(page.locator('[data-stage="cutting"]')).toContainText('In progress');
      }
      expect([...unexpectedErrors(buyer), ...unexpectedErrors(factory)]).toEqual([]);
    } finally {
      await server.stop();
    }
  });

  test('with the WebSocket blocked the page polls, says so, and still gets changes', async ({ browser }) => {
    const server = new PrivateServer(3111, 'threadline_e2e_blocked');
    await server.start();
    try {
      const id = confirmedOrder(uniqueProduct('Blocked tee'));
      const buyer = await userPage(browser, 'buyer@sleek.test');
      let blocked = true;
      await buyer.routeWebSocket(/realtime/, (ws) => {
        if (blocked) ws.close({ code: 1011, reason: 'blocked by test' });
        else ws.connectToServer();
      });
      await buyer.goto(`${server.url}/orders/${id}`);
      await hydrated(buyer);
      await expect(connection(buyer)).toHaveAttribute('data-state', 'polling', { timeout: 20_000 });
      await expect(connection(buyer)).toContainText('Polling');

      sql(`insert into order_updates (order_id, author_id, text)
           values ('${id}', (select id from users where email = 'factory@sleek.test'), 'Arrived by polling')`);
      sql(`update production_stages set status = 'in_progress' where order_id = '${id}' and stage = 'cutting'`);
      await expect(buyer.locator('.feed-item').filter({ hasText: 'Arrived by polling' })).toHaveCount(1);
      await expect(buyer.locator('[data-stage="cutting"]')).toContainText('In progress');

      // the socket works again: back to live, nothing repeated
      blocked = false;
      await buyer.getByRole('button', { name: 'Retry now' }).click();
      await expect(connection(buyer)).toHaveAttribute('data-state', 'live', { timeout: 20_000 });
      sql(`insert into order_updates (order_id, author_id, text)
           values ('${id}', (select id from users where email = 'factory@sleek.test'), 'Arrived live')`);
      await expect(buyer.locator('.feed-item').filter({ hasText: 'Arrived live' })).toHaveCount(1);
      await expect(buyer.locator('.feed-item').filter({ hasText: 'Arrived by polling' })).toHaveCount(1);
      expect(unexpectedErrors(buyer)).toEqual([]);
    } finally {
      await server.stop();
    }
  });

  test('a change committed after the page was rendered, before its socket joined, still arrives', async ({ browser }) => {
    const server = new PrivateServer(3113, 'threadline_e2e_late_join');
    await server.start();
    try {
      const id = confirmedOrder(uniqueProduct('Late join tee'));
      const buyer = await userPage(browser, 'buyer@sleek.test');
      let held = true;
      await buyer.routeWebSocket(/realtime/, (ws) => {
        if (held) ws.close({ code: 1011, reason: 'held by test' });
        else ws.connectToServer();
      });
      await buyer.goto(`${server.url}/orders/${id}`);
      await hydrated(buyer);
      await expect(buyer.locator('[data-stage="cutting"]')).toContainText('Not started');

      // the server has the change before the page joins from where it was rendered
      const captured = await server.metric('changes_captured_total');
      sql(`update production_stages set status = 'in_progress' where order_id = '${id}' and stage = 'cutting'`);
      await expect.poll(() => server.metric('changes_captured_total')).toBeGreaterThan(captured);
      held = false;
      await expect(connection(buyer)).toHaveAttribute('data-state', 'live', { timeout: 20_000 });
      await expect(buyer.locator('[data-stage="cutting"]')).toContainText('In progress');
      expect(unexpectedErrors(buyer)).toEqual([]);
    } finally {
      await server.stop();
    }
  });

  test('a hundred navigations leave the subscription count where it started', async ({ browser }) => {
    // a hundred round trips through the debug build take 30-40 s on two cores
    test.setTimeout(180_000);
    const server = new PrivateServer(3112, 'threadline_e2e_navigation');
    await server.start();
    try {
      const buyer = await userPage(browser, 'buyer@sleek.test');
      await buyer.goto(`${server.url}/orders`);
      await hydrated(buyer);
      await expect(connection(buyer)).toHaveAttribute('data-state', 'live');
      await expect.poll(() => server.subscriptions()).toBeGreaterThan(0);
      const start = await server.subscriptions();

      for (let i = 0; i < 100; i++) {
        switch (i % 3) {
          case 0:
            await buyer.getByRole('link', { name: 'Messages' }).click();
            await expect(buyer.getByRole('heading', { name: 'Messages' })).toBeVisible();
            break;
          case 1:
            await buyer.getByRole('link', { name: 'Orders', exact: true }).click();
            await expect(buyer.getByRole('heading', { name: 'Orders' })).toBeVisible();
            await buyer.getByRole('link', { name: 'PO-3', exact: true }).click();
            await expect(buyer.getByRole('heading', { name: 'Production' })).toBeVisible();
            break;
          default:
            await buyer.getByRole('link', { name: 'Orders', exact: true }).click();
            await expect(buyer.getByRole('heading', { name: 'Orders' })).toBeVisible();
        }
      }
      await buyer.getByRole('link', { name: 'Orders', exact: true }).click();
      await expect(buyer.getByRole('heading', { name: 'Orders' })).toBeVisible();
      await expect.poll(() => server.subscriptions(), { timeout: 10_000 }).toBe(start);
      expect(consoleErrors(buyer)).toEqual([]);
    } finally {
      await server.stop();
    }
  });
});
