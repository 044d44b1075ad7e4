# Shared set-up steps for scripts/run, scripts/test and scripts/build.
# Each step installs what is missing, skips what is present, and says so.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    fail "need root to run: $* (install it yourself, then rerun)"; fi
}

APT_UPDATED=0
apt_install() { # apt_install <command-or-path> <package>...
  local probe=$1; shift
  if command -v "$probe" >/dev/null 2>&1 || [ -e "$probe" ]; then return 0; fi
  command -v apt-get >/dev/null || fail "please install: $* (no apt-get here)"
  say "installing $* (apt)"
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    apt_install /usr/lib/postgresql/15/bin/initdb postgresql-15
  fi
}

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown Rust target"
    rustup target add wasm32-unknown-unknown
  fi
}

# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly.
ensure_wasm_bindgen() {
  local want
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  if command -v wasm-bindgen >/dev/null && [ "$(wasm-bindgen --version | awk '{print $2}')" = "$want" ]; then
    return 0
  fi
  say "building wasm-bindgen-cli $want (about 2 minutes, once)"
  # not --locked: its lockfile pins a webpki-roots release missing from the registry
  cargo install wasm-bindgen-cli --version "=$want" --quiet
}

# Debian's binaryen (108) breaks release Wasm; npm's is current. esbuild
# minifies the release JS.
WASM_OPT="$ROOT/target/tools/node_modules/.bin/wasm-opt"
ESBUILD="$ROOT/target/tools/node_modules/.bin/esbuild"
ensure_wasm_opt() {
  if [ ! -x "$WASM_OPT" ] || [ ! -x "$ESBUILD" ]; then
    say "installing binaryen (wasm-opt) and esbuild from npm"
    mkdir -p "$ROOT/target/tools"
    npm install --no-audit --no-fund --silent --prefix "$ROOT/target/tools" \
      binaryen@132.0.0 esbuild@0.28.2 >/dev/null
  fi
}

ensure_node_packages() { # ensure_node_packages <dir>
  local dir=$1
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    say "installing npm packages in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
    touch "$dir/node_modules"
  fi
}

# PostgreSQL refuses to run as root, so as root the embedded cluster runs as
# the postgres user, which must be able to reach the data folder. When the
# project sits somewhere it cannot enter (a root-only home), use a folder it can.
bench_slot() { # bench_slot <prefix> <database-url>: a replication slot name of
  # that database's own, so a benchmark server never finds the slot another
  # database's run left behind (or a dev server's, which has the default name)
  local db=${2##*/}
  db=${db%%\?*}
  printf '%s_%s' "$1" "$db" | tr -c 'a-zA-Z0-9_' '_' | tr 'A-Z' 'a-z' | cut -c1-59
}

choose_data_dir() { # choose_data_dir <default-dir> -> sets THREADLINE_DATA_DIR
  local wanted=$1
  if [ -n "${THREADLINE_DATA_DIR:-}" ]; then return 0; fi
  export THREADLINE_DATA_DIR="$wanted"
  if [ "$(id -u)" = 0 ] && id -u postgres >/dev/null 2>&1 \
     && ! runuser -u postgres -- test -x "$ROOT" 2>/dev/null; then
    export THREADLINE_DATA_DIR="/var/lib/threadline/$(printf %s "$ROOT" | sha1sum | cut -c1-10)/$(basename "$wanted")"
    mkdir -p "$THREADLINE_DATA_DIR"
    say "the postgres user cannot enter $ROOT; keeping the database in $THREADLINE_DATA_DIR"
  fi
}

# wasm-split cuts the lazy routes' code out of the main Wasm (into chunks
# fetched when a page first needs them); the version Leptos's macros target.
WASM_SPLIT_VERSION=0.2.4
ensure_wasm_split() {
  if command -v wasm-split-cli >/dev/null \
     && [ -f "$HOME/.cargo/.crates2.json" ] && grep -q "wasm_split_cli_support $WASM_SPLIT_VERSION" "$HOME/.cargo/.crates2.json"; then
    return 0
  fi
  say "building wasm-split $WASM_SPLIT_VERSION (about 2 minutes, once)"
  cargo install wasm_split_cli_support --version "=$WASM_SPLIT_VERSION" --features build-binary --locked --quiet
}

# A release bundle is smaller built by the nightly toolchain, with the
# standard library rebuilt for size and panics aborting at once (no panic
# messages and none of the formatting they need in the Wasm): about 32 KB
# less over the wire. It needs nightly's rust-src; without them, or with
# THREADLINE_STABLE_WASM=1, the stable toolchain builds it as in debug.
nightly_build_std() {
  [ "${THREADLINE_STABLE_WASM:-}" != 1 ] || return 1
  rustup run nightly rustc --version >/dev/null 2>&1 || return 1
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    say "adding rust-src to the nightly toolchain (for a smaller release Wasm)" >&2
    rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || return 1
  fi
}

# build_wasm <debug|release>: the app's Wasm, unsplit; prints its path
build_wasm() {
  local mode=$1
  if [ "$mode" = release ] && nightly_build_std; then
    say "building the browser bundle (release: nightly, std built for size, panics abort)" >&2
    # the flags of .cargo/config.toml's wasm32 target, the panic strategy, and
    # no file names and lines of panics (nothing would print them)
    if CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--cfg erase_components -Clink-args=--emit-relocs -Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none" \
       cargo +nightly build --lib --target wasm32-unknown-unknown --no-default-features --features hydrate \
         --profile wasm-release -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size \
         --target-dir "$ROOT/target/wasm-nightly" >&2; then
      echo "$ROOT/target/wasm-nightly/wasm32-unknown-unknown/wasm-release/threadline.wasm"
      return 0
    fi
    say "the nightly build failed: building with the stable toolchain" >&2
  fi
  local profile=dev dir=debug
  if [ "$mode" = release ]; then profile=wasm-release dir=wasm-release; fi
  say "building the browser bundle ($mode)" >&2
  cargo build --lib --target wasm32-unknown-unknown --no-default-features --features hydrate \
    --profile "$profile" >&2 || return 1
  echo "$ROOT/target/wasm32-unknown-unknown/$dir/threadline.wasm"
}

# build_site <debug|release>: the Wasm bundle, CSS and assets under target/site
build_site() {
  local mode=$1 wasm file
  ensure_wasm_target
  ensure_wasm_bindgen
  ensure_wasm_split
  wasm=$(build_wasm "$mode")
  local site="$ROOT/target/site" built="$ROOT/target/site-build"
  rm -rf "$built" && mkdir -p "$built" "$site/pkg"
  say "splitting the lazy routes out of the Wasm"
  wasm-split-cli "$wasm" "$built" \
    --out-name threadline --target web
  # the split module keeps its exports to the chunks (and their names)
  wasm-bindgen --target web --no-typescript --keep-lld-exports --no-demangle \
    --out-dir "$built" --out-name threadline "$built/threadline.wasm"
  if [ "$mode" = release ]; then
    ensure_wasm_opt
    say "optimizing the Wasm modules with wasm-opt"
    for file in "$built"/threadline_bg.wasm "$built"/chunk_*.wasm "$built"/split_*.wasm; do
      [ -e "$file" ] || continue
      # a second -Oz pass finds about 2 KB more; the tool's producer and
      # target-feature notes are of no use to a browser
      "$WASM_OPT" -Oz -Oz --strip-producers --strip-target-features \
        --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals -o "$file" "$file" \
        2> >(grep -v "unknown name subsection" >&2)
    done
  fi
  cp "$ROOT/style/main.css" "$built/threadline.css"
  cp -r "$ROOT/public/." "$site/"
  fingerprint_bundle "$built" "$site/pkg" "$mode"
}

# fingerprint_bundle <built-dir> <pkg-dir> <debug|release>: content-hashed
# names for the bundle (scripts/fingerprint.py), each file with a brotli
# (.br) and gzip (.gz) form beside it. Release builds compress as hard as
# the tools can.
fingerprint_bundle() {
  local built=$1 pkg=$2 mode=$3 brotli_quality=5 gzip_level=6 name
  apt_install brotli brotli
  if [ "$mode" = release ]; then brotli_quality=11; gzip_level=9; fi
  say "fingerprinting and precompressing the bundle (brotli -q $brotli_quality, gzip -$gzip_level)"
  python3 "$ROOT/scripts/fingerprint.py" "$built" "$pkg" > "$built/outputs.txt"
  while read -r name; do
    # release JS minified (esbuild keeps the modules' export names): about 2 KB
    if [ "$mode" = release ] && [[ $name == *.js ]]; then
      "$ESBUILD" "$pkg/$name" --minify --format=esm --log-level=error --outfile="$pkg/$name" --allow-overwrite
    fi
    brotli -f -q "$brotli_quality" -o "$pkg/$name.br" "$pkg/$name"
    gzip -f -k -n "-$gzip_level" "$pkg/$name"
  done < "$built/outputs.txt"
  # named for the server only once every file it names is in place
  mv "$pkg/hash.txt.new" "$pkg/hash.txt"
}

# build_server <debug|release>
build_server() {
  local mode=$1
  say "building the server ($mode)"
  if [ "$mode" = release ]; then cargo build --release --bin threadline --features ssr
  else cargo build --bin threadline --features ssr; fi
}
