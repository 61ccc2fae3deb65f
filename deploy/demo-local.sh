#!/bin/bash
# netplumb local demo (make demo-local): a private netplumbd, two namespaces on one bridge, ping
# across over IPv4 and IPv6, then everything is removed again (also on
# failure or Ctrl-C). Run as root after `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

work=$(mktemp -d /tmp/netplumb-demo.XXXXXX)
export NETPLUMB_SOCKET=$work/netplumbd.sock
suffix=$$
blue=np-blue-$suffix red=np-red-$suffix bridge=npdemo$((suffix % 100000))
daemon_pid=

cleanup() {
    set +e
    if [ -n "$daemon_pid" ]; then
        "$BIN/netplumb" detach "netns:$blue" >/dev/null 2>&1
        "$BIN/netplumb" detach "netns:$red" >/dev/null 2>&1
        "$BIN/netplumb" bridge del "$bridge" >/dev/null 2>&1
        kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null
    fi
    ip netns del "$blue" 2>/dev/null; ip netns del "$red" 2>/dev/null
    ip link del "$bridge" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

"$BIN/netplumbd" --socket "$NETPLUMB_SOCKET" --state-dir "$work/state" 2>"$work/netplumbd.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$NETPLUMB_SOCKET" ] && break; sleep 0.05; done
"$BIN/netplumb" status >/dev/null

ip netns add "$blue"; ip netns add "$red"

step "$BIN/netplumb" bridge add "$bridge" --address 198.18.0.1/24 --address 2001:db8::1/64
step "$BIN/netplumb" attach "$bridge" "netns:$blue" 198.18.0.10/24@198.18.0.1 2001:db8::10/64
step "$BIN/netplumb" attach "$bridge" "netns:$red" 198.18.0.11/24@198.18.0.1 2001:db8::11/64
step "$BIN/netplumb" ls
step ip netns exec "$blue" ping -c 3 -i 0.2 198.18.0.11
step ip netns exec "$red" ping -c 3 -i 0.2 2001:db8::10
step "$BIN/netplumb" detach "netns:$blue"
step "$BIN/netplumb" detach "netns:$red"
step "$BIN/netplumb" bridge del "$bridge"
echo
echo "demo done; daemon log: $(wc -l < "$work/netplumbd.log") lines, cleaning up"
