#!/usr/bin/env bash
# The native bindings (bindings/, crate tidemark-ffi) from the foreign side: builds the
# cdylib and uniffi-bindgen (from the pinned uniffi, never downloaded), generates the Python
# bindings into target/ (nothing generated is committed), installs pytest if it is missing,
# and runs bindings/tests/python/ against the real reference server, which the suite starts
# itself. Then generates the Kotlin and Swift bindings from the same library, and compiles
# the Kotlin ones when kotlinc is on the PATH (docs/native-sdk.md). Arguments go to pytest.
#
# TIDEMARK_FFI_LIB, TIDEMARK_BINDGEN and TIDEMARK_SERVER_BIN name a built cdylib,
# uniffi-bindgen and tidemark-server to use instead of building them: scripts/check.sh passes
# what `cargo test --workspace --all-features` just built (the cdylib is in target/debug/deps;
# cargo test copies only binaries up), so CI compiles nothing twice.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$(pwd)/$target_dir ;; esac

lib=${TIDEMARK_FFI_LIB:-}
bindgen=${TIDEMARK_BINDGEN:-}
server=${TIDEMARK_SERVER_BIN:-}
if [ -z "$lib" ] || [ -z "$bindgen" ] || [ -z "$server" ]; then
    echo "== the bindings' library, uniffi-bindgen and the server (test profile, into target/debug)"
    # The test profile (opt-level 1) is what `cargo test` builds with: the dependencies built
    # for the Rust tests are reused where their features match.
    cargo build --profile test -p tidemark-ffi -p tidemark-server --all-features \
        --lib --bin uniffi-bindgen --bin tidemark-server
    lib=${lib:-$target_dir/debug/libtidemark_ffi.so}
    bindgen=${bindgen:-$target_dir/debug/uniffi-bindgen}
    server=${server:-$target_dir/debug/tidemark-server}
fi
export TIDEMARK_SERVER_BIN="$server"

generated="$target_dir/uniffi"
rm -rf "$generated"
mkdir -p "$generated"
echo "== generating the Python, Kotlin and Swift bindings into $generated"
for language in python kotlin swift; do
    "$bindgen" generate --library "$lib" --language "$language" --out-dir "$generated/$language" > /dev/null
done
# The Python module loads the library from its own directory.
ln -sf "$lib" "$generated/python/"
export TIDEMARK_FFI_PY_DIR="$generated/python"
# Nothing written into the source tree (no __pycache__ beside the tests).
export PYTHONDONTWRITEBYTECODE=1
find "$generated" -type f -name '*.py' -o -type f -name '*.kt' -o -type f -name '*.swift' | sort | sed 's/^/   /'

# Kotlin: uniffi's Kotlin needs a recent kotlinc (it uses trailing commas, Kotlin 1.4+; 1.9+
# is what is tried here) with JNA and kotlinx-coroutines on KOTLIN_CLASSPATH. Debian's kotlinc
# is 1.3.31 and fails on it; Maven Central is not reachable here (docs/native-sdk.md).
kotlin_version=$(kotlinc -version 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1 || true)
if [ -n "$kotlin_version" ] && printf '1.9.0\n%s\n' "$kotlin_version" | sort -V -C; then
    echo "== compiling the Kotlin bindings (kotlinc $kotlin_version)"
    find "$generated/kotlin" -name '*.kt' -print0 \
        | xargs -0 kotlinc -cp "${KOTLIN_CLASSPATH:-}" -d "$generated/kotlin-classes"
else
    echo "== Kotlin bindings generated, not compiled: no kotlinc 1.9+ on this machine${kotlin_version:+ (found $kotlin_version)}"
fi
if command -v swiftc > /dev/null; then
    echo "== type-checking the Swift bindings (swiftc)"
    swiftc -typecheck -I "$generated/swift" \
        -Xcc -fmodule-map-file="$generated/swift/tidemark_ffiFFI.modulemap" \
        "$generated/swift/tidemark_ffi.swift"
else
    echo "== Swift bindings generated, not compiled: no swiftc on this machine"
fi

if ! python3 -c 'import pytest' 2> /dev/null; then
    echo "== pip install pytest"
    python3 -m pip install --quiet pytest
fi

echo "== python bindings tests (pytest bindings/tests/python)"
set +e
python3 -m pytest bindings/tests/python -p no:cacheprovider "$@" 2>&1 | tee "$generated/pytest.log"
status=${PIPESTATUS[0]}
set -e
# One closing line for scripts/check.sh's summary, from pytest's own ("== 9 passed in 3s ==");
# errors (a fixture that failed) count as failures.
read -r passed failed < <(awk '/^=+ .* in [0-9.]+s/ { p = 0; f = 0
        for (i = 2; i <= NF; i++) { if ($i ~ /^passed/) p = $(i-1); if ($i ~ /^(failed|errors?)/) f += $(i-1) } }
    END { print p + 0, f + 0 }' "$generated/pytest.log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # pytest stopped before its closing line (a collection error, a crash)
fi
echo "python bindings: $passed passed, $failed failed"
echo "python-bindings-tests.sh: $(( $(date +%s) - started )) s"
exit $status
