#!/bin/bash
# Start dockerd for the docker test tier when it is not running (a machine
# without systemd, like CI's). Containers get only the interfaces netplumb
# gives them: no docker0 bridge, no iptables rules, no NAT.
set -euo pipefail
SOCK=/var/run/docker.sock
if [ -S "$SOCK" ] && docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null; then
    echo "start-dockerd.sh: dockerd is not installed (apt-get install docker.io)" >&2
    exit 1
fi
mkdir -p /var/log/netplumb-ci
setsid dockerd --bridge=none --iptables=false --ip-masq=false \
    >/var/log/netplumb-ci/dockerd.log 2>&1 < /dev/null &
for _ in $(seq 150); do
    if [ -S "$SOCK" ] && docker info >/dev/null 2>&1; then
        echo "dockerd is up"
        exit 0
    fi
    sleep 0.2
done
echo "start-dockerd.sh: dockerd did not come up; see /var/log/netplumb-ci/dockerd.log" >&2
tail -20 /var/log/netplumb-ci/dockerd.log >&2 || true
exit 1
