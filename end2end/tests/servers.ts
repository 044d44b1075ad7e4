import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
/** The metrics token private servers start with. */
const METRICS_TOKEN = 'end2end-metrics';
const databaseUrl = process.env.E2E_DATABASE_URL ?? '';

/** Runs SQL as an outside writer, the way an operator would with psql. */
export function sql(statement: string): string {
  return execFileSync('psql', [databaseUrl, '-v', 'ON_ERROR_STOP=1', '-qtAc', statement], { encoding: 'utf8' }).trim();
}

async function waitFor(check: () => Promise<boolean>, what: string, ms = 60_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * A server of its own (on the shared end-to-end database, with its own
 * replication slot), for tests that restart it or count its subscriptions.
 */
export class PrivateServer {
  private child?: ChildProcess;
  constructor(readonly port: number, readonly slot: string) {}

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.child = spawn(path.join(root, 'target/debug/threadline'), ['serve'], {
      cwd: root,
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        LEPTOS_SITE_ADDR: `127.0.0.1:${this.port}`,
        THREADLINE_REALTIME_SLOT: this.slot,
        THREADLINE_METRICS_TOKEN: METRICS_TOKEN,
        THREADLINE_SIGN_INS_PER_MINUTE: '100000',
        RUST_LOG: 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await waitFor(() => fetch(`${this.url}/healthz`).then((r) => r.ok, () => false), `server on ${this.port}`);
  }

  /** Kills the server with SIGKILL: no clean stop of any kind. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }

  /** A value from the server's /metrics, by name (without the `threadline_realtime_` prefix). */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text();
    const line = text.split('\n').find((l) => l.startsWith(`threadline_realtime_${name} `));
    return Number(line?.split(' ')[1] ?? NaN);
  }

  /** The server's count of live subscriptions. */
  subscriptions(): Promise<number> {
    return this.metric('subscriptions');
  }
}

/** An order of buyer@sleek.test at Dhaka Knitwear, confirmed: ready for production. */
export function confirmedOrder(product: string): string {
  const id = sql(
    `insert into orders (buyer_id, product, quantity, due_date)
     values ((select id from users where email = 'buyer@sleek.test'), '${product}', 120, current_date + 30) returning id`,
  );
  sql(
    `update orders set status = 'confirmed', factory_id = (select id from factories where name = 'Dhaka Knitwear Ltd') where id = '${id}'`,
  );
  return id;
}

/**
 * nginx in front of app servers: all traffic to the first, the others as
 * backups it fails over to when the first is gone.
 */
export class LoadBalancer {
  private child?: ChildProcess;
  private dir = '';
  constructor(readonly port: number, readonly upstreams: number[]) {}

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'threadline-nginx-'));
    const [first, ...rest] = this.upstreams;
    const servers = [
      `server 127.0.0.1:${first} max_fails=1 fail_timeout=30s;`,
      ...rest.map((port) => `server 127.0.0.1:${port} backup;`),
    ].join('\n    ');
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
      .map((name) => `${name}_temp_path ${this.dir}/${name};`)
      .join('\n  ');
    fs.writeFileSync(
      path.join(this.dir, 'nginx.conf'),
      `worker_processes 1;
pid ${this.dir}/nginx.pid;
error_log ${this.dir}/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  ${temp}
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  upstream app {
    ${servers}
  }
  server {
    listen 127.0.0.1:${this.port};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host:$server_port;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 1h;
      proxy_next_upstream error timeout http_502;
    }
  }
}
`,
    );
    this.child = spawn('nginx', ['-c', path.join(this.dir, 'nginx.conf'), '-p', this.dir], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await waitFor(() => fetch(`${this.url}/healthz`).then((r) => r.ok, () => false), `nginx on ${this.port}`);
  }

  async stop() {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
