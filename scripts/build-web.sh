#!/usr/bin/env bash
# Builds the web SDK's wasm (crate tidemark-web, profile wasm-release: opt-level z, LTO) and
# generates its JavaScript glue into web/package/wasm/ with wasm-bindgen-cli (the version in
# Cargo.lock; scripts/check.sh installs it). Prints what a page downloads: the wasm and the
# package's JavaScript, raw and gzip -9.
set -euo pipefail
cd "$(dirname "$0")/.."
export CFLAGS_wasm32_unknown_unknown="${CFLAGS_wasm32_unknown_unknown:--fdouble-square-bracket-attributes}"
cargo build --target wasm32-unknown-unknown --profile wasm-release -p tidemark-web
out=web/package/wasm
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
    target/wasm32-unknown-unknown/wasm-release/tidemark_web.wasm

# What a page downloads: the module graph index.js -> worker.js -> wasm glue -> wasm.
files=(web/package/index.js web/package/worker.js "$out/tidemark_web.js" "$out/tidemark_web_bg.wasm")
raw=0
gz=0
for f in "${files[@]}"; do
    raw=$(( raw + $(stat -c %s "$f") ))
    gz=$(( gz + $(gzip -9 -c "$f" | wc -c) ))
done
echo "web SDK download (index.js + worker.js + glue + wasm): $raw bytes raw, $gz bytes gzip -9"
page_raw=$raw
page_gz=$gz
for f in web/demo/index.html web/demo/app.js web/demo/style.css; do
    page_raw=$(( page_raw + $(stat -c %s "$f") ))
    page_gz=$(( page_gz + $(gzip -9 -c "$f" | wc -c) ))
done
echo "demo page download (the SDK + index.html, app.js, style.css): $page_raw bytes raw, $page_gz bytes gzip -9"
