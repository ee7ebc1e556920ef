#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for FUZZ_SECONDS (default 30), one
# after the other. Fails if a target crashes (panics, hangs past FUZZ_TIMEOUT seconds on one
# input, or runs out of memory); the input is left in fuzz/artifacts/<target>/.
#
# Needs the nightly toolchain and cargo-fuzz (installed from crates.io if missing).
#
#   FUZZ_SECONDS=300 scripts/fuzz.sh                 # a longer campaign
#   scripts/fuzz.sh engine_inputs seq_ranges         # only these targets
#   FUZZ_SANITIZER=address scripts/fuzz.sh           # with ASan (about 3x slower)
#   FUZZ_STRICT=1 scripts/fuzz.sh                    # do not tolerate known bugs (none today)
#
# Each target reads its committed seeds (fuzz/corpus/<target>/) and grows a working corpus
# in fuzz/work/<target>/ (ignored by git, kept between runs). Before fuzzing, every
# reproducer in fuzz/regressions/<target>/ is replayed once.
#
# -len_control=0: the structured targets need inputs of a few hundred bytes from the start
# (libFuzzer otherwise grows the length limit slowly from a few bytes).
#
# The sanitizer defaults to none: every Tidemark crate forbids unsafe code, and SQLite's C is
# not instrumented by cargo-fuzz either way, so ASan finds little here and costs 3x the
# executions. Debug assertions and overflow checks are on in both modes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
timeout_s="${FUZZ_TIMEOUT:-10}"
sanitizer="${FUZZ_SANITIZER:-none}"
all_targets=(seq_ranges engine_inputs storage_differential sqlite_open_bytes wire_frames server_sync)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

if [ -n "${FUZZ_STRICT:-}" ]; then
    export TIDEMARK_FUZZ_STRICT=1
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== cargo +nightly fuzz build (sanitizer: $sanitizer)"
start=$(date +%s)
cargo +nightly fuzz build -s "$sanitizer"
echo "built in $(( $(date +%s) - start )) s"

total_runs=0
passed=0
failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    log="work/$t.log"

    if compgen -G "regressions/$t/*" > /dev/null; then
        echo "== $t: replaying regressions/$t/"
        if ! cargo +nightly fuzz run -s "$sanitizer" "$t" regressions/"$t"/* \
            -- -runs=1 > "$log" 2>&1; then
            grep -E -A3 "panicked|ERROR|SUMMARY" "$log" | head -20 || true
            echo "fuzz: $t: a regression input fails (log: fuzz/$log)" >&2
            failed=$((failed + 1))
            summary+=("$t: regression failed")
            continue
        fi
    fi

    echo "== $t: fuzzing for ${seconds}s"
    extra=()
    if [ -f "$t.dict" ]; then
        extra+=("-dict=$t.dict")
    fi
    if [ "$t" = wire_frames ]; then
        # Decoding must allocate in proportion to the frame: no single allocation over 64 MB.
        extra+=("-malloc_limit_mb=64" "-max_len=65536")
    fi
    status=0
    cargo +nightly fuzz run -s "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout_s" -len_control=0 -print_final_stats=1 \
        "${extra[@]}" > "$log" 2>&1 || status=$?
    runs=$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$log" | tail -1)
    if [ -z "$runs" ]; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    fi
    runs=${runs:-0}
    total_runs=$((total_runs + runs))
    corpus=$(find "work/$t" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        line="$t: $runs executions in ${seconds}s, corpus $corpus, no crash"
    else
        failed=$((failed + 1))
        grep -E -A3 "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -30 || true
        line="$t: CRASH after $runs executions (exit $status; log: fuzz/$log; input in fuzz/artifacts/$t/)"
    fi
    echo "$line"
    summary+=("$line")
done

echo "== summary"
for line in "${summary[@]}"; do
    echo "  $line"
done
echo "fuzz: $total_runs executions in total"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
