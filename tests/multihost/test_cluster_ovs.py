"""Cluster mode with OVS networks (two OVS userspace-datapath hosts, one etcd
member): the endpoints of other hosts are programmed into each host's OVS
bridge -- a static MAC entry towards the tunnel to their host and an ARP
answer flow -- so that cross-host ARP works with every broadcast across the
tunnels dropped, and the entries go when the endpoint does."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fixtures.etcd import require_etcd
from fixtures.host import run, unique
from fixtures.lab import Lab, assert_gone, lab_up, np, require_lab

# Below the ARP answers (100), above NORMAL (0): every broadcast that no
# answer flow takes is dropped, so nothing is flooded to the tunnels.
DROP_BROADCAST = "priority=50,dl_dst=ff:ff:ff:ff:ff:ff,actions=drop"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab(ovs=True)
    require_etcd()
    with lab_up(2, ovs=True, cluster=True, etcd_members=1, cluster_ttl=3) as lab:
        yield lab
    assert_gone(lab)


def wait_until(cond: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until ``cond`` held (printed); fails after ``within``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.1)
    took = time.monotonic() - t0
    print(f"cluster OVS: {what} after {took:.2f} s")
    return took


def static_macs(lab: Lab, host: str, bridge: str) -> set[str]:
    out = lab.appctl(host, "fdb/show", bridge).stdout
    return {line.split()[2] for line in out.splitlines()[1:] if line.split()[-1:] == ["static"]}


def arp_answers(lab: Lab, host: str, bridge: str) -> set[str]:
    out = lab.exec(host, ["ovs-ofctl", "dump-flows", "--no-stats", bridge]).stdout
    return {
        field.split("=", 1)[1]
        for line in out.splitlines()
        if "cookie=0x4e50" in line
        for field in line.replace(" ", ",").split(",")
        if field.startswith("arp_tpa=")
    }


def arping(ns: str, address: str) -> bool:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "arping", "-c1", "-w2", "-I", "eth1", address],
        capture_output=True,
        text=True,
    )
    return res.returncode == 0


@dataclass
class World:
    """An OVS network built on both hosts, with one guest on each."""

    network: str
    guests: dict[str, str]  # host -> netns
    eps: dict[str, dict[str, Any]]  # host -> endpoint (as --json prints it)

    def ip(self, host: str) -> str:
        return str(self.eps[host]["addresses"][0]).split("/")[0]

    def mac(self, host: str) -> str:
        return str(self.eps[host]["mac"])


@pytest.fixture
def world(lab: Lab) -> Iterator[World]:
    name = unique("o")[:10]
    vni = 6000 + int(name[1:], 16) % 1000
    subnet = f"198.19.{104 + vni % 8}.0/24"
    np(lab, "h1", "network", "create", name, "--subnet", subnet, "--vni", str(vni), "--kind", "ovs")
    w = World(name, {}, {})
    try:
        wait_until(
            lambda: all(
                name in [b["spec"]["name"] for b in np(lab, h, "bridge", "ls")["bridges"]]  # type: ignore[index,union-attr]
                for h in ("h1", "h2")
            ),
            10,
            "the network on both hosts",
        )
        for h in ("h1", "h2"):
            ns = unique(f"{lab.prefix}g")
            run("ip", "netns", "add", ns)
            w.guests[h] = ns
            w.eps[h] = np(lab, h, "attach", name, f"netns:{ns}")
        yield w
    finally:
        for h, ns in w.guests.items():
            lab.netplumb(h, "detach", f"netns:{ns}")
            run("ip", "netns", "del", ns, check=False)
        res = lab.netplumb("h1", "network", "del", name)
        assert res.returncode == 0, res.stderr


def test_other_hosts_endpoints_are_answered_and_forwarded_without_broadcast(
    lab: Lab, world: World
) -> None:
    name, ip1, mac1, ns2 = world.network, world.ip("h1"), world.mac("h1"), world.guests["h2"]
    wait_until(lambda: mac1 in static_macs(lab, "h2", name), 10, "h1's MAC static on h2")
    wait_until(lambda: ip1 in arp_answers(lab, "h2", name), 10, "h2 answers ARP for h1's guest")
    # h2's own guest is not programmed on h2 (it is local)
    assert world.mac("h2") not in static_macs(lab, "h2", name)

    # No broadcast leaves or enters h2's bridge any more: ARP for h1's guest
    # is answered on h2 and the ping is forwarded by the static entry.
    lab.exec("h2", ["ovs-ofctl", "add-flow", name, DROP_BROADCAST])
    try:
        run("ip", "-n", ns2, "neigh", "flush", "all")
        assert arping(ns2, ip1), "h2's bridge did not answer ARP for h1's guest"
        unknown = ip1.rsplit(".", 1)[0] + ".250"
        assert arping(ns2, unknown) is False  # an unknown address: broadcast, dropped
        res = subprocess.run(
            ["ip", "netns", "exec", ns2, "ping", "-c2", "-W1", ip1], capture_output=True
        )
        assert res.returncode == 0, "no ping across hosts with broadcast dropped"
    finally:
        match = DROP_BROADCAST.replace(",actions=drop", "")
        lab.exec("h2", ["ovs-ofctl", "del-flows", "--strict", name, match])

    # The endpoint goes: so do its entries on the other host.
    res = lab.netplumb("h1", "detach", f"netns:{world.guests['h1']}")
    assert res.returncode == 0, res.stderr
    wait_until(lambda: mac1 not in static_macs(lab, "h2", name), 10, "h1's MAC gone on h2")
    wait_until(lambda: ip1 not in arp_answers(lab, "h2", name), 10, "ARP answer gone on h2")


def test_an_ovs_restart_gets_the_entries_back(lab: Lab, world: World) -> None:
    """ovs-vswitchd forgets its MAC table and flows when it restarts: the
    agent's reconcile after OVS comes back programs them again."""
    name, ip1, mac1 = world.network, world.ip("h1"), world.mac("h1")
    wait_until(lambda: mac1 in static_macs(lab, "h2", name), 10, "h1's MAC static on h2")
    lab.stop_ovs("h2", daemons=("ovs-vswitchd",))
    lab.start_ovs("h2", daemons=("ovs-vswitchd",))
    wait_until(lambda: mac1 in static_macs(lab, "h2", name), 15, "h1's MAC static again")
    wait_until(lambda: ip1 in arp_answers(lab, "h2", name), 10, "the ARP answer again")
