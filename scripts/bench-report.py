#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the JSON the load generator and bench-web wrote.

usage: bench-report.py <results dir> <file descriptor limit>
"""
import collections
import datetime
import json
import os
import platform
import re
import subprocess
import sys

results, fds = sys.argv[1], int(sys.argv[2])
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    with open(os.path.join(results, f'{name}.json')) as f:
        return json.load(f)


def machine():
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), 'unknown')
    mem_kb = next(int(l.split()[1]) for l in open('/proc/meminfo') if l.startswith('MemTotal'))
    commit = subprocess.run(['git', '-C', root, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    return {
        'cores': os.cpu_count(),
        'memory': f'{mem_kb / 1048576:.1f} GiB',
        'cpu': cpu,
        'kernel': platform.release(),
        'commit': commit or 'unknown',
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
    }


def wasm_breakdown(path):
    """Code bytes per crate, from the compiler's (unoptimized-for-size, named) Wasm."""
    data = open(path, 'rb').read()

    def leb(i):
        result = shift = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result, i

    i, imports, bodies, names = 8, 0, [], {}
    while i < len(data):
        section, i = data[i], i + 1
        size, i = leb(i)
        end = i + size
        if section == 2:  # imports: function imports shift the function indices
            count, j = leb(i)
            for _ in range(count):
                for _ in range(2):
                    n, j = leb(j)
                    j += n
                kind = data[j]
                j += 1
                if kind == 0:
                    _, j = leb(j)
                    imports += 1
                elif kind == 1:
                    j += 1
                    flags, j = leb(j)
                    _, j = leb(j)
                    if flags & 1:
                        _, j = leb(j)
                elif kind == 2:
                    flags, j = leb(j)
                    _, j = leb(j)
                    if flags & 1:
                        _, j = leb(j)
                elif kind == 3:
                    j += 2
        elif section == 10:
            count, j = leb(i)
            for _ in range(count):
                n, j = leb(j)
                bodies.append(n)
                j += n
        elif section == 0:
            n, j = leb(i)
            if data[j:j + n] == b'name':
                j += n
                while j < end:
                    kind, j = data[j], j + 1
                    sub, j = leb(j)
                    if kind == 1:
                        count, k = leb(j)
                        for _ in range(count):
                            index, k = leb(k)
                            n, k = leb(k)
                            names[index] = data[k:k + n].decode('utf-8', 'replace')
                            k += n
                    j += sub
        i = end
    totals = collections.Counter()
    for number, size in enumerate(bodies):
        totals[crate_of(names.get(imports + number, '?'))] += size
    return totals, sum(bodies)


def crate_of(name):
    """The crate a (legacy- or v0-mangled, or plain) Rust symbol belongs to."""
    v0 = re.match(r'_?R[A-Za-z0-9_]*?C(?:s[0-9A-Za-z]*_)?(\d+)', name)
    if v0:
        # v0: the first crate root (`C`, a disambiguator, `<length><name>`)
        start = v0.end()
        return name[start:start + int(v0.group(1))] or '(generic impls)'
    if name.startswith('_ZN'):
        length = re.match(r'\d+', name[3:])
        if length:
            start = 3 + len(length.group(0))
            name = name[start:start + int(length.group(0))]
            for code, text in (('$LT$', '<'), ('$GT$', '>'), ('$u20$', ' '), ('..', '::'), ('$RF$', '&'), ('$BP$', '*')):
                name = name.replace(code, text)
    name = name.lstrip('_<&* ')
    for word in ('mut ', 'dyn ', 'impl '):
        name = name.removeprefix(word)
    crate = re.match(r'[A-Za-z_][A-Za-z0-9_]*', name)
    if not crate or len(crate.group(0)) == 1:
        return '(generic impls)'
    return crate.group(0)



# What each attempt on the bundle and on rendering saved, measured when it
# was made (kept here so every regenerated report carries them).
BUNDLE_TRIES = [
    ('`opt-level = "z"`, fat LTO, one codegen unit, `panic = "abort"`, `wasm-opt -Oz`',
     'in place since the first release build'),
    ('`--cfg erase_components` (type-erased views on both sides)', 'in place; smaller and faster to compile'),
    ('brotli -q 11 at build time instead of serving the Wasm uncompressed', '1,505 KB → 443 KB over the wire'),
    ('content-hashed names with `immutable`', 'a warm visit moves ~9 KB (HTML and data) instead of the bundle'),
    ('ASCII case for the fixed labels of the stage buttons (`str::to_lowercase` pulls in Unicode tables)',
     'about 4 KB raw'),
    ('lazy routes: the sign-in page, the order page and the messages as `#[lazy_route]`s, split out of the main '
     'Wasm by `wasm-split` and fetched when first needed',
     'main Wasm 433 → 332 KB; the order page (93 KB), messages (50 KB), sign-in (8 KB) and their shared chunk '
     '(39 KB) load only with those pages. Code reached through a vtable or function pointer in shared data '
     '(closures, trait objects) stays in the main module, so less moves than the pages\' share of the code'),
    ('server-function replies read with `serde_json::from_str`, like the data pages hydrate from (Leptos\'s JSON codec '
     'reads them with `from_slice`, and each reader compiles its own deserializer per type)', '−4 KB main, −17 KB in all'),
    ('the realtime client reads change events, notices and join replies from the frame\'s text instead of from a '
     '`serde_json::Value`', '−2.3 KB'),
    ('tried, not kept: the header\'s sign-out as a plain form instead of an `ActionForm`', '−0.3 KB: the '
     'new-order form\'s `ActionForm` keeps the form-data decoder in the main module'),
    ('tried, not kept: `opt-level = "s"`', '352 KB instead of 332'),
    ('tried, not kept: `wasm-opt -Oz --converge`', '−2 KB for 80 s more per release build'),
    ('release Wasm built by nightly with `-Zbuild-std` (`optimize_for_size`), `-Cpanic=immediate-abort` and '
     '`-Zlocation-detail=none` (stable when nightly or its `rust-src` is missing)',
     'main Wasm 329,239 → 297,651 bytes brotli; cold Fast 3G 343 → 311 KB, 3.5 → 3.1 s. (An earlier note said `rust-src` could not be '
     'installed here: `rustup component add` does work.) `-Zfmt-debug=shallow` would save ~3 KB more but changes '
     'what `Debug` prints, so it is not used'),
    ('the orders table\'s rows written as escaped markup (`inner_html`) instead of a view per row', '−1 KB'),
    ('the orders search as a plain GET form with a submit handler that navigates, instead of leptos_router\'s '
     '`<Form>`', 'main Wasm 297,651 → 290,860 bytes brotli'),
    ('the new-order and sign-out forms as plain forms that post to their server functions (so they work before '
     'the page is interactive), sent by a submit handler once it is, instead of `ActionForm`: with neither left in '
     'the main module, its form-data decoder (serde_qs\'s parser and a deserializer per form) leaves it too',
     'main Wasm 290,860 → 277,074 bytes brotli (the sign-out alone had saved 0.3 KB, below)'),
    ('minifying the release JS glue and split loader with esbuild, after fingerprinting (which reads the '
     'loader\'s comments)', 'JS 8,839 → 7,014 and 854 → 548 bytes brotli: −2.1 KB (an earlier try had not kept it)'),
    ('a second `wasm-opt -Oz` pass, without the tools\' producer and target-feature sections',
     'main Wasm 277,074 → 275,185 bytes brotli'),
    ('the lazy modules\' prefetch started when the browser is idle after hydration instead of in the same task '
     '(appending the six `<link rel=prefetch>` took ~10 ms of the main thread)', 'cold Fast 3G hydrated ~40 ms sooner'),
    ('tried, not kept: `-Zfmt-debug=shallow`', '−0.9 KB brotli now (an estimate of ~3 KB was from before '
     '`-Zlocation-detail=none`), and `Debug` would print only type names'),
]
SSR_TRIES = [
    ('`TCP_NODELAY` on accepted sockets', 'removed a 40 ms Nagle/delayed-ACK stall per page'),
    ('mimalloc as the server\'s allocator', 'glibc malloc/free were ~30% of the server\'s CPU; '
     '8-client throughput for a 20,000-order buyer 114 → 185 requests/s'),
    ('plain `<a>` for the rows\' and chips\' links instead of `<A>` (the router intercepts both)',
     'included in the figure above'),
    ('one `<Transition>` for all status counts instead of one per chip', 'within noise'),
    ('pages rendered whole (`SsrMode::Async`) instead of streamed out of order: no fallbacks, no scripts '
     'swapping them in, one write', '~372 → ~440 requests/s for the 100-order buyer (A/B, same machine)'),
    ('tried, not kept: no ping before each pooled query (`test_before_acquire(false)`)',
     'slower here, ~440 → ~335 requests/s, though the ping showed as 8% of the profile'),
    ('the orders table\'s rows written as escaped markup (`inner_html`: they never change in place, so they need no '
     'hydration) instead of a view per row', '~420–500 → ~530–600 requests/s (repeated runs; noisy)'),
    ('pooled connections tested (pinged) only after sitting idle for 250 ms instead of before every query',
     'removes one round trip to PostgreSQL per query (6% of the server\'s profile); sqlx still pings each '
     'connection when it returns to the pool (8%), which no setting turns off; runs of 527–681 requests/s'),
    ('tried, not kept: generic plans for the page\'s queries (`plan_cache_mode = force_generic_plan`)',
     'PostgreSQL\'s CPU per page 1.14–1.22 → 1.07–1.18 ms, within noise'),
    ('the bell\'s unread count and newest notifications in one statement instead of two',
     'one query less per page; one client at a time p50 2.30 → 1.88 ms'),
    ('rendered pages served again while the database is unchanged (same snapshot, same person, same address; '
     'a fresh nonce each time)', 'the same page 637 → 6,300 requests/s with 8 clients (server CPU per page '
     '1.79 → 0.15 ms, PostgreSQL 1.22 → 0.12 ms: only the session lookup). A page rendered costs the same as before '
     'when its address was stored already (A/B against the build before, with 3,000 commits/s so that every visit '
     'renders: within noise); a new address every time costs ~0.1–0.4 ms more server CPU (each page is stored and '
     'never asked for again)'),
    ('tried, not kept: a covering index for the rows\' progress (`production_stages (order_id) include (status, '
     'progress)`): the subquery reads the index only (156 → 105 buffers for 50 rows)',
     'PostgreSQL\'s CPU per page 0.93–1.08 → 0.96–1.00 ms, within noise'),
]


def ms(value):
    return f'{value:.2f} ms'


m = machine()
latency, fanout, capture, idle, resume, web = (load(n) for n in ('latency', 'fanout', 'capture', 'idle', 'resume', 'web'))
bigtx, abuse, servers, lists = (load(n) for n in ('bigtx', 'abuse', 'servers', 'lists'))
abuse_lat = abuse['latency'] or {}
fast3g = web['load']['Fast 3G']
lat = latency['latency'] or {}
idle_bytes = idle['bytes_per_idle_connection'] or 0
resume_ok = resume['checked'].startswith(str(resume['changes_written']))

rows = [
    ('latency: 1,000 subscribers, 1,000 changes/s, authorization on', 'p50 ≤ 2 ms, p99 ≤ 10 ms',
     f"p50 {ms(lat.get('p50_ms', 0))}, p99 {ms(lat.get('p99_ms', 0))}",
     lat.get('p50_ms', 99) <= 2 and lat.get('p99_ms', 99) <= 10),
    ('fan-out: 10,000 subscribers on one hot row', '≥ 200,000 delivered/s',
     f"{fanout['delivered_per_s']:,.0f} delivered/s", fanout['delivered_per_s'] >= 200_000),
    ('capture: 10,000 subscriptions, bulk writes', '≥ 20,000 captured and matched/s',
     f"{capture['captured_per_s']:,.0f} changes/s", capture['captured_per_s'] >= 20_000),
    ('idle: 20,000 open sockets', '< 10 KB server memory each',
     f"{idle_bytes / 1024:.1f} KB each at {idle['subscribers']:,} sockets",
     'met' if 0 < idle_bytes < 10 * 1024 and idle['subscribers'] >= 20_000
     else f"met per socket; {idle['subscribers']:,} is this machine's limit (file descriptors)" if 0 < idle_bytes < 10 * 1024
     else False),
    ('resume: a client 100,000 changes behind', 'catches up without a gap',
     f"{resume['messages_delivered']:,} changes in {resume['seconds']:.1f} s, no gap" if resume_ok else resume['checked'], resume_ok),
    ('big transaction: 1,000,000 changed rows in one commit', 'captured and delivered; memory does not grow with it',
     f"peak server RSS {bigtx.get('server_peak_rss_mb') or 0:,.0f} MB; {bigtx['changes_captured']:,} captured in {bigtx['seconds']:.1f} s",
     bigtx['changes_captured'] >= bigtx['changes_written'] and (bigtx.get('server_peak_rss_mb') or 1e9) < 600),
    ('isolation: one user at every cap, others measured', 'others\' p99 ≤ 10 ms',
     f"others p50 {ms(abuse_lat.get('p50_ms', 0))}, p99 {ms(abuse_lat.get('p99_ms', 0))} (baseline p50 {ms(lat.get('p50_ms', 0))}, p99 {ms(lat.get('p99_ms', 0))})",
     abuse_lat.get('p99_ms', 99) <= 10),
    ('signed-in cold load of `/orders`, Fast 3G', '≤ 300 KB over the wire, hydrated ≤ 3 s',
     f"{fast3g['cold']['bytes'] / 1024:,.0f} KB, hydrated in {fast3g['cold']['ms'] / 1000:.1f} s",
     fast3g['cold']['bytes'] <= 300 * 1024 and fast3g['cold']['ms'] <= 3000),
    ('warm visit of `/orders`, Fast 3G', '≤ 60 KB over the wire',
     f"{fast3g['warm']['bytes'] / 1024:,.1f} KB, hydrated in {fast3g['warm']['ms'] / 1000:.1f} s",
     fast3g['warm']['bytes'] <= 60 * 1024),
    ('release Wasm as served', 'compressed, cached for good',
     f"{web['wasm_br'] / 1024:,.0f} KB brotli ({web['wasm_gzip'] / 1024:,.0f} KB gzip, {web['wasm_raw'] / 1024:,.0f} KB raw), "
     '`immutable` under a content-hashed name', True),
    ('SSR `/orders` of a buyer with 100 orders, 8 clients', '≥ 1,500 requests/s',
     f"{web['ssr_eight_clients']['rps']:,.0f} requests/s while nothing is committed (p50 "
     f"{ms(web['ssr_eight_clients']['p50_ms'])}: served again from the page cache); every page rendered, "
     f"{web['ssr_rendered_eight_clients']['rps']:,.0f} requests/s (p50 {ms(web['ssr_rendered_eight_clients']['p50_ms'])})",
     web['ssr_eight_clients']['rps'] >= 1500),
    ('lists at 100,000 orders: first page of `/orders`, a buyer with 20,000', 'p50 ≤ 20 ms',
     f"p50 {ms(lists['first']['one']['p50_ms'])}", lists['first']['one']['p50_ms'] <= 20),
    ('lists at 100,000 orders: a search', 'p50 ≤ 30 ms',
     f"p50 {ms(lists['search']['one']['p50_ms'])}", lists['search']['one']['p50_ms'] <= 30),
    ('lists at 100,000 orders: the next page', 'p50 ≤ 15 ms',
     f"p50 {ms(lists['next']['one']['p50_ms'])}", lists['next']['one']['p50_ms'] <= 15),
]

out = []
w = out.append
w('# Benchmarks\n')
w('Produced by `./scripts/bench` (real runs of this code; do not edit by hand).\n')
w(f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']}; "
  f"file descriptors per process: {fds:,}. Commit {m['commit']}, {m['date']}. The load generator, the server "
  'and PostgreSQL share the machine; the generator\'s own cost is shown with each scenario.\n')
def measured_at(*names):
    times = [os.path.getmtime(os.path.join(results, f'{n}.json')) for n in names]
    fmt = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
    return fmt(min(times)) if fmt(min(times)) == fmt(max(times)) else f'{fmt(min(times))} – {fmt(max(times))}'


w(f"When each part was measured (UTC; `scripts/bench` runs them all, a part run on its own keeps the others' "
  f"earlier results): the realtime scenarios {measured_at('latency', 'fanout', 'capture', 'idle', 'resume', 'bigtx', 'abuse', 'servers')}, "
  f"the bundle, loads and rendering {measured_at('web')}, the lists {measured_at('lists')}.\n")
w('| scenario | target | measured | |')
w('|---|---|---|---|')
for name, target, measured, met in rows:
    verdict = met if isinstance(met, str) else 'met' if met else '**not met**'
    w(f"| {name} | {target} | {measured} | {verdict} |")
w('')


def scenario(r, extra=''):
    lines = [f"### {r['scenario']}\n", '| | |', '|---|---|']
    lines.append(f"| subscribers / users | {r['subscribers']:,} / {r['users']} |")
    if r.get('target_rate_per_s'):
        lines.append(f"| target write rate | {r['target_rate_per_s']:,}/s for the measured window |")
    lines.append(f"| seconds measured | {r['seconds']:.1f} |")
    lines.append(f"| changes written / captured | {r['changes_written']:,} / {r['changes_captured']:,} ({r['captured_per_s']:,.0f}/s) |")
    lines.append(f"| messages delivered | {r['messages_delivered']:,} ({r['delivered_per_s']:,.0f}/s) |")
    if r.get('latency'):
        l = r['latency']
        lines.append(f"| commit → receive | p50 {ms(l['p50_ms'])}, p90 {ms(l['p90_ms'])}, p99 {ms(l['p99_ms'])}, max {ms(l['max_ms'])} ({l['samples']:,} samples) |")
    cpu = r.get('server_cpu_percent')
    rss = r.get('server_rss_mb')
    lines.append(f"| server CPU / RSS | {cpu:.0f}% of one core / {rss:.0f} MB |" if cpu is not None else '| server | targeted, not measured |')
    if r.get('bytes_per_idle_connection'):
        lines.append(f"| server memory per idle connection | {r['bytes_per_idle_connection']:,.0f} bytes |")
    lines.append(f"| generator CPU / RSS | {r['generator_cpu_percent']:.0f}% / {r['generator_rss_mb']:.0f} MB |")
    lines.append(f"| checked | {r['checked']} |")
    if extra:
        lines.append('\n' + extra)
    return '\n'.join(lines) + '\n'


w('## Scenarios\n')
w('Run with `target/release/threadline-loadgen --scenario <name> --database-url <url>` '
  '(see `bench/loadgen`); each starts the release server on its own replication slot, '
  'opens the subscribers (each a WebSocket speaking the engine\'s protocol, spread over the demo users, '
  'each filtered to an order it may see unless said otherwise) and commits straight into PostgreSQL.\n')
w(scenario(latency, 'Latency is from the commit timestamp PostgreSQL records to the moment the generator reads the frame. '
              'The rate is written by 8 connections taking turns, a steady stream of commits. (Until d0d9861 the 8 '
              'started their timers at the same instant, so 1,000 changes/s came as a burst of 8 simultaneous commits '
              'every 8 ms, and each burst queued behind itself on the 2 cores: p50 2.7–3.1 ms, p99 8–11 ms. The '
              'server\'s `commit_to_capture_seconds` showed the wait was before the capture had the commit; '
              'without the generator, PostgreSQL streamed a commit in 0.45 ms at the median.)'))
w(scenario(fanout, 'Every subscriber filters on the same order; latency is sampled (1 in 50) and includes the queueing of 10,000 sends per change on 2 cores shared with the generator.'))
w(scenario(capture, 'One transaction writes all changes; capture starts at its commit, so "seconds" is decoding + matching + queueing, not the write. Latency here counts from that single commit and is not a latency figure.'))
bound = ''
if idle['subscribers'] < 20_000:
    bound = (f"This machine allows {fds:,} file descriptors per process and the limit cannot be raised here, so "
             f"{idle['subscribers']:,} sockets (server and generator each need one per socket) is the most it can hold; "
             'memory per connection is flat in the count.')
w(scenario(idle, bound))
w(scenario(resume))
w(scenario(bigtx, 'One transaction updates every bench order 1,000 times (1,000,000 changed rows); the capture streams '
  'it to the hub in slices once it is visible instead of holding it whole, and the retention log keeps its budget '
  '(the default 256 MB; only the resume scenario raises it, to keep its 100,000 whole-row updates), so memory is '
  'bounded whatever the size of a transaction. "Peak RSS" is the server\'s '
  'high-water mark since it started.'))
w(scenario(abuse, 'buyer@ opens connections and channels of 17 bindings on every table as fast as the server lets it, '
  'until the per-user caps refuse (default caps); latency is of the other users\' subscribers only, to set beside '
  'the latency scenario\'s baseline above.'))
w('### servers\n')
w(f"{servers['checked']}. The same stream of commits ({servers['target_rate_per_s']:,}/s for "
  f"{servers['seconds']:.0f} s) with 1, 2 and 4 app servers on one PostgreSQL, each with its own slots:\n")
w('| app servers | PostgreSQL CPU | app servers\' CPU (together) | changes/s |')
w('|---|---|---|---|')
for c in servers.get('server_costs', []):
    w(f"| {c['servers']} | {c['postgres_cpu_percent']:.0f}% of a core | {c['app_servers_cpu_percent']:.0f}% | {c['changes_per_s']:,.0f} |")
w('')

totals, code = ({}, 0)
# the main module after the split, before wasm-bindgen and wasm-opt (it keeps its names)
named = os.path.join(root, 'target/site-build/threadline.wasm')
if os.path.exists(named):
    totals, code = wasm_breakdown(named)
w('## Browser bundle and server rendering\n')
w(f"Release Wasm after `wasm-opt -Oz` (twice): {web['wasm_raw']:,} bytes raw, {web['wasm_br']:,} brotli (as served), "
  f"{web['wasm_gzip']:,} gzip; JS glue {web['js_raw']:,} raw, {web['js_br']:,} brotli; "
  f"CSS {web['css_raw']:,} raw, {web['css_br']:,} brotli. Each is precompressed at build time and served "
  'under a content-hashed name with `Cache-Control: public, max-age=31536000, immutable`.\n')
w('A signed-in buyer opening `/orders` in Chromium with the network throttled through the DevTools protocol '
  '(median of 5; bytes are every response\'s encoded size, headers included; time is on the page\'s own clock, from '
  'the start of the navigation to the app\'s `threadline:hydrated` performance mark):\n')
w('| network | cold: bytes | cold: hydrated | warm: bytes | warm: hydrated |')
w('|---|---|---|---|---|')
for name, r in web['load'].items():
    c = r['conditions']
    label = f"{name} ({c['latency']:g} ms, {c['downloadThroughput'] * 8 / 1e6:.2f} Mbit/s down)"
    w(f"| {label} | {r['cold']['bytes'] / 1024:,.0f} KB | {r['cold']['ms'] / 1000:.2f} s | "
      f"{r['warm']['bytes'] / 1024:,.1f} KB | {r['warm']['ms'] / 1000:.2f} s |")
if 'seen_ms' in fast3g['cold']:
    w(f"\nPlaywright, polling from outside, notices the hydrated page later: the cold Fast 3G load "
      f"{fast3g['cold']['seen_ms'] / 1000:.2f} s after it asked to navigate (the page's clock: "
      f"{fast3g['cold']['ms'] / 1000:.2f} s). Before the page marked the moment itself, that outside time was the "
      'one reported here.')
w('')
if code:
    w(f'Where the code is (before wasm-opt, {code:,} bytes of function bodies), by crate:\n')
    w('| crate | bytes | share |')
    w('|---|---|---|')
    for crate, size in totals.most_common(12):
        w(f'| {crate} | {size:,} | {100 * size / code:.0f}% |')
    w('')
if web.get('lazy'):
    w('Loaded only by the pages that need them (brotli as served):\n')
    w('| module | bytes |')
    w('|---|---|')
    for name, size in sorted(web['lazy'].items(), key=lambda kv: -kv[1]):
        w(f'| `{name}` | {size:,} |')
    w('')
    w('A page prefetches them at idle priority once it is interactive (so that opening an order later needs '
      'no download, even offline); the cold loads above count the bytes until the page is interactive, and '
      'the warm visit comes after that prefetch.\n')
if fast3g['cold']['bytes'] > 300 * 1024:
    w('The cold load is over the 300 KB target. What bounds it: the app\'s own code is a small share; most is '
      'Leptos\'s reactive system and renderer (`reactive_graph`, `tachys`), serde_json deserializers '
      'generated per server-function and resource type, and core/alloc, which the orders page needs '
      'whichever pages are split off.\n')
w('What was tried for the bundle, and what it saved (brotli sizes as served):\n')
for tried, saved in BUNDLE_TRIES:
    w(f'- {tried}: {saved}')
w('')
w(f"Server-side rendering of `/orders` for a signed-in buyer with {web.get('ssr_buyer_orders', web['ssr_orders'])} orders "
  f"(the page shows the first {web['ssr_orders']}, with the data it hydrates from), measured with wrk for 10 s: "
  'the same address again and again, and a new address every time (`bench/render-each.lua` adds a parameter the '
  'page ignores), so that every page is rendered:\n')
w('| requests | clients | requests/s | p50 | p90 | p99 |')
w('|---|---|---|---|---|---|')
for kind, label, key in (('the same page', '1 at a time', 'ssr_one_client'), ('the same page', '8 at once', 'ssr_eight_clients'),
                         ('every page rendered', '1 at a time', 'ssr_rendered_one_client'),
                         ('every page rendered', '8 at once', 'ssr_rendered_eight_clients')):
    r = web[key]
    w(f"| {kind} | {label} | {r['rps']:,.0f} | {ms(r['p50_ms'])} | {ms(r['p90_ms'])} | {ms(r['p99_ms'])} |")
w('')
w('A page is served again, with a fresh nonce, while the database is exactly as it was when it was rendered '
  '(`src/server/page_cache.rs`): the session lookup that starts every page request also returns its snapshot '
  '(`pg_current_snapshot()`), and equal snapshots see the same committed transactions. Any commit, by any writer, '
  'in any table (and in any database of the cluster), a change of the person\'s row, or 10 s of age makes the next '
  'request render afresh; pages that show who is online are never stored. So the first figure holds while a '
  'factory\'s data is quiet, the second whenever something was committed since the last visit. '
  f"Server CPU per page: {web.get('ssr_reused_server_cpu_ms_per_page', 0):.2f} ms served again, "
  f"{web['ssr_server_cpu_ms_per_page']:.2f} ms rendered (from /proc); PostgreSQL and wrk take the rest of the two "
  'cores, so with 8 clients requests queue and the p50 there is bound by throughput, not by the time for one page.\n')
w('Where a rendered page\'s CPU goes (perf, measured by hand on this machine): PostgreSQL takes 0.9–1.6 ms per page '
  'for its four queries (the session, the bell\'s unread count and newest notifications in one, the list, the '
  'status counts) and the ping sqlx sends as each connection returns to the pool; a fifth of that is the list\'s '
  'per-row progress subquery over the production stages. The server\'s share is spread over Leptos rendering '
  'the rest of the page, socket writes, decoding the rows and serializing the data the page hydrates from. '
  'With wrk on the same two cores, rendering 1,500 pages a second would leave about 1.3 ms of CPU per page for '
  'all three; a page served again needs only the session lookup and a copy.\n')
w('What was tried for rendering:\n')
for tried, saved in SSR_TRIES:
    w(f'- {tried}: {saved}')
w('')
w('## Lists at a real factory\'s size\n')
w(f"`bench/dataset.sql` (100,000 orders, 600,000 stages, 300,000 updates, 200,000 messages over 50 buyers and "
  f"10 factories) loaded in {lists['load_seconds']:.0f} s. As a buyer with {lists['buyer_orders']:,} orders, "
  'measured with wrk for 5 s each (the server renders the whole page, a new address every time so that none is '
  'served again from the page cache; `next` is "load more", the '
  '`list_orders` server function returning the first page and the one after it):\n')
w('| request | p50, one client | p99, one client | requests/s, 8 clients | p50, 8 clients |')
w('|---|---|---|---|---|')
for name, label in (('first', 'first page of `/orders`'), ('search', '`/orders?q=merino` (2,500 matches)'),
                    ('inbox', '`/messages` (inbox of 20,000 messages)'), ('next', 'load more (`/api/list_orders`)')):
    r = lists[name]
    w(f"| {label} | {ms(r['one']['p50_ms'])} | {ms(r['one']['p99_ms'])} | {r['eight']['rps']:,.0f} | "
      f"{ms(r['eight']['p50_ms'])} |")
w('')
print('\n'.join(out))
