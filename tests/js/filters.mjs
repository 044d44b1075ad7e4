// The filter grammar realtime-js's own builder writes: conditions joined by
// commas, every operator it offers, `not.`, PostgREST quoting; what the
// server cannot do is refused with a reason; `select` limits the columns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { postgresChangesFilter as f } from '@supabase/realtime-js';
import { client, sql, subscribed, until } from './harness.mjs';

/** Subscribes one channel per case; returns what each receives. */
async function channels(realtime, cases, name) {
  const received = {};
  await Promise.all(
    Object.entries(cases).map(([label, [filter]]) => {
      received[label] = [];
      const channel = realtime
        .channel(`${name}-${label}`)
        .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'orders', filter }, (p) => received[label].push(p));
      return subscribed(channel);
    }),
  );
  return received;
}

/** Resolves once everything committed before it reached this client. */
async function drained(realtime, buyer) {
  const marker = `marker ${Date.now()} ${Math.random()}`;
  const seen = [];
  const channel = realtime
    .channel(`marker-${marker}`)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'orders', filter: f().eq('product', marker) }, (p) => seen.push(p));
  await subscribed(channel);
  sql(`insert into orders (buyer_id, product, quantity, due_date) values ('${buyer}', '${marker}', 1, current_date + 1)`);
  // one connection's events arrive in commit order: the marker comes last
  await until(() => seen.length === 1, 'the marker row');
}

test("filters built with realtime-js's postgresChangesFilter(): every operator, not. and quoted values", async () => {
  const realtime = await client('buyer@sleek.test');
  const buyer = sql("select id from users where email = 'buyer@sleek.test'");
  const stamp = `${Date.now()}`;
  // every character PostgREST reserves, and a space at the end
  const product = `Crew neck, "heavy" (navy) \\ ${stamp} `;
  const cases = {
    eq: [f().eq('product', product), true],
    eqOther: [f().eq('product', `${product}x`), false],
    neq: [f().neq('product', product), false],
    notEq: [f().not('product', 'eq', product), false],
    gt: [f().gt('quantity', 41), true],
    gte: [f().gte('quantity', 42), true],
    lt: [f().lt('quantity', 42), false],
    lte: [f().lte('quantity', 42), true],
    notGt: [f().not('quantity', 'gt', 100), true],
    in: [f().in('status', ['pending', 'con,firmed']), true],
    inProduct: [f().in('product', ['other', product]), true],
    notIn: [f().not('status', 'in', ['pending', 'shipped']), false],
    like: [f().like('product', `Crew neck, "heavy" (navy) \\\\ ${stamp}%`), true],
    likeCase: [f().like('product', 'crew neck%'), false],
    ilike: [f().ilike('product', `CREW NECK%${stamp}%`), true],
    notLike: [f().not('product', 'like', '%(navy)%'), false],
    match: [f().match('product', `^Crew neck, "heavy" \\(navy\\) .* ${stamp} $`), true],
    matchCase: [f().match('product', '^CREW'), false],
    imatch: [f().imatch('product', '^CREW'), true],
    notMatch: [f().not('product', 'match', '^Denim'), true],
    isNull: [f().is('factory_id', null), true],
    notIsNull: [f().not('factory_id', 'is', null), false],
    isDistinct: [f().isDistinct('status', 'shipped'), true],
    isDistinctNull: [f().isDistinct('factory_id', null), false],
    notIsDistinct: [f().not('status', 'isdistinct', 'pending'), true],
    nullNeverEquals: [f().not('factory_id', 'eq', '6f1c2a3e-0000-4000-8000-00000000000a'), false],
    all: [f().eq('status', 'pending').gt('quantity', 1).like('product', '%(navy)%').is('factory_id', null), true],
    oneFails: [f().eq('status', 'pending').gt('quantity', 100), false],
  };
  const received = await channels(realtime, cases, `grammar-${stamp}`);
  const id = sql(`insert into orders (buyer_id, product, quantity, due_date) values ('${buyer}', $q$${product}$q$, 42, current_date + 10) returning id`);
  await drained(realtime, buyer);
  for (const [label, [filter, expected]] of Object.entries(cases)) {
    const got = received[label].filter((p) => p.new.id === id);
    assert.equal(got.length, expected ? 1 : 0, `${label}: ${filter.build()}`);
    if (expected) assert.equal(got[0].new.product, product);
  }
  realtime.disconnect();
});

test('what the server cannot filter is refused with a reason, never silently accepted', async () => {
  const realtime = await client('buyer@sleek.test');
  const refusals = [
    ['quantity=cs.{1}', /unknown operator "cs"/],
    [f().like('quantity', '4%'), /like needs a text column/],
    [f().is('status', true), /is.true needs a boolean column/],
    [f().match('product', '(a)\\1'), /not a pattern this server can match/],
    [f().eq('colour', 'red'), /there is no column "colour"/],
    [f().gt('quantity', 'ten'), /"ten" is not a valid int4/],
    ['status=eq.pending,', /an empty condition/],
  ];
  for (const [filter, reason] of refusals) {
    const channel = realtime
      .channel(`refused-${Math.random()}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'orders', filter }, () => {});
    const error = await new Promise((resolve) =>
      channel.subscribe((status, err) => {
        if (status === 'CHANNEL_ERROR') resolve(err);
        if (status === 'SUBSCRIBED') resolve(new Error('subscribed'));
      }),
    );
    assert.match(String(error?.message), reason, String(filter));
    await realtime.removeChannel(channel);
  }
  realtime.disconnect();
});

test('select limits the columns of each event; unknown columns are refused', async () => {
  const realtime = await client('buyer@sleek.test');
  const buyer = sql("select id from users where email = 'buyer@sleek.test'");
  const product = `selected ${Date.now()}`;
  const narrow = [];
  const whole = [];
  const channel = realtime
    .channel('select-columns')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'orders', filter: f().eq('product', product), select: ['id', 'quantity'] }, (p) => narrow.push(p))
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'orders', filter: f().eq('product', product) }, (p) => whole.push(p));
  await subscribed(channel);
  const id = sql(`insert into orders (buyer_id, product, quantity, due_date) values ('${buyer}', '${product}', 7, current_date + 3) returning id`);
  await until(() => narrow.length === 1 && whole.length === 1, 'both events');
  assert.deepEqual(narrow[0].new, { id, quantity: 7 });
  assert.equal(whole[0].new.product, product);

  const refused = realtime
    .channel('select-unknown')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'orders', select: ['id', 'colour'] }, () => {});
  const error = await new Promise((resolve) => refused.subscribe((status, err) => status === 'CHANNEL_ERROR' && resolve(err)));
  assert.match(String(error?.message), /select: there is no column "colour"/);
  realtime.disconnect();
});
