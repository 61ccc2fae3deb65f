#!/bin/bash
# Set up a fresh Debian machine (as root) to run netplumb and its tests:
# system packages, then a virtualenv in .venv with netplumb installed
# editable. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup-dev.sh: run as root (it installs packages and the tests need CAP_NET_ADMIN)" >&2
    exit 1
fi

PACKAGES=(iproute2 iputils-ping iputils-arping iperf3 ethtool tcpdump procps openvswitch-switch docker.io busybox-static udhcpc isc-dhcp-client dhcpcd-base dnsmasq-base python3-venv python3-pip make etcd-server systemd)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
echo "setup done: run 'make test', or start the daemon with .venv/bin/netplumbd"
