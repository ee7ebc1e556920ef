#!/usr/bin/env bash
# The web SDK's browser scenarios (web-tests/sdk.mjs): the demo chat page (web/demo/) over the
# package (web/package/) served by `tidemark demo --web`, in the system's Chromium through
# playwright-core (never a downloaded browser). Arguments go to sdk.mjs: --only a,b,
# --screenshot (writes docs/web-demo.png), --http-port N, --ws-port N.
#
# Builds what the page needs: the `tidemark` binary (dev profile) and the package's wasm
# (scripts/build-web.sh), unless TIDEMARK_BIN names a binary and TIDEMARK_SKIP_WEB_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

if [ ! -d web-tests/node_modules/playwright-core ]; then
    echo "== npm ci (web-tests: playwright-core)"
    (cd web-tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

tidemark_bin=${TIDEMARK_BIN:-}
if [ -z "$tidemark_bin" ]; then
    echo "== the tidemark binary"
    cargo build -p tidemark-cli --bin tidemark
    target_dir=${CARGO_TARGET_DIR:-target}
    case $target_dir in /*) ;; *) target_dir=$(pwd)/$target_dir ;; esac
    tidemark_bin=$target_dir/debug/tidemark
fi

if [ "${TIDEMARK_SKIP_WEB_BUILD:-0}" != 1 ]; then
    echo "== the web package's wasm (scripts/build-web.sh)"
    bash scripts/build-web.sh
fi

echo "== web SDK scenarios (headless Chromium, web-tests/sdk.mjs)"
set +e
node --experimental-websocket web-tests/sdk.mjs --tidemark "$tidemark_bin" "$@"
status=$?
set -e
echo "web-sdk-tests.sh: $(( $(date +%s) - started )) s"
exit $status
