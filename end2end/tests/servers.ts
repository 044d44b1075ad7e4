import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
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

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
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
