#!/usr/bin/env bash
# Installs schemathesis (property-based fuzzing of the REST API from its
# OpenAPI document) into a venv of its own, pinned, once. The API fuzz test
# (crates/corral/tests/schemathesis.rs) finds it there.
set -euo pipefail

VERSION=4.32.5
VENV="${CORRAL_VENV:-/var/tmp/corral-venv}"

if [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  exit 0
fi
echo "setup: installing schemathesis $VERSION into $VENV"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
