#!/usr/bin/env python3
"""Content-hashed names for the browser bundle (called by scripts/lib.sh).

usage: fingerprint.py <built-dir> <pkg-dir>

<built-dir> holds what wasm-split and wasm-bindgen wrote: threadline.js and
threadline_bg.wasm (the main module), __wasm_split.js (the loader of the
lazy routes' code) with its chunk_*.wasm and split_*.wasm, and
threadline.css.

The JS and Wasm files name each other (the main JS imports the loader, the
loader imports the main JS and fetches the chunks), so they are named
together: every one of them gets the same build id, a hash of all their
contents before renaming. A change to any of them changes every name, and a
name never stands for two different contents. The stylesheet has its own
hash.

Writes into <pkg-dir>: the renamed files, __wasm_split_manifest.<id>.json
(which chunks each lazy route needs, so that a page rendered on one of those
routes preloads them), and hash.txt.new, which names them all for the server
(Leptos's HydrationScripts and src/server/assets.rs); the caller renames it
to hash.txt once the compressed copies are written too. Files of earlier
builds are removed. Prints the files to compress, one per line.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

HASHED = re.compile(r'^[^.]+\.[0-9a-f]{16}\.(js|wasm|css|json)(\.br|\.gz)?$')


def digest(*blobs):
    h = hashlib.sha256()
    for blob in blobs:
        h.update(len(blob).to_bytes(8, 'little'))
        h.update(blob)
    return h.hexdigest()[:16]


def prefetch_map(loader):
    """The loader's lazy routes and the chunks each needs.

    wasm-split writes a chunk shared by several routes as
        /* route_a, route_b */
        const __chunk_4 = makeLoad(() => { ... "./chunk_4.wasm" ...
    and a route's own code as
        export const __wasm_split_load_route_a = ... "./split_route_a.wasm" ...
    (or with no fetch at all when the route has no code of its own).
    """
    needs = {}
    pending = None
    for line in loader.splitlines():
        if m := re.fullmatch(r'/\* (.+) \*/', line.strip()):
            pending = [s.strip() for s in m.group(1).split(',')]
        elif (m := re.search(r'"\./(chunk_\d+)\.wasm"', line)) and pending is not None:
            for route in pending:
                needs.setdefault(route, []).append(m.group(1))
            pending = None
        elif m := re.search(r'export const __wasm_split_load_(\w+) =', line):
            needs.setdefault(m.group(1), [])
        elif m := re.search(r'"\./(split_(\w+))\.wasm"', line):
            needs.setdefault(m.group(2), []).append(m.group(1))
    return needs


# A lazy module the browser cannot fetch (the network dropped before the
# prefetch had it) is fetched again instead of reported as failed: Leptos's
# lazy routes take a failed load as a panic, which stops the app. The
# navigation waits, and goes on once the module arrives.
RETRY = '''
// Added by scripts/fingerprint.py: a module that cannot be fetched is tried
// again, at once when the browser is back online, otherwise after 1, 2, 4 ...
// up to 15 seconds, rather than failing the page that needs it. The page
// hears of the wait, and of its end (src/components/page_code.rs).
async function untilLoaded(load) {
    for (let wait = 1000, failed = false; ; wait = Math.min(wait * 2, 15000)) {
        try {
            const loaded = await load();
            if (failed) dispatchEvent(new Event("threadline:module-ready"));
            return loaded;
        } catch (e) {
            console.warn("could not load a module of the page; trying again", e);
            failed = true;
            dispatchEvent(new Event("threadline:module-wait"));
            await new Promise((resolve) => {
                const done = () => {
                    clearTimeout(timer);
                    removeEventListener("online", done);
                    resolve();
                };
                const timer = setTimeout(done, wait);
                addEventListener("online", done);
            });
        }
    }
}
'''


def patient(loader):
    """The loader, with every lazy load retried until it succeeds (RETRY)."""
    call = '            await callee();\n'
    if loader.count(call) != 1:
        sys.exit('fingerprint: the loader\'s wrapAsyncCb is not as expected '
                 '(has the format of wasm-split\'s __wasm_split.js changed?)')
    return loader.replace(call, '            await untilLoaded(callee);\n') + RETRY


def main():
    built, pkg = Path(sys.argv[1]), Path(sys.argv[2])
    js = (built / 'threadline.js').read_text()
    loader = (built / '__wasm_split.js').read_text()
    wasm = (built / 'threadline_bg.wasm').read_bytes()
    css = (built / 'threadline.css').read_bytes()
    lazy = sorted(p.name for p in built.iterdir() if re.fullmatch(r'(chunk|split)_\w+\.wasm', p.name))
    lazy_bytes = {name: (built / name).read_bytes() for name in lazy}

    loader = patient(loader)
    needs = prefetch_map(loader)
    unnamed = {name.removesuffix('.wasm') for name in lazy} - {s for stems in needs.values() for s in stems}
    if unnamed:
        sys.exit(f'fingerprint: the loader does not say which routes need {sorted(unnamed)} '
                 '(has the format of wasm-split\'s __wasm_split.js changed?)')

    build = digest(js.encode(), loader.encode(), wasm,
                   *(n.encode() + b'\0' + lazy_bytes[n] for n in lazy))
    css_hash = digest(css)

    def hashed(stem, ext):
        return f'{stem}.{build}.{ext}'

    # only the import statements: the Wasm's own import object keeps the
    # module name the Wasm was linked with
    if 'from "./__wasm_split.js"' not in js:
        sys.exit('fingerprint: the main JS does not import ./__wasm_split.js (was the Wasm split?)')
    js = js.replace('from "./__wasm_split.js"', f'from "./{hashed("__wasm_split", "js")}"')
    loader = loader.replace('from "./threadline.js"', f'from "./{hashed("threadline", "js")}"')
    for name in lazy:
        stem = name.removesuffix('.wasm')
        loader = loader.replace(f'"./{name}"', f'"./{hashed(stem, "wasm")}"')
    manifest = {route: [f'{stem}.{build}' for stem in stems] for route, stems in needs.items()}

    pkg.mkdir(parents=True, exist_ok=True)
    for old in pkg.iterdir():
        if HASHED.match(old.name):
            old.unlink()
    outputs = {
        hashed('threadline', 'js'): js.encode(),
        hashed('threadline', 'wasm'): wasm,
        hashed('__wasm_split', 'js'): loader.encode(),
        hashed('__wasm_split_manifest', 'json'): json.dumps(manifest, indent=1, sort_keys=True).encode(),
        f'threadline.{css_hash}.css': css,
    }
    for name in lazy:
        outputs[hashed(name.removesuffix('.wasm'), 'wasm')] = lazy_bytes[name]
    for name, data in outputs.items():
        (pkg / name).write_bytes(data)
    (pkg / 'hash.txt.new').write_text(
        f'js: {build}\nwasm: {build}\ncss: {css_hash}\nsplit: {build}\nmanifest: {build}\n')
    print('\n'.join(sorted(n for n in outputs if not n.endswith('.json'))))


if __name__ == '__main__':
    main()
