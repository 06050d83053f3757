#!/usr/bin/env bash
# The whole test suite: unit, integration and end-to-end tests of every crate,
# including the shared REST contract check. Run from anywhere, as root for the
# isolation tests (they skip, saying so, without root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python3 iproute2 nftables bubblewrap podman runc debootstrap
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/corral-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo nextest run --workspace --no-fail-fast "$@"
