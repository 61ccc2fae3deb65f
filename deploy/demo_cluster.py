#!/usr/bin/env python3
"""netplumb cluster demo: hosts that find each other, one network defined
once, containers reaching each other by name across hosts.

Builds a 3-host lab in cluster mode (etcd in the lab's fabric namespace,
every netplumbd started with --etcd), shows the peers appearing with no
`peer add`, defines one network, runs a busybox container per host (Docker,
--net none, with the network's DNS address as its resolver), attaches each
to the network by name through its own host's agent, and pings every
container from the first by name. Then removes everything (--keep leaves
the lab and containers up). Run as root after `make setup` with dockerd
running (deploy/start-dockerd.sh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "lab"))

from lab import Lab, LabExists  # noqa: E402

PREFIX = "npcdemo"
IMAGE = "netplumb-test:busybox"
SUBNET, GATEWAY = "198.19.50.0/24", "198.19.50.1"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--keep", action="store_true", help="leave the lab and containers up")
    args = p.parse_args()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        print("demo: dockerd is not running (deploy/start-dockerd.sh starts it)", file=sys.stderr)
        return 1
    image()
    lab = Lab(PREFIX, 3, ovs=False, cluster=True)
    containers: list[str] = []
    try:
        step("lab up: 3 hosts, etcd in the fabric namespace, every agent joined to it")
        try:
            lab.up()
        except LabExists:
            print(f"a lab {PREFIX} exists: python3 deploy/lab/lab.py down --prefix {PREFIX}")
            return 1
        step("the hosts found each other (no 'peer add')")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            peers = {h.name: peer_names(lab, h.name) for h in lab.hosts}
            if all(len(v) == len(lab.hosts) - 1 for v in peers.values()):
                break
            time.sleep(0.2)
        for h, names in peers.items():
            print(f"  {h}: peers {', '.join(names)}")
        step(f"one network for all hosts: netplumb network create web --subnet {SUBNET} --vni 50")
        show(lab, "h1", "network", "create", "web", "--subnet", SUBNET, "--vni", "50")
        time.sleep(1)
        step("a container per host, attached by its own host's agent; addresses from the subnet")
        for h in lab.hosts:
            name = f"{PREFIX}-{h.name}"
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            subprocess.run(
                ["docker", "run", "-d", "--net", "none", "--dns", GATEWAY, "--name", name,
                 IMAGE, "sleep", "100000"],
                check=True,
                capture_output=True,
            )  # fmt: skip
            containers.append(name)
            show(lab, h.name, "attach", "web", name)
        step(
            "from the first container, every container by name (DNS answered by each host's agent)"
        )
        first = containers[0]
        for name in containers:
            res = subprocess.run(
                ["docker", "exec", first, "ping", "-c1", "-W2", name],
                capture_output=True,
                text=True,
            )
            line = res.stdout.splitlines()[0] if res.stdout else res.stderr.strip()
            print(f"  {first} -> {name}: {'ok' if res.returncode == 0 else 'FAILED'}  ({line})")
        step("netplumb network ls (from any host)")
        show(lab, "h3", "network", "ls")
        if args.keep:
            print(f"\nleft up: python3 deploy/lab/lab.py exec --prefix {PREFIX} h1 -- netplumb ls")
            return 0
    finally:
        if not args.keep:
            if containers:
                subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
            lab.down()
    return 0


def image() -> None:
    """The busybox image the tests use, built from busybox-static (no registry)."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    busybox = shutil.which("busybox")
    if busybox is None:
        sys.exit("demo: busybox-static is not installed")
    root = tempfile.mkdtemp(prefix="npimg")
    try:
        (Path(root) / "bin").mkdir()
        shutil.copy(busybox, f"{root}/bin/busybox")
        for applet in ("sh", "ip", "ping", "sleep", "cat", "nslookup"):
            (Path(root) / "bin" / applet).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, check=True)
        tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def peer_names(lab: Lab, host: str) -> list[str]:
    res = lab.netplumb(host, "--json", "peer", "ls")
    return sorted(
        f"{p['name']} ({p['source']})" for p in json.loads(res.stdout or "{}").get("peers", [])
    )


def step(text: str) -> None:
    print(f"\n== {text}")


def show(lab: Lab, host: str, *args: str) -> None:
    res = lab.netplumb(host, *args)
    for line in (res.stdout + res.stderr).strip().splitlines():
        print(f"  {host}$ {line}")


if __name__ == "__main__":
    sys.exit(main())
