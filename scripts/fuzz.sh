#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a short time (default 15 s each;
# pass another number of seconds for a longer run). Needs the nightly
# toolchain; installs cargo-fuzz if it is missing. Crashes are saved under
# fuzz/artifacts/TARGET/ and make this script fail.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-15}"
targets=(poll_response full_sync_diff)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
export CARGO_TARGET_DIR="${CORRAL_FUZZ_TARGET_DIR:-/var/tmp/corral-fuzz-target}"
corpus_root="${CORRAL_FUZZ_CORPUS:-/var/tmp/corral-fuzz-corpus}"

passed=0
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$corpus_root/$t"
  echo "fuzz: $t for ${seconds}s"
  if cargo +nightly fuzz run "$t" -O "$corpus_root/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>"$corpus_root/$t.log"; then
    grep -E "^Done [0-9]+ runs" "$corpus_root/$t.log" || true
    passed=$((passed + 1))
  else
    tail -40 "$corpus_root/$t.log"
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
