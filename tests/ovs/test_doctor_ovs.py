"""`netplumb doctor` on a lab host with its own Open vSwitch (userspace
datapath, br-phy holding the underlay): a healthy OVS overlay passes; then
the OVS traps are made on purpose -- tx checksum offload back on, an overlay
MTU too big for the underlay, a peer OVS cannot route to, OVSDB unreachable,
ovs-vswitchd stopped -- and doctor must name each, print the fix and exit 7.
Every fault is undone afterwards, also when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fixtures.doctor import Report, dead_socket, doctor, lab_config, sysctl, throwaway_group
from fixtures.host import run, unique
from fixtures.lab import Lab, assert_gone, lab_up, require_lab


@dataclass
class Host:
    lab: Lab
    group: str
    config: str
    guest: str

    @property
    def ns(self) -> str:
        return self.lab.hosts[0].netns

    def doctor(self, config: str | None = None) -> Report:
        return doctor(self.lab, "h1", config or self.config)

    def np(self, *args: str) -> str:
        res = self.lab.netplumb("h1", *args)
        assert res.returncode == 0, res.stderr
        return res.stdout


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    """h1 with an OVS overlay bridge (VNI 500, one peer) and a guest on it,
    and a Linux bridge whose address is the guest's gateway."""
    require_lab(ovs=True)
    guest = unique("npdo-")
    with (
        throwaway_group() as group,
        lab_up(1, ovs=True, agent_args=["--socket-group", group]) as lab,
    ):
        run("ip", "netns", "add", guest)
        try:
            h = Host(lab, group, lab_config(lab, "h1", lab.workdir / "doctor.toml", group), guest)
            h.np("bridge", "add", "dob0", "--kind", "ovs", "--vni", "500")
            h.np("peer", "add", "198.18.0.12")
            h.np("attach", "dob0", f"netns:{guest}", "198.19.50.11/24")
            h.np("bridge", "add", "dgw1", "--address", "198.19.51.1/24")
            h.np(
                "attach",
                "dgw1",
                f"netns:{guest}",
                "198.19.51.11/24@198.19.51.1",
                "--ifname",
                "eth2",
            )
            sysctl(h.ns, "net.ipv4.ip_forward", "1")
            yield h
        finally:
            run("ip", "netns", "del", guest, check=False)
    assert_gone(lab)


def test_a_healthy_ovs_overlay_passes_every_check(host: Host) -> None:
    r = host.doctor()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.failed == []
    for name in (
        "ovs",
        "ovs-vswitchd",
        "ovs-datapath",
        "userspace-tunnel",
        "tunnels",
        "overlay-mtu",
        "tx-checksum",
        "endpoints",
        "forwarding-ipv4",
    ):
        assert r.status(name) == "PASS", f"{name}:\n{r.stdout}"
    assert (
        "peer 198.18.0.12: from 198.18.0.11 on br-phy (netdev)"
        in r.named("userspace-tunnel")[0].detail
    )
    assert "1450" in r.named("overlay-mtu")[0].detail


def test_tx_checksum_offload_back_on_is_named_and_reconcile_fixes_it(host: Host) -> None:
    run("ip", "netns", "exec", host.guest, "ethtool", "-K", "eth1", "tx", "on")
    try:
        c = host.doctor().failing("tx-checksum")
        assert f"netns:{host.guest} eth1" in c.detail and "TCP hangs" in c.detail
        assert "netplumb reconcile" in c.fix and "ethtool -K" in c.fix
        host.np("reconcile")  # the fix doctor gives
        assert host.doctor().status("tx-checksum") == "PASS"
    finally:
        run("ip", "netns", "exec", host.guest, "ethtool", "-K", "eth1", "tx", "off")


def test_an_overlay_mtu_too_big_for_the_underlay_is_named(host: Host) -> None:
    try:
        host.np("bridge", "add", "dob1", "--kind", "ovs", "--vni", "501", "--mtu", "1500")
        c = host.doctor().failing("overlay-mtu")
        assert "bridge dob1: bridge 1500 > 1450" in c.detail
        assert "underlay br-phy MTU 1500 - vxlan 50 = 1450" in c.detail
        assert "--mtu 1450" in c.fix and "raise the underlay MTU to 1550" in c.fix
    finally:
        host.lab.netplumb("h1", "bridge", "del", "dob1")


def test_a_peer_ovs_cannot_route_to_is_named(host: Host) -> None:
    """198.19.200.1 is off the underlay's subnet and h1 has no route to it:
    the userspace datapath would drop every tunnel packet to it."""
    try:
        host.np("peer", "add", "198.19.200.1")
        c = host.doctor().failing("userspace-tunnel")
        assert "peer 198.19.200.1: OVS has no route to it" in c.detail
        assert "dev br-phy" in c.fix
    finally:
        host.lab.netplumb("h1", "peer", "del", "198.19.200.1")


def test_ovsdb_unreachable_with_an_ovs_bridge_recorded_is_named(host: Host) -> None:
    with dead_socket(str(host.lab.workdir)) as dead:
        config = lab_config(
            host.lab, "h1", host.lab.workdir / "dead-ovsdb.toml", host.group, ovsdb=f"unix:{dead}"
        )
        r = host.doctor(config)
    c = r.failing("ovs")
    assert f"OVSDB does not answer at unix:{dead}" in c.detail
    assert "OVS bridges recorded: dob0" in c.detail
    assert "start Open vSwitch" in c.fix and "--ovsdb" in c.fix


def test_a_stopped_ovs_vswitchd_is_named(host: Host) -> None:
    try:
        host.lab.stop_ovs("h1", daemons=["ovs-vswitchd"])
        c = host.doctor().failing("ovs-vswitchd")
        assert "not running" in c.detail and "dob0" in c.detail
    finally:
        host.lab.start_ovs("h1", daemons=["ovs-vswitchd"])
