import { expect } from '@playwright/test';
import { connection, hydrated, test, uniqueProduct, unexpectedErrors, userPage } from './helpers';
import { confirmedOrder, LoadBalancer, PrivateServer, sql } from './servers';

// Two app servers on one PostgreSQL behind nginx (Debian's): a browser whose
// server dies reconnects through the balancer to the other and resumes
// exactly from its cursor.
test('when its app server is killed, the page resumes on another through the balancer, exactly', async ({ browser }) => {
  test.setTimeout(120_000);
  const first = new PrivateServer(3120, 'threadline_e2e_node_a');
  const second = new PrivateServer(3121, 'threadline_e2e_node_b');
  const balancer = new LoadBalancer(3122, [first.port, second.port]);
  await first.start();
  await second.start();
  await balancer.start();
  try {
    const id = confirmedOrder(uniqueProduct('Failover tee'));
    const buyer = await userPage(browser, 'buyer@sleek.test');
    await buyer.goto(`${balancer.url}/orders/${id}`);
    await hydrated(buyer);
    await expect(connection(buyer)).toHaveAttribute('data-state', 'live');
    sql(`insert into order_updates (order_id, author_id, text)
         values ('${id}', (select id from users where email = 'factory@sleek.test'), 'Before the crash')`);
    await expect(buyer.locator('.feed-item').filter({ hasText: 'Before the crash' })).toHaveCount(1);

    // the server the page is on dies without a word; more is committed meanwhile
    await first.kill();
    sql(`insert into order_updates (order_id, author_id, text)
         values ('${id}', (select id from users where email = 'factory@sleek.test'), 'While it was down')`);
    sql(`update production_stages set status = 'in_progress' where order_id = '${id}' and stage = 'cutting'`);

    await expect(connection(buyer)).toHaveAttribute('data-state', 'live', { timeout: 30_000 });
    await expect(buyer.locator('.feed-item').filter({ hasText: 'While it was down' })).toHaveCount(1);
    await expect(buyer.locator('[data-stage="cutting"]')).toContainText('In progress');
    await expect(buyer.locator('.feed-item').filter({ hasText: 'Before the crash' })).toHaveCount(1);
    // and it goes on, live, on the second server
    sql(`insert into order_updates (order_id, author_id, text)
         values ('${id}', (select id from users where email = 'factory@sleek.test'), 'After the move')`);
    await expect(buyer.locator('.feed-item').filter({ hasText: 'After the move' })).toHaveCount(1);
    // a request in flight to the killed server (or sent on nginx's kept-alive
    // connection to it) fails at the balancer with 502; nothing else may
    const errors = unexpectedErrors(buyer).filter((e) => !/status of 502 \(Bad Gateway\)/.test(e));
    expect(errors).toEqual([]);
  } finally {
    await balancer.stop();
    await first.kill();
    await second.stop();
    sql(`select pg_drop_replication_slot(slot_name) from pg_replication_slots
         where slot_name like 'threadline_e2e_node_%' and not active`);
  }
});
