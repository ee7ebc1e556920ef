#!/usr/bin/env bash
# Installs what building Tidemark for the browser needs and a fresh machine lacks: the
# wasm32-unknown-unknown target (rustup), clang (apt: SQLite's C on wasm32) and
# wasm-bindgen-cli at the Cargo.lock version (cargo install, about 3.5 minutes). With
# --browser also chromium and chromium-driver (apt) for the tests in headless Chromium.
# Does nothing for what is there already. Called by scripts/check.sh and scripts/web-demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
    rustup target add wasm32-unknown-unknown
fi

apt_missing=()
command -v clang > /dev/null || apt_missing+=(clang)
if [ "${1:-}" = "--browser" ]; then
    command -v chromium > /dev/null || apt_missing+=(chromium)
    command -v chromedriver > /dev/null || apt_missing+=(chromium-driver)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" apt-get install -y "${apt_missing[@]}"
fi

wasm_bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if ! wasm-bindgen --version 2> /dev/null | grep -q " $wasm_bindgen_version\b" \
    || ! wasm-bindgen-test-runner --version 2> /dev/null | grep -q " $wasm_bindgen_version\b"; then
    # Without --locked: the CLI's own lock file does not build with this toolchain.
    cargo install wasm-bindgen-cli --version "$wasm_bindgen_version" --force
fi
