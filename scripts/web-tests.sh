#!/usr/bin/env bash
# The browser scenarios wasm-bindgen-test cannot run (web-tests/run.mjs: reload, restart,
# quota, eviction, two contexts, the native reference server, the ingest bench), and the size
# of the wasm a page downloads. scripts/check.sh calls it last; it assumes what check.sh
# installs (chromium, clang, the wasm32 target, wasm-bindgen-cli) and installs the rest
# (playwright-core from web-tests/package-lock.json; it never downloads a browser).
#
# Builds once: the harness's wasm in the `wasm-release` profile (both file layers) and, unless
# TIDEMARK_SERVER_BIN names one, the `tidemark-server` binary in the dev profile, which
# `cargo test --workspace --all-features` has already built by then (so this is a no-op there).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

if [ ! -d web-tests/node_modules/playwright-core ] || [ ! -d web-tests/node_modules/typescript ] \
    || [ ! -d web-tests/node_modules/sql.js ]; then
    echo "== npm ci (web-tests: playwright-core, typescript, sql.js)"
    (cd web-tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

echo "== the web SDK's TypeScript declarations (tsc --noEmit --strict on web-tests/sdk-types.ts)"
web-tests/node_modules/.bin/tsc --noEmit --strict --target es2022 --module es2022 \
    --moduleResolution bundler --lib es2022,dom web-tests/sdk-types.ts

echo "== the reference server binary"
server_bin=${TIDEMARK_SERVER_BIN:-}
if [ -z "$server_bin" ]; then
    cargo build -p tidemark-server --features net --bin tidemark-server
    server_bin=$(pwd)/target/debug/tidemark-server
fi

echo "== the harness's wasm (wasm-release: opt-level z, LTO, both file layers)"
export CFLAGS_wasm32_unknown_unknown="${CFLAGS_wasm32_unknown_unknown:--fdouble-square-bracket-attributes}"
cargo build --target wasm32-unknown-unknown --profile wasm-release -p tidemark-web-tests
pkg=web-tests/pkg
rm -rf "$pkg"
wasm-bindgen --target web --out-dir "$pkg" target/wasm32-unknown-unknown/wasm-release/tidemark_web_tests.wasm

# What a page downloads for the engine, the store (SQLite, both file layers) and the transport.
wasm="$pkg/tidemark_web_tests_bg.wasm"
raw=$(stat -c %s "$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
echo "wasm size (after wasm-bindgen): $raw bytes raw, $gz bytes gzip -9"
if command -v wasm-opt > /dev/null; then
    wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals -o "$pkg/opt.wasm" "$wasm"
    echo "wasm size (wasm-opt -Oz): $(stat -c %s "$pkg/opt.wasm") bytes raw, $(gzip -9 -c "$pkg/opt.wasm" | wc -c) bytes gzip -9"
    rm -f "$pkg/opt.wasm"
else
    echo "wasm size (wasm-opt -Oz): not measured, binaryen is not installed"
fi

echo "== web scenarios (headless Chromium, web-tests/run.mjs)"
set +e
node --experimental-websocket web-tests/run.mjs --pkg "$pkg" --server "$server_bin" "$@"
status=$?
set -e
echo "web-tests.sh: $(( $(date +%s) - started )) s"
exit $status
