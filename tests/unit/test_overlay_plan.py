"""Overlay planning: MTU arithmetic, tunnel ports, kernel VXLAN flood lists."""

from __future__ import annotations

import ipaddress

import pytest
from netplumb.agent.core import naming, overlay
from netplumb.agent.core.model import (
    BridgeKind,
    BridgeRecord,
    BridgeSpec,
    HostFeatures,
    ObservedOvsBridge,
    ObservedOvsKnown,
    ObservedOvsPort,
    ObservedVxlan,
    PeerRecord,
)
from netplumb.agent.core.ops import (
    AddFlood,
    AddOvsBridge,
    AddOvsPort,
    CreateVxlan,
    DeleteLink,
    DelFlood,
    DelOvsPort,
    DelOvsStaticMac,
    SetOvsArpAnswers,
    SetOvsStaticMac,
    Where,
)
from netplumb.agent.errors import Conflict, KernelFeatureMissing

AGENT = "a9e7c0de"
OVS = BridgeSpec(name="bri0", kind=BridgeKind.OVS, vni=100, tunnel="vxlan")
LINUX = BridgeSpec(name="brl0", kind=BridgeKind.LINUX, vni=200, tunnel="vxlan")


def peers(*addrs: str) -> list[PeerRecord]:
    return [PeerRecord(ipaddress.ip_address(a)) for a in addrs]


@pytest.mark.parametrize(
    ("tunnel", "v6", "mtu"),
    [("vxlan", False, 1450), ("geneve", False, 1450), ("gre", False, 1458), ("vxlan", True, 1430)],
)
def test_overlay_mtu_leaves_room_for_the_encapsulation(tunnel: str, v6: bool, mtu: int) -> None:
    assert overlay.overlay_mtu(1500, tunnel, v6) == mtu


def test_names_fit_ifnamsiz_and_are_stable() -> None:
    a = overlay.tunnel_port_name("bri0", "198.18.0.12")
    assert a == overlay.tunnel_port_name("bri0", "198.18.0.12")
    assert a != overlay.tunnel_port_name("bri0", "198.18.0.13")
    assert a != overlay.tunnel_port_name("bri1", "198.18.0.12")
    assert len(a) <= 15 and len(overlay.vxlan_name(16_777_215)) <= 15


def test_one_tunnel_per_peer_keyed_by_the_vni() -> None:
    ops = overlay.plan_ovs_tunnels(OVS, peers("198.18.0.12", "198.18.0.13"), "198.18.0.11", [])
    assert [type(op) for op in ops] == [AddOvsPort, AddOvsPort]
    first = ops[0]
    assert isinstance(first, AddOvsPort)
    assert first.type == "vxlan" and first.bridge == "bri0"
    assert dict(first.options) == {
        "key": "100",
        "remote_ip": "198.18.0.12",
        "local_ip": "198.18.0.11",
    }
    assert dict(first.external_ids)[overlay.PEER_ID] == "198.18.0.12"
    assert first.protected  # split horizon: no loops through a full mesh


def _seen(add: AddOvsPort, **kw: object) -> ObservedOvsPort:
    fields: dict[str, object] = {
        "name": add.name,
        "bridge": add.bridge,
        "type": add.type,
        "options": dict(add.options),
        "tag": 0,
        "owner": AGENT,
        "external_ids": dict(add.external_ids),
        "protected": True,
    }
    fields.update(kw)
    return ObservedOvsPort(**fields)  # type: ignore[arg-type]


def test_tunnels_converge_and_removed_peers_lose_theirs() -> None:
    want = overlay.desired_tunnels(OVS, peers("198.18.0.12", "198.18.0.13"), "")
    seen = [_seen(p) for p in want.values()]
    assert overlay.plan_ovs_tunnels(OVS, peers("198.18.0.12", "198.18.0.13"), "", seen) == ()
    gone = overlay.tunnel_port_name("bri0", "198.18.0.13")
    assert overlay.plan_ovs_tunnels(OVS, peers("198.18.0.12"), "", seen) == (DelOvsPort(gone),)
    # a changed option (another local address) is rewritten in place
    ops = overlay.plan_ovs_tunnels(OVS, peers("198.18.0.12", "198.18.0.13"), "198.18.0.99", seen)
    assert len(ops) == 2 and all(isinstance(op, AddOvsPort) for op in ops)


def test_linux_overlay_creates_the_vxlan_device_and_floods_to_every_peer() -> None:
    ops = overlay.plan_linux_overlay(
        LINUX, peers("198.18.0.12", "198.18.0.13"), "198.18.0.11", 1450, None, AGENT
    )
    assert ops == (
        CreateVxlan("npvx200", 200, "198.18.0.11", "brl0", 1450, overlay.vxlan_alias(AGENT), 4789),
        AddFlood("npvx200", "198.18.0.12"),
        AddFlood("npvx200", "198.18.0.13"),
    )


def _vx(**kw: object) -> ObservedVxlan:
    fields: dict[str, object] = {
        "name": "npvx200",
        "vni": 200,
        "local": "198.18.0.11",
        "master": "brl0",
        "learning": False,
        "mtu": 1450,
        "alias": overlay.vxlan_alias(AGENT),
        "flood_to": ("198.18.0.12", "198.18.0.13"),
    }
    fields.update(kw)
    return ObservedVxlan(**fields)  # type: ignore[arg-type]


def test_linux_overlay_flood_list_follows_the_peers() -> None:
    ps = peers("198.18.0.12", "198.18.0.13")
    assert overlay.plan_linux_overlay(LINUX, ps, "198.18.0.11", 1450, _vx(), AGENT) == ()
    assert overlay.plan_linux_overlay(
        LINUX, peers("198.18.0.13", "198.18.0.14"), "198.18.0.11", 1450, _vx(), AGENT
    ) == (DelFlood("npvx200", "198.18.0.12"), AddFlood("npvx200", "198.18.0.14"))


def test_a_wrong_vxlan_device_is_recreated_a_foreign_one_is_a_conflict() -> None:
    ps = peers("198.18.0.12")
    for wrong in (_vx(local="198.18.0.99"), _vx(learning=True), _vx(master="other")):
        ops = overlay.plan_linux_overlay(LINUX, ps, "198.18.0.11", 1450, wrong, AGENT)
        assert ops[0] == DeleteLink(Where.HOST, "npvx200") and isinstance(ops[1], CreateVxlan)
    with pytest.raises(Conflict):
        overlay.plan_linux_overlay(LINUX, ps, "198.18.0.11", 1450, _vx(alias="someone"), AGENT)


def test_linux_overlays_need_the_tunnel_in_the_kernel() -> None:
    feats = HostFeatures(vxlan=True, extras={"vxlan": True, "geneve": False, "gretap": False})
    overlay.check_linux_tunnel(LINUX, feats)
    for tunnel, kind in (("geneve", "geneve"), ("gre", "gretap")):
        with pytest.raises(KernelFeatureMissing) as e:
            overlay.check_linux_tunnel(BridgeSpec(name="b", vni=5, tunnel=tunnel), feats)
        assert e.value.feature == kind and e.value.field == "spec.tunnel"


def test_ovs_bridge_ownership() -> None:
    ops, owned = overlay.plan_ovs_bridge(OVS, None, None, AGENT, "netdev", 1450)
    # a MAC that is the same when the bridge is made again (after an OVS
    # database wipe) and differs between agents
    mac = naming.bridge_mac("bri0", AGENT)
    assert ops == (AddOvsBridge("bri0", "netdev", 1450, mac),) and owned
    assert mac != naming.bridge_mac("bri0", "other")
    mine = ObservedOvsBridge("bri0", "netdev", AGENT)
    theirs = ObservedOvsBridge("bri0", "system", "")
    assert overlay.plan_ovs_bridge(OVS, mine, None, AGENT, "netdev", 0) == ((), True)
    assert overlay.plan_ovs_bridge(OVS, theirs, None, AGENT, "netdev", 0) == ((), False)
    adopted = BridgeRecord(OVS, owned=False)
    with pytest.raises(Conflict):
        overlay.plan_ovs_bridge(OVS, None, adopted, AGENT, "netdev", 0)


# ------------------------------------------- known endpoints on OVS bridges

REMOTE = (
    ("198.19.100.5", "02:00:00:00:00:05", "198.18.0.12"),
    ("198.19.100.6", "02:00:00:00:00:06", "198.18.0.13"),
    ("2001:db8::6", "02:00:00:00:00:06", "198.18.0.13"),
)
PORTS = {"198.18.0.12": "nt000000000012", "198.18.0.13": "nt000000000013"}
READY = ObservedOvsKnown(ready_ports=("nt000000000012", "nt000000000013"))


def test_ovs_known_endpoints_get_static_macs_and_arp_answers() -> None:
    ops = overlay.plan_ovs_known_endpoints("ov1", REMOTE, PORTS, READY)
    assert ops == (
        SetOvsStaticMac("ov1", "nt000000000012", "02:00:00:00:00:05"),
        SetOvsStaticMac("ov1", "nt000000000013", "02:00:00:00:00:06"),
        # IPv4 only: neighbour discovery stays multicast
        SetOvsArpAnswers(
            "ov1",
            (("198.19.100.5", "02:00:00:00:00:05"), ("198.19.100.6", "02:00:00:00:00:06")),
        ),
    )


def test_ovs_known_endpoints_converge_to_nothing_to_do() -> None:
    seen = ObservedOvsKnown(
        static_macs=(
            ("02:00:00:00:00:05", "nt000000000012"),
            ("02:00:00:00:00:06", "nt000000000013"),
        ),
        arp_answers=(("198.19.100.5", "02:00:00:00:00:05"), ("198.19.100.6", "02:00:00:00:00:06")),
        ready_ports=READY.ready_ports,
    )
    assert overlay.plan_ovs_known_endpoints("ov1", REMOTE, PORTS, seen) == ()


def test_ovs_known_endpoints_follow_moves_and_departures() -> None:
    seen = ObservedOvsKnown(
        # .05 moved to another host; a gone endpoint's MAC is still there
        static_macs=(
            ("02:00:00:00:00:05", "nt000000000013"),
            ("02:00:00:00:00:99", "nt000000000012"),
        ),
        arp_answers=(("198.19.100.99", "02:00:00:00:00:99"),),
        ready_ports=READY.ready_ports,
    )
    remote = REMOTE[:1]
    ops = overlay.plan_ovs_known_endpoints("ov1", remote, PORTS, seen)
    assert ops == (
        DelOvsStaticMac("ov1", "02:00:00:00:00:05"),
        DelOvsStaticMac("ov1", "02:00:00:00:00:99"),
        SetOvsStaticMac("ov1", "nt000000000012", "02:00:00:00:00:05"),
        SetOvsArpAnswers("ov1", (("198.19.100.5", "02:00:00:00:00:05"),)),
    )


def test_ovs_endpoints_behind_a_host_with_no_tunnel_yet_are_left_to_flooding() -> None:
    ops = overlay.plan_ovs_known_endpoints("ov1", REMOTE, {"198.18.0.12": "nt000000000012"}, READY)
    assert all("02:00:00:00:00:06" not in str(op) for op in ops)
    # a tunnel that ovs-vswitchd has not built (no OpenFlow port yet, or in error)
    ops = overlay.plan_ovs_known_endpoints(
        "ov1", REMOTE, PORTS, ObservedOvsKnown(ready_ports=("nt000000000012",))
    )
    assert all("02:00:00:00:00:06" not in str(op) for op in ops)
    assert SetOvsArpAnswers("ov1", (("198.19.100.5", "02:00:00:00:00:05"),)) in ops


def test_arp_answer_flows_carry_the_mac_in_our_cookie() -> None:
    flow = overlay.arp_answer_flow("198.19.100.5", "02:ab:cd:00:00:05")
    assert "arp_tpa=198.19.100.5" in flow and "arp_op=1" in flow
    cookie = int(flow.split(",", 1)[0].removeprefix("cookie="), 16)
    assert overlay.cookie_mac(cookie) == "02:ab:cd:00:00:05"
    assert overlay.cookie_mac(0) is None
    assert overlay.cookie_mac(0x1234 << 48 | 5) is None
