#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time, starting from the committed
# corpus (fuzz/corpus/<target>, read-only) plus a scratch corpus (fuzz/target/corpus/<target>,
# where libFuzzer writes what it finds). Exits non-zero on the first crash; the crashing input
# is then in fuzz/artifacts/<target>/ (reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run
# <target> <file>`, and add it to fuzz/corpus/<target>/ once fixed).
#
#   fuzz/run.sh [SECONDS_PER_TARGET [TARGET...]]     default 30 s, every target
#
# Only a stable toolchain is needed: cargo-fuzz passes `-Z` flags to rustc, which stable
# accepts with RUSTC_BOOTSTRAP=1. cargo-fuzz is installed from crates.io if missing.
# FUZZ_SANITIZER=none skips AddressSanitizer (faster; ari-proto itself has no unsafe code).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(event_decode response_decode rest_response_frame session_actions upgrade_check accepted_session media_control audiosocket_decode ws_handshake route_scan batch_decode)
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")

echo "building fuzz targets"
cargo fuzz build "${sanitizer[@]}"

for t in "${targets[@]}"; do
  mkdir -p "fuzz/target/corpus/$t"
  log="fuzz/target/fuzz-$t.log"
  echo
  echo "=== fuzz $t for ${secs}s (log: $log) ==="
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds memory.
  status=0
  cargo fuzz run "${sanitizer[@]}" "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed (exit $status): the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo
echo "fuzzing passed: ${targets[*]} (${secs}s each)"
