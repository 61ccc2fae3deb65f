"""Dependency faults: a host's Open vSwitch crashes, restarts or loses its
database while its netplumbd keeps running. netplumb must report the outage
(status and log) while it lasts and, without being restarted itself, have
every bridge, port, tunnel and endpoint back within 3 s of the dependency
coming back.

Two lab hosts, h1 (where the faults happen) and h2, each with an OVS overlay
bridge (VNI 4100) and guests on it, peered with each other; h1 also has a
plain OVS bridge with two guests on VLAN 7. "Restored" is checked from the
outside: the OVSDB rows (tagged with h1's agent id), the bridge's address,
``netplumb check`` finding no drift, and packets -- between h1's guests, to
the bridge, across the tunnel to h2, and on the VLAN. The restore time is
polled: from the moment the daemons were started again to the end of the
first poll that found everything in place.

Two product bugs found here are fixed, each with its test: status and log
said nothing while ovs-vswitchd was down, and an OVS bridge re-created after
the database was lost got a new MAC, so guests could not reach the bridge's
address (their gateway) until their neighbour entry expired.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fixtures.host import Namespaces
from fixtures.lab import Lab, LabError, agent_id, assert_gone, lab_up, ovsdb_rows, require_lab

RECOVERY_BOUND = 3.0  # seconds, from issue 5
OVERLAY, VLAN_BRIDGE, VNI, VLAN = "dfo", "dfv", 4100, 7


@dataclass
class Ep:
    host: str
    netns: str
    bridge: str
    address: str  # without the prefix length
    id: str = ""
    host_ifname: str = ""
    vlan: int = 0


@dataclass
class World:
    lab: Lab
    agent: str  # h1's agent id
    eps: list[Ep] = field(default_factory=list)

    def on(self, host: str, bridge: str) -> list[Ep]:
        return [e for e in self.eps if e.host == host and e.bridge == bridge]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    require_lab(ovs=True)
    ns = Namespaces()
    with lab_up(2, ovs=True) as lab:
        try:
            yield _build(lab, ns)
        finally:
            ns.cleanup()
    assert_gone(lab)


def _build(lab: Lab, ns: Namespaces) -> World:
    h1, h2 = lab.hosts
    w = World(lab, agent_id(lab, h1))
    for i, h in enumerate((h1, h2), start=1):
        with lab.client(h) as c:
            c.create_bridge(OVERLAY, kind="ovs", vni=VNI, addresses=[f"198.19.60.{i}/24"])
            other = h2 if h is h1 else h1
            c.add_peer(other.underlay_address, name=other.name)
            if h is h1:
                c.create_bridge(VLAN_BRIDGE, kind="ovs")
    w.eps = [
        Ep("h1", ns.new("npdf"), OVERLAY, "198.19.60.11"),
        Ep("h1", ns.new("npdf"), OVERLAY, "198.19.60.12"),
        Ep("h2", ns.new("npdf"), OVERLAY, "198.19.60.21"),
        Ep("h1", ns.new("npdf"), VLAN_BRIDGE, "198.19.61.11", vlan=VLAN),
        Ep("h1", ns.new("npdf"), VLAN_BRIDGE, "198.19.61.12", vlan=VLAN),
    ]
    for e in w.eps:
        with lab.client(e.host) as c:
            got = c.attach(e.bridge, f"netns:{e.netns}", addresses=[f"{e.address}/24"], vlan=e.vlan)
        e.id, e.host_ifname = got.id, got.host_ifname
    # Warm up (ARP, the userspace datapath's tunnel neighbour), then require
    # the whole picture before any fault.
    deadline = time.monotonic() + 20
    while (left := missing(w)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"the set-up is not complete: {left}"
    return w


def _pings(w: World, gateway: bool = True) -> list[tuple[str, str]]:
    a, b, remote, v1, v2 = w.eps
    pairs = [
        (a.netns, b.address),  # same host, same bridge
        (a.netns, remote.address),  # across the tunnel to h2
        (remote.netns, b.address),  # and back
        (v1.netns, v2.address),  # on VLAN 7
    ]
    if gateway:
        pairs.append((a.netns, "198.19.60.1"))  # the bridge's own address
    return pairs


def ping_failures(pairs: list[tuple[str, str]], wait: float = 0.5) -> list[str]:
    procs = [
        (
            f"{src} -> {dst}",
            subprocess.Popen(
                ["ip", "netns", "exec", src, "ping", "-n", "-q", "-c1", f"-W{wait:g}", dst],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        )
        for src, dst in pairs
    ]
    return [f"no ping {what}" for what, p in procs if p.wait(10) != 0]


def missing(w: World, gateway: bool = True) -> list[str]:
    """What of h1's netplumb objects is not in place right now (empty when
    everything is), seen from outside netplumb, then through it. Without
    ``gateway``, a guest need not reach the bridge's own address."""
    lab = w.lab
    try:
        bridges = {
            r["name"]: r for r in ovsdb_rows(lab, "h1", "Bridge", ["name", "external_ids", "ports"])
        }
        ports = {
            r["_uuid"]: r
            for r in ovsdb_rows(lab, "h1", "Port", ["_uuid", "name", "external_ids", "tag"])
        }
        ifaces = {
            r["name"]: r for r in ovsdb_rows(lab, "h1", "Interface", ["name", "type", "options"])
        }
    except LabError as e:
        return [f"OVSDB does not answer: {str(e).splitlines()[-1]}"]
    out: list[str] = []
    on_bridge: dict[str, dict[str, dict[str, Any]]] = {}
    for name in (OVERLAY, VLAN_BRIDGE):
        row = bridges.get(name)
        if row is None:
            out.append(f"OVS bridge {name} is missing")
            continue
        if row["external_ids"].get("netplumb-owner") != w.agent:
            out.append(f"OVS bridge {name} is not tagged as h1's")
        uuids = row["ports"] if isinstance(row["ports"], list) else [row["ports"]]
        on_bridge[name] = {ports[u]["name"]: ports[u] for u in uuids if u in ports}
    for e in w.on("h1", OVERLAY) + w.on("h1", VLAN_BRIDGE):
        port = on_bridge.get(e.bridge, {}).get(e.host_ifname)
        if port is None:
            out.append(f"port {e.host_ifname} of {e.netns} is not on {e.bridge}")
        elif port["external_ids"].get("netplumb-endpoint") != e.id:
            out.append(f"port {e.host_ifname} is not tagged for endpoint {e.id}")
        elif (port["tag"] or 0) != e.vlan:
            out.append(f"port {e.host_ifname} has tag {port['tag']}, not {e.vlan}")
    tunnels = [
        p
        for p in on_bridge.get(OVERLAY, {}).values()
        if p["external_ids"].get("netplumb-peer") == lab.hosts[1].underlay_address
    ]
    if len(tunnels) != 1:
        out.append(f"{len(tunnels)} tunnel ports towards h2 on {OVERLAY}, not 1")
    else:
        iface = ifaces.get(tunnels[0]["name"], {})
        opts = iface.get("options", {})
        if iface.get("type") != "vxlan" or opts.get("remote_ip") != lab.hosts[1].underlay_address:
            out.append(f"tunnel {tunnels[0]['name']} is {iface.get('type')} {opts}")
        elif opts.get("key") != str(VNI):
            out.append(f"tunnel {tunnels[0]['name']} has key {opts.get('key')}, not {VNI}")
    shown = json.loads(lab.exec("h1", ["ip", "-j", "addr", "show", "dev", OVERLAY]).stdout or "[]")
    if not shown or not any(a["local"] == "198.19.60.1" for a in shown[0].get("addr_info", [])):
        out.append(f"{OVERLAY} lacks its address 198.19.60.1/24")
    if out:
        return out
    out += ping_failures(_pings(w, gateway))
    if out:
        return out
    try:
        with lab.client("h1", timeout=5) as c:
            drift = c.check()
            deps = {d.name: d.up for d in c.status().dependencies}
    except Exception as e:
        return [f"netplumb check: {e}"]
    if not deps.get("ovsdb"):
        out.append("netplumb status: ovsdb down")
    out += [f"drift: {d.object} {d.name}: {d.detail}" for d in drift]
    return out


def ovsdb_status(w: World) -> tuple[bool, str]:
    with w.lab.client("h1", timeout=5) as c:
        dep = next(d for d in c.status().dependencies if d.name == "ovsdb")
    return dep.up, dep.detail


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def log_since(w: World, offset: int) -> str:
    return w.lab.agent_log("h1")[offset:]


def bring_back(
    w: World, what: str, start: Callable[[], float], gateway: bool = True, within: float = 30
) -> float:
    """Run ``start`` (which returns the time the dependency came back) in a
    thread while polling ``missing``; returns the restore time in seconds,
    from the dependency's return to the end of the first poll that found
    everything in place."""
    back: list[float] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            back.append(start())
        except BaseException as e:
            error.append(e)

    agent = w.lab.hosts[0].agent_pid()
    t0 = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    restored_at = None
    trace: list[tuple[float, list[str]]] = []
    while time.monotonic() < t0 + within:
        left = missing(w, gateway)
        end = time.monotonic()
        if not trace or trace[-1][1] != left:
            trace.append((end - t0, left))
        if not left and back:
            restored_at = end
            break
        time.sleep(0.02)
    thread.join(60)
    assert not error, f"bringing {what} back failed: {error[0]}"
    shown = "\n".join(f"  +{t:.2f}s: {left or 'all in place'}" for t, left in trace)
    assert restored_at is not None, f"{what}: not restored after {within:g} s:\n{shown}"
    assert w.lab.hosts[0].agent_pid() == agent, "netplumbd was restarted"
    took = restored_at - back[0]
    print(
        f"dependency fault: {what}: back {back[0] - t0:.2f} s after the restart began, "
        f"everything restored {took:.2f} s after that"
    )
    return took


def test_ovs_vswitchd_killed_and_restarted(world: World) -> None:
    lab = world.lab
    lab.stop_ovs("h1", signal.SIGKILL, daemons=["ovs-vswitchd"])
    try:
        assert wait_until(lambda: ping_failures(_pings(world)[:1], 0.3) != [], 5), (
            "traffic still flows without ovs-vswitchd"
        )
    finally:
        took = bring_back(
            world, "ovs-vswitchd killed (-9)", lambda: lab.start_ovs("h1", ["ovs-vswitchd"])
        )
    assert took <= RECOVERY_BOUND


def test_status_and_log_report_ovs_vswitchd_down(world: World) -> None:
    lab = world.lab
    offset = len(lab.agent_log("h1"))
    lab.stop_ovs("h1", signal.SIGKILL, daemons=["ovs-vswitchd"])
    try:

        def reported() -> bool:
            with lab.client("h1", timeout=5) as c:
                deps = c.status().dependencies
            return any(not d.up and d.enabled and "vswitchd" in d.name + d.detail for d in deps)

        assert wait_until(reported, 3), "netplumb status does not show ovs-vswitchd down"
        assert wait_until(lambda: "vswitchd" in log_since(world, offset), 3), (
            "the daemon log does not mention ovs-vswitchd"
        )
    finally:
        bring_back(world, "ovs-vswitchd killed (-9)", lambda: lab.start_ovs("h1", ["ovs-vswitchd"]))


def test_ovsdb_server_restarted(world: World) -> None:
    lab = world.lab
    offset = len(lab.agent_log("h1"))
    lab.stop_ovs("h1", daemons=["ovsdb-server"])
    try:
        assert wait_until(lambda: not ovsdb_status(world)[0], 3), "status still shows ovsdb up"
        assert wait_until(lambda: "lost the OVSDB connection" in log_since(world, offset), 3)
        # Calls that need OVS answer UNAVAILABLE, naming it, meanwhile.
        res = lab.netplumb("h1", "--json", "bridge", "add", "dfnew", "--kind", "ovs")
        assert res.returncode == 5, res.stdout + res.stderr
        assert json.loads(res.stdout)["error"]["code"] == "UNAVAILABLE"
        assert "Open vSwitch" in res.stderr
    finally:
        took = bring_back(
            world, "ovsdb-server restarted", lambda: lab.start_ovs("h1", ["ovsdb-server"])
        )
    assert took <= RECOVERY_BOUND


def wipe(w: World, gateway: bool) -> float:
    """Stop OVS, check the outage is reported, then delete the database file,
    create an empty one and start both daemons (the lab puts back its br-phy,
    as an operator's own set-up would); the restore time."""
    lab = w.lab
    offset = len(lab.agent_log("h1"))
    lab.stop_ovs("h1")
    try:
        assert wait_until(lambda: not ovsdb_status(w)[0], 3), "status still shows ovsdb up"
        assert wait_until(lambda: "lost the OVSDB connection" in log_since(w, offset), 3)
    finally:
        what = "OVS database wiped" + ("" if gateway else " (not counting the bridge's address)")
        took = bring_back(w, what, lambda: lab.wipe_ovs("h1"), gateway=gateway, within=15)
    log = log_since(w, offset)
    assert "OVS (re)connected" in log and "repaired" in log
    rows = ovsdb_rows(lab, "h1", "Bridge", ["name"])
    assert {r["name"] for r in rows} == {"br-phy", OVERLAY, VLAN_BRIDGE}
    return took


def test_ovs_database_wiped(world: World) -> None:
    # Every row, the tunnel, the bridge's address and traffic between guests
    # and across the tunnel; the guests reaching the bridge's own address is
    # the next test.
    assert wipe(world, gateway=False) <= RECOVERY_BOUND


def test_guests_reach_the_bridge_address_soon_after_the_ovs_database_is_wiped(
    world: World,
) -> None:
    # The guests know the bridge's MAC now (as any guest using it as its gateway).
    for e in world.eps:
        subprocess.run(["ip", "-n", e.netns, "neigh", "flush", "all"], capture_output=True)
    assert ping_failures([(e.netns, "198.19.60.1") for e in world.on("h1", OVERLAY)]) == []
    try:
        assert wipe(world, gateway=True) <= RECOVERY_BOUND
    finally:
        # Whatever happened, leave the guests' neighbour caches fresh.
        for e in world.eps:
            subprocess.run(["ip", "-n", e.netns, "neigh", "flush", "all"], capture_output=True)
