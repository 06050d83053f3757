#!/usr/bin/env bash
# A multi-host Corral fleet on one machine, by hand: a server and N dataplanes,
# each in its own network namespace on a Linux bridge (the rig the fleet tests
# build, see crates/corral/tests/common/fleet.rs). Needs root and iproute2.
#
#   scripts/fleet.sh up [DATAPLANES]   # default 3; prints how to reach the API
#   scripts/fleet.sh status
#   scripts/fleet.sh cut dp2           # take a host's link down (a partition)
#   scripts/fleet.sh heal dp2          # and bring it back
#   scripts/fleet.sh down              # stop everything, delete the rig
#   scripts/fleet.sh sweep             # delete rigs left by killed test runs
#
# Rig N uses 10.201.N.0/24: the bridge crl-brN holds .1 (this shell's side),
# the server's namespace crl-N-srv .2, dataplane dpI's namespace crl-N-dpI .(2+I).
# CORRAL_BIN picks the binary (default: `corral` on PATH, else the debug build).
set -euo pipefail

REGISTRY=/run/corral-fleet
PREFIX=crl-
RIG=${CORRAL_FLEET_RIG:-250}        # by-hand rigs default to the top index, tests count up from 1
STATE=/var/tmp/corral-fleet-rig$RIG

die() { echo "fleet.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, a bridge)"
command -v ip >/dev/null || die "needs ip (iproute2)"

corral_bin() {
  if [ -n "${CORRAL_BIN:-}" ]; then echo "$CORRAL_BIN"; return; fi
  if command -v corral >/dev/null; then command -v corral; return; fi
  local t=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/debug/corral
  [ -x "$t" ] || die "no corral binary: build it (cargo build) or set CORRAL_BIN"
  echo "$t"
}

ns_of() { case "$1" in 0) echo "${PREFIX}$RIG-srv" ;; *) echo "${PREFIX}$RIG-dp$1" ;; esac; }
ip_of() { echo "10.201.$RIG.$(( $1 + 2 ))"; }

# The rig index a harness name belongs to (crl-brN, crl-N-...), or nothing.
index_of() {
  local rest=${1#"$PREFIX"}
  [ "$rest" != "$1" ] || return 0
  rest=${rest#br}
  rest=${rest%%[!0-9]*}
  [ -n "$rest" ] && [ "$rest" -ge 1 ] && [ "$rest" -le 250 ] && echo "$rest" || true
}

teardown() {
  local n=$1 ns link pid
  for ns in $(ip netns list | awk '{print $1}'); do
    [ "$(index_of "$ns")" = "$n" ] || continue
    # Whatever still runs in it (server, dataplanes, sandboxes) goes first.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
    [ "$(index_of "$link")" = "$n" ] && [ "$link" != "${PREFIX}br$n" ] && ip link del "$link" 2>/dev/null || true
  done
  ip link del "${PREFIX}br$n" 2>/dev/null || true
  rm -f "$REGISTRY/$n"
}

owner_alive() {
  local f=$REGISTRY/$1
  [ -f "$f" ] || return 1
  local who; who=$(tr -d '[:space:]' < "$f")
  case "$who" in
    manual) return 0 ;;
    ''|*[!0-9]*) return 1 ;;
    *) [ -r "/proc/$who/stat" ] && ! sed 's/.*) //' "/proc/$who/stat" | grep -q '^[ZX]' ;;
  esac
}

sweep() {
  local names n
  names=$( { ip netns list | awk '{print $1}'; ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1; ls "$REGISTRY" 2>/dev/null | sed "s/^/${PREFIX}/"; } )
  for n in $(for x in $names; do index_of "$x"; done | sort -un); do
    owner_alive "$n" || { echo "sweeping rig $n"; teardown "$n"; }
  done
}

kill_all() {
  local pid
  for pid in $(cat "$STATE"/*.pid 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  # Process-driver sandboxes carry their dataplane's data dir in their environment.
  for pid in $(grep -lzs "CORRAL_DATAPLANE_DIR=$STATE/" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$STATE"/*.pid
}

up() {
  local dps=${1:-3} bin m br=${PREFIX}br$RIG
  bin=$(corral_bin)
  mkdir -p "$REGISTRY"
  exec 9>"$REGISTRY/.lock"; flock 9
  [ -e "$REGISTRY/$RIG" ] && die "rig $RIG exists (scripts/fleet.sh down, or CORRAL_FLEET_RIG=another)"
  ip -4 route show | grep -q "^10\.201\.$RIG\." && die "10.201.$RIG.0/24 is already routed here"
  echo manual > "$REGISTRY/$RIG"
  flock -u 9
  mkdir -p "$STATE"
  ip link add "$br" type bridge
  ip addr add "10.201.$RIG.1/24" dev "$br"
  ip link set "$br" up
  for m in $(seq 0 "$dps"); do
    local ns; ns=$(ns_of "$m")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "${PREFIX}$RIG-v$m" type veth peer name eth0 netns "$ns"
    ip link set "${PREFIX}$RIG-v$m" master "$br" up
    ip -n "$ns" addr add "$(ip_of "$m")/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  local api_token join_token srv
  api_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  join_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$api_token" > "$STATE/api-token"
  srv=$(ip_of 0)
  setsid ip netns exec "$(ns_of 0)" "$bin" server --data-dir "$STATE/server" \
    --listen "$srv:7700" --grpc-listen "$srv:7701" --token "$api_token" --join-token "$join_token" \
    ${CORRAL_SERVER_FLAGS:-} > "$STATE/server.log" 2>&1 < /dev/null &
  echo $! > "$STATE/server.pid"
  for m in $(seq 1 "$dps"); do
    setsid ip netns exec "$(ns_of "$m")" "$bin" dataplane --server "http://$srv:7701" --join-token "$join_token" \
      --host-id "dp$m" --data-dir "$STATE/dp$m" --agent-listen "$(ip_of "$m"):0" --driver "${CORRAL_DRIVER:-process}" \
      > "$STATE/dp$m.log" 2>&1 < /dev/null &
    echo $! > "$STATE/dp$m.pid"
  done
  echo "rig $RIG up: server at $srv, dataplanes dp1..dp$dps; logs and data in $STATE"
  echo "  export CORRAL_URL=http://$srv:7700 CORRAL_TOKEN=$api_token"
  echo "  corral host ls; corral sandbox create --wait; scripts/fleet.sh cut dp2; scripts/fleet.sh down"
}

down() {
  kill_all
  teardown "$RIG"
  echo "rig $RIG down (data kept in $STATE)"
}

link() {
  local host=${1:-} state=$2 m
  m=${host#dp}
  [ -n "$host" ] && [ "$m" != "$host" ] && [ -n "$m" ] || die "which host? e.g. dp2"
  ip link set "${PREFIX}$RIG-v$m" "$state"
  echo "$host: link $state"
}

status() {
  [ -e "$REGISTRY/$RIG" ] || { echo "rig $RIG is not up"; return; }
  local f
  for f in "$STATE"/*.pid; do
    [ -e "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid): running"; else echo "$(basename "$f" .pid): gone"; fi
  done
  ip -br link show master "${PREFIX}br$RIG"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  cut) link "${2:-}" down ;;
  heal) link "${2:-}" up ;;
  status) status ;;
  sweep) sweep ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
