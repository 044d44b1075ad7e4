// Postgres Changes: INSERT, UPDATE and DELETE in the documented shapes,
// filtered, and only rows the user may see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, sql, subscribed, until } from './harness.mjs';

for (const vsn of ['2.0.0', '1.0.0']) {
  test(`INSERT, UPDATE and DELETE arrive filtered, in the documented shapes (vsn ${vsn})`, async () => {
    const realtime = await client('buyer@sleek.test', { vsn });
    const received = [];
    const channel = realtime
      .channel(`pending-orders-${vsn}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'orders', filter: 'status=eq.pending' }, (payload) => received.push(payload));
    await subscribed(channel);

    const buyer = sql("select id from users where email = 'buyer@sleek.test'");
    const product = `realtime-js ${vsn} ${Date.now()}`;
    const id = sql(`insert into orders (buyer_id, product, quantity, due_date) values ('${buyer}', '${product}', 42, current_date + 10) returning id`);
    sql(`update orders set status = 'cancelled' where product = 'Oxford button-down shirt'`); // buyer2's: not ours
    sql(`update orders set notes = 'express' where id = '${id}'`);
    sql(`delete from orders where id = '${id}'`);

    const mine = () => received.filter((p) => (p.new?.id ?? p.old?.id) === id);
    await until(() => mine().length === 3, 'three events');
    const [inserted, updated, deleted] = mine();

    assert.equal(inserted.eventType, 'INSERT');
    assert.equal(inserted.schema, 'public');
    assert.equal(inserted.table, 'orders');
    assert.equal(inserted.new.product, product);
    assert.equal(inserted.new.quantity, 42, 'converted to a number by column type');
    assert.equal(inserted.new.status, 'pending');
    assert.deepEqual(inserted.old, {});
    assert.ok(!Number.isNaN(Date.parse(inserted.commit_timestamp)));

    assert.equal(updated.eventType, 'UPDATE');
    assert.equal(updated.new.notes, 'express');
    assert.equal(updated.old.notes, '');

    assert.equal(deleted.eventType, 'DELETE');
    assert.equal(deleted.old.id, id);
    assert.deepEqual(deleted.new, {});

    assert.ok(received.every((p) => (p.new?.status ?? p.old?.status) === 'pending'), 'only rows matching the filter');
    await realtime.removeAllChannels();
    realtime.disconnect();
  });
}

test('a buyer does not receive another buyer\'s rows', async () => {
  const realtime = await client('buyer@sleek.test');
  const received = [];
  const channel = realtime.channel('all-orders').on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'orders' }, (p) => received.push(p));
  await subscribed(channel);
  sql("update orders set notes = 'for buyer2 only' where product = 'Wool overcoat'");
  sql("update orders set notes = 'for buyer' where product = 'Linen camp shirt'");
  await until(() => received.some((p) => p.new.notes === 'for buyer'), 'the buyer\'s own change');
  assert.ok(!received.some((p) => p.new.notes === 'for buyer2 only'));
  realtime.disconnect();
});
