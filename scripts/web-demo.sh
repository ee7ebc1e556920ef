#!/usr/bin/env bash
# The web demo in one command: installs what a fresh machine lacks for the wasm build
# (scripts/setup.sh), builds the web SDK (scripts/build-web.sh), then runs
# `tidemark demo --web` with the arguments given (for example --conversations 10000) and
# prints the URL to open. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-web.sh
exec cargo run --release -p tidemark-cli -- demo --web "$@"
