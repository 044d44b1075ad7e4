// Drives a real Threadline server with the official @supabase/realtime-js
// client, unchanged: subscribe with a filter, receive INSERT, UPDATE and
// DELETE in the documented shapes, and see CHANNEL_ERROR for a bad filter.
//
// Needs DATABASE_URL (a fresh database with logical decoding; scripts/test
// provides one) and the debug server binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) throw new Error('DATABASE_URL is not set: run ./scripts/test');
const port = Number(process.env.REALTIME_JS_PORT ?? 3200);
const base = `http://127.0.0.1:${port}`;
let server;

function sql(statement) {
  return execFileSync('psql', [databaseUrl, '-v', 'ON_ERROR_STOP=1', '-qtAc', statement], { encoding: 'utf8' }).trim();
}

async function until(condition, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  server = spawn('./target/debug/threadline', ['serve'], {
    cwd: new URL('../../', import.meta.url).pathname,
    env: { ...process.env, DATABASE_URL: databaseUrl, LEPTOS_SITE_ADDR: `127.0.0.1:${port}`, THREADLINE_DEMO: '1', RUST_LOG: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  await until(() => fetch(`${base}/healthz`).then((r) => r.ok, () => false), 'the server to start', 120_000);
});

after(() => server?.kill('SIGTERM'));

async function token(email) {
  const response = await fetch(`${base}/api/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: 'threadline' }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).access_token;
}

async function client(email, options = {}) {
  const realtime = new RealtimeClient(`ws://127.0.0.1:${port}/realtime/v1`, { transport: WebSocket, params: { apikey: 'unused' }, ...options });
  await realtime.setAuth(await token(email));
  return realtime;
}

function subscribed(channel) {
  return new Promise((resolve, reject) =>
    channel.subscribe((status, error) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(error ?? new Error(status));
    }),
  );
}

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

test('an invalid filter yields CHANNEL_ERROR with the reason', async () => {
  const realtime = await client('buyer@sleek.test');
  const channel = realtime
    .channel('bad-filter')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'orders', filter: 'quantity=like.5' }, () => {});
  const error = await new Promise((resolve) =>
    channel.subscribe((status, err) => {
      if (status === 'CHANNEL_ERROR') resolve(err);
    }),
  );
  assert.match(String(error?.message), /invalid filter: unknown operator "like"/);
  realtime.disconnect();
});

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
