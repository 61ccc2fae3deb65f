"""The fake host behaves like the kernel where the planner's contracts
depend on it; these pin that behaviour down, so a convergence test that
passes on the fake means something."""

from __future__ import annotations

import ipaddress

import pytest
from netplumb.agent.core.model import HostFeatures, RouteSpec
from netplumb.agent.core.ops import (
    AddAddress,
    AddRoute,
    Announce,
    CreateBridge,
    CreateVeth,
    DelAddress,
    DeleteLink,
    DelRoute,
    SetBridgeVlanFiltering,
    SetMac,
    SetMaster,
    SetMtu,
    SetPortVlan,
    SetUp,
    Where,
)
from netplumb.agent.drivers.fake import HOST, FakeHost, FakeNetlink, Route
from netplumb.agent.errors import (
    Conflict,
    InternalError,
    InvalidSpec,
    KernelFeatureMissing,
    NetplumbError,
    NotFound,
)

ip = ipaddress.ip_interface
net = ipaddress.ip_network
addr = ipaddress.ip_address
NS = "/run/netns/blue"


@pytest.fixture
def host() -> FakeHost:
    h = FakeHost()
    h.add_netns(NS)
    h.apply([CreateBridge("br0", 0, "tag:br"), SetUp(Where.HOST, "br0")], None)
    h.apply([CreateVeth("np1", "eth1", "02:00:00:00:00:01", 1500, "tag:ep")], NS)
    return h


def test_create_veth_makes_both_ends_tagged_and_paired(host: FakeHost) -> None:
    a, b = host.link(HOST, "np1"), host.link(NS, "eth1")
    assert a is not None and b is not None
    assert a.kind == b.kind == "veth" and a.alias == b.alias == "tag:ep"
    assert a.peer == (NS, b.index) and b.peer == (HOST, a.index) and a.index != b.index
    assert b.mac == "02:00:00:00:00:01" and a.mtu == b.mtu == 1500
    assert not a.up and not b.up
    seen = host.observe_endpoint("np1", "eth1", NS)
    assert seen.host is not None and seen.guest is not None
    assert seen.host.peer_index == seen.guest.index and seen.guest.peer_index == seen.host.index
    assert host.link(HOST, "eth1") is None  # the guest end never appears on the host


def test_names_in_use_are_a_conflict(host: FakeHost) -> None:
    with pytest.raises(Conflict):
        host.apply([CreateVeth("np1", "eth9", "02:00:00:00:00:02", 1500, "t")], NS)
    with pytest.raises(Conflict):
        host.apply([CreateVeth("np9", "eth1", "02:00:00:00:00:02", 1500, "t")], NS)
    with pytest.raises(Conflict):
        host.apply([CreateBridge("br0", 0, "t")], None)


def test_deleting_either_end_deletes_both_with_addresses_and_routes(host: FakeHost) -> None:
    host.apply(
        [
            SetUp(Where.GUEST, "eth1"),
            AddAddress(Where.GUEST, "eth1", ip("198.18.0.2/24")),
            AddRoute("eth1", RouteSpec(net("0.0.0.0/0"), addr("198.18.0.1"))),
        ],
        NS,
    )
    host.apply([DeleteLink(Where.GUEST, "eth1")], NS)
    assert host.link(NS, "eth1") is None and host.link(HOST, "np1") is None
    host.apply([CreateVeth("np1", "eth1", "02:00:00:00:00:01", 1500, "t")], NS)
    host.apply([DeleteLink(Where.HOST, "np1")], None)
    assert host.link(NS, "eth1") is None and host.link(HOST, "np1") is None


def test_deleting_what_is_absent_succeeds(host: FakeHost) -> None:
    host.apply(
        [
            DeleteLink(Where.HOST, "nothing"),
            DelAddress(Where.GUEST, "eth1", ip("198.18.128.1/17")),
            DelRoute("eth1", RouteSpec(net("198.18.128.0/17"))),
        ],
        NS,
    )


def test_deleting_a_bridge_releases_its_ports(host: FakeHost) -> None:
    host.apply([SetMaster("np1", "br0")], None)
    host.apply([DeleteLink(Where.HOST, "br0")], None)
    port = host.link(HOST, "np1")
    assert port is not None and port.master == "" and port.vlans == ()


def test_enslaving_resets_the_port_vlans(host: FakeHost) -> None:
    host.apply([CreateBridge("br1", 0, "t"), SetMaster("np1", "br0"), SetPortVlan("np1", 10)], None)
    port = host.link(HOST, "np1")
    assert port is not None and port.vlans == (10,)
    host.apply([SetMaster("np1", "br0")], None)  # same bridge: nothing changes
    assert port.vlans == (10,)
    host.apply([SetMaster("np1", "br1")], None)
    assert port.master == "br1" and port.vlans == (1,)


def test_set_master_needs_a_bridge(host: FakeHost) -> None:
    with pytest.raises(NotFound):
        host.apply([SetMaster("np1", "nobridge")], None)
    host.add_link(HOST, "eth0", "ethernet")
    with pytest.raises(KernelFeatureMissing):
        host.apply([SetMaster("np1", "eth0")], None)


def test_set_up_adds_the_link_local_address(host: FakeHost) -> None:
    host.apply([SetUp(Where.GUEST, "eth1")], NS)
    link = host.link(NS, "eth1")
    assert link is not None and link.up
    assert [str(a) for a in link.addresses] == ["fe80::ff:fe00:1/64"]


def test_link_down_loses_routes_and_ipv6_addresses(host: FakeHost) -> None:
    host.apply(
        [
            SetUp(Where.GUEST, "eth1"),
            AddAddress(Where.GUEST, "eth1", ip("198.18.0.2/24")),
            AddAddress(Where.GUEST, "eth1", ip("2001:db8::2/64")),
            AddRoute("eth1", RouteSpec(net("198.19.192.0/24"))),
        ],
        NS,
    )
    host.set_down(NS, "eth1")
    link = host.link(NS, "eth1")
    assert link is not None and link.addresses == [ip("198.18.0.2/24")] and link.routes == []


def test_small_mtu_disables_ipv6(host: FakeHost) -> None:
    host.apply(
        [SetUp(Where.GUEST, "eth1"), AddAddress(Where.GUEST, "eth1", ip("2001:db8::2/64"))], NS
    )
    host.apply([SetMtu(Where.GUEST, "eth1", 1000)], NS)
    link = host.link(NS, "eth1")
    assert link is not None and link.addresses == []
    with pytest.raises(InternalError):  # EINVAL from the kernel
        host.apply([AddAddress(Where.GUEST, "eth1", ip("2001:db8::2/64"))], NS)
    with pytest.raises(NotFound):  # ENODEV from the kernel
        host.apply([AddRoute("eth1", RouteSpec(net("2001:db8:9::/48")))], NS)
    host.apply([SetMtu(Where.GUEST, "eth1", 1500)], NS)
    assert [a.ip.is_link_local for a in link.addresses] == [True]


@pytest.mark.parametrize("mtu", [0, 67, 65536])
def test_out_of_range_mtu_is_refused(host: FakeHost, mtu: int) -> None:
    with pytest.raises(InvalidSpec):
        host.apply([SetMtu(Where.HOST, "np1", mtu)], None)


def test_multicast_mac_is_refused(host: FakeHost) -> None:
    with pytest.raises(InvalidSpec):
        host.apply([SetMac(Where.GUEST, "eth1", "01:00:5e:00:00:01")], NS)
    host.apply([SetMac(Where.GUEST, "eth1", "02:00:00:00:00:09")], NS)
    assert host.link(NS, "eth1").mac == "02:00:00:00:00:09"  # type: ignore[union-attr]


def test_adding_an_existing_address_is_a_no_op(host: FakeHost) -> None:
    ops = [AddAddress(Where.GUEST, "eth1", ip("198.18.0.2/24"))] * 2
    host.apply([*ops, AddAddress(Where.GUEST, "eth1", ip("2001:db8::2/64"))], NS)
    host.apply([AddAddress(Where.GUEST, "eth1", ip("2001:db8::2/48"))], NS)  # IPv6: same address
    host.apply([AddAddress(Where.GUEST, "eth1", ip("198.18.0.2/16"))], NS)  # IPv4: another one
    link = host.link(NS, "eth1")
    assert link is not None
    assert [str(a) for a in link.addresses] == ["198.18.0.2/24", "2001:db8::2/64", "198.18.0.2/16"]


def test_deleting_a_primary_deletes_its_secondaries(host: FakeHost) -> None:
    primary, secondary, other = ip("198.18.0.2/24"), ip("198.18.0.3/24"), ip("198.18.1.2/24")
    host.apply([AddAddress(Where.GUEST, "eth1", a) for a in (primary, secondary, other)], NS)
    host.apply([DelAddress(Where.GUEST, "eth1", secondary)], NS)
    link = host.link(NS, "eth1")
    assert link is not None and link.addresses == [primary, other]
    host.apply(
        [AddAddress(Where.GUEST, "eth1", secondary), DelAddress(Where.GUEST, "eth1", primary)], NS
    )
    assert link.addresses == [other]


def test_deleting_the_last_ipv4_address_flushes_ipv4_routes(host: FakeHost) -> None:
    host.apply(
        [
            SetUp(Where.GUEST, "eth1"),
            AddAddress(Where.GUEST, "eth1", ip("198.18.0.2/24")),
            AddAddress(Where.GUEST, "eth1", ip("198.18.1.2/24")),
            AddAddress(Where.GUEST, "eth1", ip("2001:db8::2/64")),
            AddRoute("eth1", RouteSpec(net("198.18.128.0/17"), addr("198.18.0.1"))),
            AddRoute("eth1", RouteSpec(net("2001:db8:9::/48"), addr("2001:db8::1"))),
        ],
        NS,
    )
    link = host.link(NS, "eth1")
    assert link is not None
    host.apply([DelAddress(Where.GUEST, "eth1", ip("198.18.0.2/24"))], NS)
    assert len(link.routes) == 2  # not the last one: routes stay
    host.apply([DelAddress(Where.GUEST, "eth1", ip("198.18.1.2/24"))], NS)
    assert [str(r.destination) for r in link.routes] == ["2001:db8:9::/48"]


def test_routes_need_the_link_up_and_an_on_link_next_hop(host: FakeHost) -> None:
    route = RouteSpec(net("198.18.128.0/17"), addr("198.18.0.1"))
    with pytest.raises(InternalError):  # ENETDOWN
        host.apply([AddRoute("eth1", route)], NS)
    host.apply([SetUp(Where.GUEST, "eth1")], NS)
    with pytest.raises(InvalidSpec) as e:  # ENETUNREACH, as the driver translates it
        host.apply([AddRoute("eth1", route)], NS)
    assert e.value.field == "spec.routes"
    host.apply(
        [AddRoute("eth1", RouteSpec(net("198.18.0.1/32"), onlink=True)), AddRoute("eth1", route)],
        NS,
    )
    host.apply([AddRoute("eth1", RouteSpec(net("::/0"), addr("fe80::1")))], NS)  # link-local: fine
    with pytest.raises(NetplumbError):
        host.apply([AddRoute("eth1", RouteSpec(net("::/0"), addr("2001:db8::1")))], NS)


def test_a_route_replaces_the_one_with_its_destination_and_metric(host: FakeHost) -> None:
    host.add_link(NS, "eth0", "veth", up=True)
    host.add_route(NS, "eth0", Route(net("0.0.0.0/0"), addr("198.18.128.1"), 0, proto=4))
    host.apply(
        [SetUp(Where.GUEST, "eth1"), AddAddress(Where.GUEST, "eth1", ip("198.18.0.2/24"))], NS
    )
    host.apply([AddRoute("eth1", RouteSpec(net("0.0.0.0/0"), addr("198.18.0.1")))], NS)
    host.apply([AddRoute("eth1", RouteSpec(net("0.0.0.0/0"), addr("198.18.0.1"), 100))], NS)
    assert host.link(NS, "eth0").routes == []  # type: ignore[union-attr]
    eth1 = host.link(NS, "eth1")
    assert eth1 is not None and [(str(r.via), r.metric) for r in eth1.routes] == [
        ("198.18.0.1", 0),
        ("198.18.0.1", 100),
    ]


def test_only_netplumb_routes_are_observed(host: FakeHost) -> None:
    host.apply([SetUp(Where.GUEST, "eth1")], NS)
    host.add_route(NS, "eth1", Route(net("198.18.128.0/17"), None, 0, proto=4))
    host.add_route(NS, "eth1", Route(net("198.18.129.0/24"), None, 0))
    seen = host.observe_endpoint("np1", "eth1", NS).guest
    assert seen is not None and [str(r.destination) for r in seen.routes] == ["198.18.129.0/24"]


def test_guest_ops_need_a_guest_namespace(host: FakeHost) -> None:
    with pytest.raises(InternalError):
        host.apply([SetUp(Where.GUEST, "eth1")], None)
    with pytest.raises(NotFound):
        host.apply([Announce("nothing", "02:00:00:00:00:01", ())], NS)


def test_vlan_ops(host: FakeHost) -> None:
    with pytest.raises(InternalError):  # EINVAL: not a bridge port
        host.apply([SetPortVlan("np1", 10)], None)
    host.apply(
        [SetBridgeVlanFiltering("br0"), SetMaster("np1", "br0"), SetPortVlan("np1", 10)], None
    )
    assert host.observe_bridge("br0").vlan_filtering
    assert host.observe_endpoint("np1", "eth1", NS).host.vlans == (10,)  # type: ignore[union-attr]


def test_failed_apply_reports_the_completed_ops(host: FakeHost) -> None:
    ops = [SetUp(Where.HOST, "np1"), SetUp(Where.HOST, "nothing"), SetUp(Where.GUEST, "eth1")]
    with pytest.raises(NotFound) as e:
        host.apply(ops, NS)
    assert e.value.completed == ops[:1]  # type: ignore[attr-defined]
    assert not host.link(NS, "eth1").up  # type: ignore[union-attr]


def test_deleting_a_namespace_deletes_its_veth_peers(host: FakeHost) -> None:
    host.delete_netns(NS)
    assert host.link(HOST, "np1") is None and host.netns_ident(NS) is None
    with pytest.raises(NotFound):
        host.open_netns(NS, "spec.guest")


def test_fake_netlink_driver_interface(host: FakeHost) -> None:
    nl = FakeNetlink(host, HostFeatures(), fail_at="SetMtu")
    handle = host.open_netns(NS)
    assert handle.path == NS and handle.ident == host.netns_ident(NS)
    assert nl.features() == HostFeatures()
    assert nl.observe_bridge("br0").is_bridge
    assert nl.tagged_host_links() == []  # "tag:..." is not netplumb's tag
    done = nl.apply([SetUp(Where.GUEST, "eth1")], handle)
    assert done == [SetUp(Where.GUEST, "eth1")] and nl.applied == [(done[0], NS)]
    with pytest.raises(InternalError) as e:
        nl.apply([SetUp(Where.HOST, "np1"), SetMtu(Where.HOST, "np1", 1400)], handle)
    assert e.value.completed == [SetUp(Where.HOST, "np1")]  # type: ignore[attr-defined]
    failures = nl.apply_quietly(
        [DeleteLink(Where.HOST, "gone"), SetMtu(Where.HOST, "np1", 1), SetUp(Where.HOST, "x")],
        handle,
    )
    assert [type(op).__name__ for op, _ in failures] == ["SetMtu"]
