// Broadcast and Presence as Supabase does them, on the rooms Threadline
// authorizes: `order:<id>` for the people who may see that order,
// `user:<id>` for that user. Driven by realtime-js unchanged (its default
// protocol 2.0.0 sends broadcasts as binary frames; 1.0.0 as JSON).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base, client, sql, subscribed, token, until } from './harness.mjs';

const ORDER = () => sql("select id from orders where product = 'Linen camp shirt'");
const userId = (email) => sql(`select id from users where email = '${email}'`);
const userName = (email) => sql(`select name from users where email = '${email}'`);

/** Subscribes, or resolves with the error a refused join reports. */
function refusal(channel) {
  return new Promise((resolve) =>
    channel.subscribe((status, err) => {
      if (status === 'CHANNEL_ERROR') resolve(err);
      if (status === 'SUBSCRIBED' || status === 'TIMED_OUT') resolve(new Error(status));
    }),
  );
}

for (const vsn of ['2.0.0', '1.0.0']) {
  test(`broadcast with ack between two people of an order's room; a third is kept out (vsn ${vsn})`, async () => {
    const order = ORDER();
    const buyer = await client('buyer@sleek.test', { vsn });
    const factory = await client('factory@sleek.test', { vsn });
    const outsider = await client('buyer2@sleek.test', { vsn });

    const toBuyer = [];
    const toFactory = [];
    const sending = buyer
      .channel(`order:${order}`, { config: { broadcast: { ack: true } } })
      .on('broadcast', { event: 'typing' }, (m) => toBuyer.push(m));
    const listening = factory
      .channel(`order:${order}`)
      .on('broadcast', { event: 'typing' }, (m) => toFactory.push(m));
    await subscribed(sending);
    await subscribed(listening);

    for (const config of [{}, { private: true }]) {
      const kept = outsider.channel(`order:${order}`, { config }).on('broadcast', { event: 'typing' }, () => {});
      const error = await refusal(kept);
      assert.match(String(error?.message), new RegExp(`you may not join order:${order}`), JSON.stringify(config));
      await outsider.removeChannel(kept);
    }

    const payload = { name: 'Sleek', text: 'Hé, "quoted" ✓' };
    assert.equal(await sending.send({ type: 'broadcast', event: 'typing', payload }), 'ok', 'acknowledged');
    await until(() => toFactory.length === 1, 'the broadcast at the other person');
    assert.equal(toFactory[0].event, 'typing');
    assert.deepEqual(toFactory[0].payload, payload);

    // the sender does not hear itself (self is off), and the outsider got nothing
    await sending.send({ type: 'broadcast', event: 'typing', payload: { n: 2 } });
    await until(() => toFactory.length === 2, 'the second broadcast');
    assert.equal(toBuyer.length, 0);
    for (const c of [buyer, factory, outsider]) c.disconnect();
  });
}

test('self: true hears its own broadcasts; a plain channel has none', async () => {
  const order = ORDER();
  const buyer = await client('buyer@sleek.test');
  const heard = [];
  const room = buyer
    .channel(`order:${order}`, { config: { broadcast: { self: true, ack: true } } })
    .on('broadcast', { event: 'ping' }, (m) => heard.push(m));
  await subscribed(room);
  assert.equal(await room.send({ type: 'broadcast', event: 'ping', payload: { n: 1 } }), 'ok');
  await until(() => heard.length === 1, 'its own broadcast');

  const plain = buyer.channel('plain-topic', { config: { broadcast: { ack: true } } });
  await subscribed(plain);
  assert.equal(await plain.send({ type: 'broadcast', event: 'ping', payload: {} }), 'error');
  const presence = buyer.channel('plain-with-presence').on('presence', { event: 'sync' }, () => {});
  const error = await refusal(presence);
  assert.match(String(error?.message), /has no presence: presence and broadcast are on the room topics \(order:<order id>, user:<user id>\)/);
  buyer.disconnect();
});

test('presence: join, sync and leave, keyed by the user, under their own name', async () => {
  const order = ORDER();
  const buyer = await client('buyer@sleek.test');
  const factory = await client('factory@sleek.test');
  const events = [];
  const watching = buyer
    .channel(`order:${order}`)
    .on('presence', { event: 'sync' }, () => events.push('sync'))
    .on('presence', { event: 'join' }, ({ key, newPresences }) => events.push(['join', key, newPresences]))
    .on('presence', { event: 'leave' }, ({ key, leftPresences }) => events.push(['leave', key, leftPresences]));
  await subscribed(watching);
  await until(() => events.includes('sync'), 'the first sync');

  const joining = factory.channel(`order:${order}`).on('presence', { event: 'sync' }, () => {});
  await subscribed(joining);
  // a client cannot appear as someone else: the server sets who it is
  assert.equal(await joining.track({ status: 'viewing', user_id: userId('buyer@sleek.test'), user_name: 'Someone else' }), 'ok');

  const staff = userId('factory@sleek.test');
  await until(() => events.some((e) => e[0] === 'join' && e[1] === staff), 'the join');
  const state = watching.presenceState();
  assert.deepEqual(Object.keys(state), [staff]);
  assert.equal(state[staff].length, 1);
  assert.equal(state[staff][0].status, 'viewing');
  assert.equal(state[staff][0].user_id, staff);
  assert.equal(state[staff][0].user_name, userName('factory@sleek.test'));
  assert.ok(state[staff][0].presence_ref);
  // the one tracking sees itself too
  await until(() => Object.keys(joining.presenceState()).includes(staff), 'its own presence');

  // tracking again replaces; the connection ending removes it
  await joining.track({ status: 'typing' });
  await until(() => watching.presenceState()[staff]?.[0]?.status === 'typing', 'the update');
  assert.equal(watching.presenceState()[staff].length, 1);
  factory.disconnect();
  await until(() => events.some((e) => e[0] === 'leave' && e[1] === staff) && !(staff in watching.presenceState()), 'the leave');
  buyer.disconnect();
});

test('a user topic is for that user only', async () => {
  const buyer = await client('buyer@sleek.test');
  const other = await client('buyer2@sleek.test');
  const me = userId('buyer@sleek.test');
  const heard = [];
  await subscribed(buyer.channel(`user:${me}`).on('broadcast', { event: 'typing' }, (m) => heard.push(m)));
  const error = await refusal(other.channel(`user:${me}`).on('broadcast', { event: 'typing' }, () => {}));
  assert.match(String(error?.message), new RegExp(`you may not join user:${me}: it is only for that user`));
  const bad = await refusal(other.channel('user:nobody'));
  assert.match(String(bad?.message), /user:<id> takes a user id/);
  buyer.disconnect();
  other.disconnect();
});

test('sending from the server: HTTP (authorized like a join) and SQL (after commit only)', async () => {
  const order = ORDER();
  const factory = await client('factory@sleek.test');
  const heard = [];
  await subscribed(factory.channel(`order:${order}`).on('broadcast', { event: '*' }, (m) => heard.push(m)));

  const buyer = await client('buyer@sleek.test');
  const channel = buyer.channel(`order:${order}`);
  await channel.httpSend('note', { via: 'httpSend' });
  const batch = await fetch(`${base}/realtime/v1/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await token('buyer@sleek.test')}` },
    body: JSON.stringify({ messages: [{ topic: `order:${order}`, event: 'note', payload: { via: 'batch' } }] }),
  });
  assert.equal(batch.status, 202);
  await until(() => heard.length === 2, 'both HTTP broadcasts');
  assert.deepEqual(heard.map((m) => m.payload.via).sort(), ['batch', 'httpSend']);

  const outsider = await client('buyer2@sleek.test');
  await assert.rejects(outsider.channel(`order:${order}`).httpSend('note', { via: 'outsider' }), /forbidden/);
  const refused = await fetch(`${base}/realtime/v1/api/broadcast/order:${order}/events/note`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${await token('buyer2@sleek.test')}` },
    body: JSON.stringify({ via: 'outsider' }),
  });
  assert.equal(refused.status, 403);
  assert.match((await refused.json()).message, new RegExp(`you may not send to order:${order}`));
  const anonymous = await fetch(`${base}/realtime/v1/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ topic: `order:${order}`, event: 'note', payload: {} }] }),
  });
  assert.equal(anonymous.status, 401);
  assert.equal((await anonymous.json()).error, 'unauthorized');

  sql(`begin; select realtime_broadcast('order:${order}', 'note', '{"via":"rolled back"}'); rollback;`);
  sql(`begin; select realtime_broadcast('order:${order}', 'note', '{"via":"sql"}'); commit;`);
  await until(() => heard.length === 3, 'the committed SQL broadcast');
  assert.equal(heard[2].payload.via, 'sql');
  assert.ok(!heard.some((m) => m.payload.via === 'rolled back' || m.payload.via === 'outsider'));
  for (const c of [factory, buyer, outsider]) c.disconnect();
});

test('when the order moves to another factory, its old staff are put out of the room', async () => {
  const order = sql("select id from orders where product = 'Wool overcoat'");
  const staff = await client('factory@sleek.test');
  const statuses = [];
  const heard = [];
  const room = staff.channel(`order:${order}`).on('broadcast', { event: '*' }, (m) => heard.push(m));
  await new Promise((resolve) =>
    room.subscribe((status) => {
      statuses.push(status);
      if (status === 'SUBSCRIBED') resolve();
    }),
  );
  sql(`update orders set factory_id = (select id from factories where name = 'Porto Stitch Works') where id = '${order}'`);
  await until(() => statuses.includes('CLOSED') || statuses.includes('CHANNEL_ERROR'), 'the room to close for the old factory');
  sql(`select realtime_broadcast('order:${order}', 'note', '{"after":"move"}')`);
  const newStaff = await client('factory2@sleek.test');
  const newHeard = [];
  await subscribed(newStaff.channel(`order:${order}`).on('broadcast', { event: '*' }, (m) => newHeard.push(m)));
  sql(`select realtime_broadcast('order:${order}', 'note', '{"after":"join"}')`);
  await until(() => newHeard.length === 1, 'the new factory hears the room');
  assert.equal(heard.length, 0, 'the old factory heard nothing after the move');
  staff.disconnect();
  newStaff.disconnect();
});

test('broadcasts and presence updates are rate limited per connection, with a reason', async () => {
  const order = ORDER();
  const buyer = await client('buyer@sleek.test');
  const room = buyer.channel(`order:${order}`, { config: { broadcast: { ack: true } } });
  await subscribed(room);
  const replies = await Promise.all(Array.from({ length: 60 }, (_, n) => room.send({ type: 'broadcast', event: 'burst', payload: { n } })));
  assert.ok(replies.filter((r) => r === 'ok').length >= 40, 'a burst of twice the rate goes through');
  assert.ok(replies.includes('error'), 'the rest is refused');
  const tracks = await Promise.all(Array.from({ length: 20 }, (_, n) => room.track({ n })));
  assert.ok(tracks.includes('ok') && tracks.includes('error'));
  buyer.disconnect();
});

test('HTTP broadcasts are rate limited per person, with a 429 and a reason', async () => {
  const order = ORDER();
  const tokens = { buyer: await token('buyer@sleek.test'), factory: await token('factory@sleek.test') };
  const send = (who) => fetch(`${base}/realtime/v1/api/broadcast/order:${order}/events/burst`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[who]}` },
    body: JSON.stringify({ n: 1 }),
  });
  const responses = await Promise.all(Array.from({ length: 60 }, () => send('buyer')));
  const statuses = responses.map((r) => r.status);
  assert.ok(statuses.filter((s) => s === 202).length >= 20, 'a burst at the rate goes through');
  const limited = responses.find((r) => r.status === 429);
  assert.ok(limited, 'the rest is refused');
  assert.equal(limited.headers.get('retry-after'), '1');
  const body = await limited.json();
  assert.equal(body.error, 'rate_limited');
  assert.match(body.message, /broadcasts per second per person/);
  // someone else who may send there is not held back by it
  assert.equal((await send('factory')).status, 202);
  // a batch larger than a burst could never pass: a clear refusal, not "try again"
  const batch = await fetch(`${base}/realtime/v1/api/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens.factory}` },
    body: JSON.stringify({ messages: Array.from({ length: 50 }, (_, n) => ({ topic: `order:${order}`, event: 'burst', payload: { n } })) }),
  });
  assert.equal(batch.status, 422);
  assert.match((await batch.json()).message, /a batch holds at most 40 messages/);
});
