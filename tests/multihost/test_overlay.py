"""Cross-host overlays on a 3-host lab: OVS tunnels (VXLAN, Geneve, GRE) and
kernel VXLAN, each checked with packets between guests on different hosts.

Guests are named namespaces plugged into the hosts' bridges by each host's
own netplumbd. Overlay subnets come from 198.19.0.0/16.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fixtures.host import run, unique
from fixtures.lab import Lab


@dataclass
class Guest:
    host: str
    netns: str
    address: str  # without prefix


@dataclass
class Overlay:
    """Bridges, peers and guests one test made on the lab; removed after it."""

    lab: Lab
    bridges: list[tuple[str, str]] = field(default_factory=list)  # (host, bridge)
    guests: list[Guest] = field(default_factory=list)
    peers: list[tuple[str, str]] = field(default_factory=list)  # (host, address)

    def np(self, host: str, *args: str) -> dict[str, object]:
        res = self.lab.netplumb(host, "--json", *args)
        assert res.returncode == 0, f"{host}: netplumb {' '.join(args)}: {res.stderr}"
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    def bridge(self, host: str, name: str, *args: str) -> dict[str, object]:
        out = self.np(host, "bridge", "add", name, *args)
        self.bridges.append((host, name))
        return out

    def mesh(self) -> None:
        hosts = [h.name for h in self.lab.hosts]
        for a, b in itertools.permutations(hosts, 2):
            self.np(a, "peer", "add", self.lab.host(b).underlay_address, "--name", b)
            self.peers.append((a, self.lab.host(b).underlay_address))

    def guest(self, host: str, bridge: str, address: str, *args: str) -> dict[str, object]:
        ns = unique(f"{self.lab.prefix}g")
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        self.guests.append(Guest(host, ns, address.split("/")[0]))
        return self.np(host, "attach", bridge, f"netns:{ns}", address, *args)

    def cleanup(self) -> None:
        for g in self.guests:
            self.lab.netplumb(g.host, "detach", f"netns:{g.netns}")
            run("ip", "netns", "del", g.netns, check=False)
        for host, bridge in self.bridges:
            self.lab.netplumb(host, "bridge", "del", bridge)
        for host, address in self.peers:
            self.lab.netplumb(host, "peer", "del", address)


@pytest.fixture
def ov(lab3: Lab) -> Iterator[Overlay]:
    o = Overlay(lab3)
    try:
        yield o
    finally:
        o.cleanup()
    for h in lab3.hosts:
        left = lab3.netplumb(h.name, "check")
        assert left.returncode == 0, f"{h.name} left drift behind: {left.stdout}"


def ping(g: Guest, address: str, count: int = 1, wait: float = 2) -> bool:
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            g.netns,
            "ping",
            "-n",
            "-q",
            "-c",
            str(count),
            "-i",
            "0.2",
            "-W",
            str(wait),
            address,
        ],
        capture_output=True,
        text=True,
        timeout=count + wait + 10,
    )
    return res.returncode == 0


def all_pairs(guests: list[Guest]) -> list[str]:
    """The pairs that cannot ping each other (empty when all can). Up to
    three tries each: the userspace datapath drops the first packets to a
    peer whose underlay MAC it has not learnt yet."""
    return [
        f"{a.host}:{a.address} -> {b.host}:{b.address}"
        for a, b in itertools.permutations(guests, 2)
        if not any(ping(a, b.address, wait=1) for _ in range(3))
    ]


def three_by_two(
    ov: Overlay, bridge: str, subnet: int, *bridge_args: str
) -> list[dict[str, object]]:
    """The bridge on every host, full mesh, two guests per host."""
    eps = []
    for h in ov.lab.hosts:
        ov.bridge(h.name, bridge, *bridge_args)
    ov.mesh()
    for i, h in enumerate(ov.lab.hosts):
        for j in range(2):
            eps.append(ov.guest(h.name, bridge, f"198.19.{subnet}.{10 * (i + 1) + j}/24"))
    return eps


@pytest.mark.parametrize(("tunnel", "mtu"), [("vxlan", 1450), ("geneve", 1450), ("gre", 1458)])
def test_ovs_overlay_all_pairs(ov: Overlay, tunnel: str, mtu: int) -> None:
    vni = {"vxlan": 101, "geneve": 102, "gre": 103}[tunnel]
    eps = three_by_two(ov, f"bov{vni}", vni, "--kind", "ovs", "--vni", str(vni), "--tunnel", tunnel)
    assert {ep["mtu"] for ep in eps} == {mtu}
    assert all_pairs(ov.guests) == []
    peers = ov.np("h1", "peer", "ls")["peers"]
    assert len(peers) == 2  # type: ignore[arg-type]
    states = {t["state"] for p in peers for t in p["tunnels"]}  # type: ignore[union-attr,index]
    assert states == {"up"}


def test_linux_vxlan_overlay_all_pairs(ov: Overlay) -> None:
    eps = three_by_two(ov, "blx104", 104, "--kind", "linux", "--vni", "104")
    assert {ep["mtu"] for ep in eps} == {1450}
    assert all_pairs(ov.guests) == []


def test_linux_overlay_refuses_tunnels_the_kernel_lacks(ov: Overlay) -> None:
    res = ov.lab.netplumb(
        "h1", "--json", "bridge", "add", "blgn", "--vni", "105", "--tunnel", "geneve"
    )
    if res.returncode == 0:  # a kernel with geneve devices: nothing to show here
        ov.bridges.append(("h1", "blgn"))
        pytest.skip("this kernel has geneve devices")
    assert res.returncode == 4
    err = json.loads(res.stdout)["error"]
    assert err["reason"] == "kernel-feature-missing" and err["field"] == "spec.tunnel"
    assert ov.lab.exec("h1", ["ip", "link", "show", "blgn"], check=False).returncode != 0


@pytest.mark.parametrize("kind", ["ovs", "linux"])
def test_tcp_moves_data_at_the_computed_mtu(ov: Overlay, kind: str) -> None:
    vni = 106 if kind == "ovs" else 107
    br = f"bt{vni}"
    for h in ("h1", "h2"):
        ov.bridge(h, br, "--kind", kind, "--vni", str(vni))
    for a, b in (("h1", "h2"), ("h2", "h1")):
        ov.np(a, "peer", "add", ov.lab.host(b).underlay_address)
        ov.peers.append((a, ov.lab.host(b).underlay_address))
    ov.guest("h1", br, f"198.19.{vni}.1/24")
    ep = ov.guest("h2", br, f"198.19.{vni}.2/24")
    client, server = ov.guests
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", server.address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        res = subprocess.run(
            ["ip", "netns", "exec", client.netns, "iperf3", "-J", "-c", server.address, "-t", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        srv.kill()
        srv.wait()
    doc = json.loads(res.stdout)
    assert "error" not in doc, doc.get("error")
    received = doc["end"]["sum_received"]
    assert received["seconds"] >= 5
    assert received["bytes"] > 20_000_000, received  # full-size segments kept flowing
    # the transfer used the overlay MTU: MSS = MTU - 40 (IP and TCP headers),
    # less 12 when TCP timestamps are on
    mtu = int(ep["mtu"])  # type: ignore[call-overload]
    assert mtu - 52 <= doc["start"]["tcp_mss_default"] <= mtu - 40


def test_vlan_isolation_on_one_ovs_bridge(ov: Overlay) -> None:
    for h in ("h1", "h2"):
        ov.bridge(h, "bvl108", "--kind", "ovs", "--vni", "108")
    for a, b in (("h1", "h2"), ("h2", "h1")):
        ov.np(a, "peer", "add", ov.lab.host(b).underlay_address)
        ov.peers.append((a, ov.lab.host(b).underlay_address))
    ov.guest("h1", "bvl108", "198.19.108.1/24", "--vlan", "10")
    ov.guest("h2", "bvl108", "198.19.108.2/24", "--vlan", "10")
    ov.guest("h2", "bvl108", "198.19.108.3/24", "--vlan", "20")
    a, same, other = ov.guests
    assert ping(a, same.address)
    assert not ping(a, other.address, wait=1)
    port = ov.lab.vsctl(
        "h2", "get", "port", ov.np("h2", "ls")["endpoints"][1]["host_ifname"], "tag"
    )  # type: ignore[index]
    assert port.stdout.strip() in ("10", "20")


def test_vni_isolation(ov: Overlay) -> None:
    for vni in (109, 110):
        for h in ("h1", "h2"):
            ov.bridge(h, f"bvn{vni}", "--kind", "ovs", "--vni", str(vni))
    for a, b in (("h1", "h2"), ("h2", "h1")):
        ov.np(a, "peer", "add", ov.lab.host(b).underlay_address)
        ov.peers.append((a, ov.lab.host(b).underlay_address))
    ov.guest("h1", "bvn109", "198.19.109.1/24")
    ov.guest("h2", "bvn109", "198.19.109.2/24")
    ov.guest("h2", "bvn110", "198.19.109.3/24")  # same subnet, other VNI
    a, same, other = ov.guests
    assert ping(a, same.address)
    assert not ping(a, other.address, wait=1)


def test_peer_del_cuts_exactly_that_peer(ov: Overlay) -> None:
    three_by_two(ov, "bpd111", 111, "--kind", "ovs", "--vni", "111")
    h1 = next(g for g in ov.guests if g.host == "h1")
    h2 = next(g for g in ov.guests if g.host == "h2")
    h3 = next(g for g in ov.guests if g.host == "h3")
    assert ping(h1, h2.address) and ping(h1, h3.address)
    ov.np("h1", "peer", "del", "h3")
    assert ping(h1, h2.address)
    assert not ping(h1, h3.address, wait=1)
    assert ping(h2, h3.address)
    peers = [p["address"] for p in ov.np("h1", "peer", "ls")["peers"]]  # type: ignore[union-attr,index]
    assert peers == [ov.lab.host("h2").underlay_address]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_agent_restart_during_cross_host_ping_loses_nothing(ov: Overlay, sig: int) -> None:
    vni = 112 if sig == signal.SIGTERM else 113
    br = f"brs{vni}"
    for h in ("h1", "h2"):
        ov.bridge(h, br, "--kind", "ovs", "--vni", str(vni))
    for a, b in (("h1", "h2"), ("h2", "h1")):
        ov.np(a, "peer", "add", ov.lab.host(b).underlay_address)
        ov.peers.append((a, ov.lab.host(b).underlay_address))
    ov.guest("h1", br, f"198.19.{vni}.1/24")
    ov.guest("h2", br, f"198.19.{vni}.2/24")
    a, b = ov.guests
    assert ping(a, b.address, count=3)  # warm: ARP and the tunnel neighbour cache
    before = (ov.lab.vsctl("h1", "show").stdout, run("ip", "-n", a.netns, "-j", "link").stdout)
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", a.netns, "ping", "-n", "-q", "-i", "0.01", "-w", "5", b.address],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    ov.lab.stop_agent("h1", sig)
    time.sleep(0.5)
    ov.lab.start_agent("h1")
    out, _ = pinger.communicate(timeout=30)
    assert " 0% packet loss" in out, out
    after = (ov.lab.vsctl("h1", "show").stdout, run("ip", "-n", a.netns, "-j", "link").stdout)
    assert after == before
    assert ov.lab.netplumb("h1", "check").returncode == 0
