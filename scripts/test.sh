#!/usr/bin/env bash
# The whole test suite: unit, integration and end-to-end tests of every crate,
# including the shared REST contract check and the schemathesis API fuzz,
# then a short run of each cargo-fuzz target. Run from anywhere, as root for the
# isolation tests (they skip, saying so, without root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python3 python3-venv iproute2 nftables bubblewrap podman runc debootstrap
scripts/setup-schemathesis.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/corral-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
# Then each fuzz target briefly (nightly + cargo-fuzz; skipped without nightly).
scripts/fuzz.sh 15 || status=1
exit "$status"
