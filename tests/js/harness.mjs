// What every realtime-js test needs: one real Threadline server (the
// debug binary) on a fresh database, SQL, tokens, and clients.
//
// Needs DATABASE_URL (a fresh database with logical decoding; scripts/test
// provides one).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) throw new Error('DATABASE_URL is not set: run ./scripts/test');
const port = Number(process.env.REALTIME_JS_PORT ?? 3200);
export const base = `http://127.0.0.1:${port}`;
let server;

export function sql(statement) {
  return execFileSync('psql', [databaseUrl, '-v', 'ON_ERROR_STOP=1', '-qtAc', statement], { encoding: 'utf8' }).trim();
}

export async function until(condition, what, ms = 20_000) {
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
// a run cut short must not leave the server holding its port
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server?.kill('SIGTERM');
    process.exit(1);
  });
}

export async function token(email) {
  const response = await fetch(`${base}/api/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: 'threadline' }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).access_token;
}

export async function client(email, options = {}) {
  const realtime = new RealtimeClient(`ws://127.0.0.1:${port}/realtime/v1`, { transport: WebSocket, params: { apikey: 'unused' }, ...options });
  await realtime.setAuth(await token(email));
  return realtime;
}

export function subscribed(channel) {
  return new Promise((resolve, reject) =>
    channel.subscribe((status, error) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(error ?? new Error(status));
    }),
  );
}

