"""The planner, case by case: what it plans for a missing endpoint, a
matching one, each kind of drift, links in the way, detach, and bridges."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from netplumb.agent.core import naming
from netplumb.agent.core.model import (
    BridgeRecord,
    BridgeSpec,
    EndpointRecord,
    HostFeatures,
    ObservedBridge,
    ObservedEndpoint,
    ObservedLink,
    ObservedRoute,
    RouteSpec,
)
from netplumb.agent.core.ops import (
    AddAddress,
    AddRoute,
    Announce,
    CreateBridge,
    CreateVeth,
    DelAddress,
    DeleteLink,
    DelRoute,
    EnableIpv6,
    Op,
    SetBridgeVlanFiltering,
    SetMac,
    SetMaster,
    SetMtu,
    SetPortVlan,
    SetUp,
    Where,
)
from netplumb.agent.core.plan import (
    _route_order,
    check_endpoint_features,
    endpoint_routes,
    plan_bridge,
    plan_bridge_delete,
    plan_bridge_vlan,
    plan_detach,
    plan_endpoint,
)
from netplumb.agent.drivers.fake import HOST
from netplumb.agent.errors import Conflict, InvalidSpec, KernelFeatureMissing, PreconditionFailed
from unit_helpers import (
    AGENT,
    BRIDGE,
    FEATURES,
    GUEST_PATH,
    OTHER_BRIDGE,
    Request,
    alias,
    desired,
    host_with_bridges,
    observe,
    plan_on,
    plumb,
    record_for,
)

ip = ipaddress.ip_interface
net = ipaddress.ip_network
addr = ipaddress.ip_address

BASE = Request(
    ifname="",
    mac="",
    mtu=0,
    vlan=0,
    addresses=("198.18.0.10/24", "2001:db8::10/64"),
    gateways=("198.18.0.1",),
    routes=(("198.19.0.0/16", "198.18.0.254", 0),),
)


def rec(**changes: object) -> EndpointRecord:
    return record_for(replace(BASE, **changes).spec())  # type: ignore[arg-type]


def types(ops: tuple[Op, ...]) -> list[str]:
    return [type(op).__name__ for op in ops]


def in_sync(record: EndpointRecord) -> ObservedEndpoint:
    """What the host reports for ``record`` when it matches exactly
    (including the link-local address the kernel adds by itself)."""
    want = desired(record)
    host = ObservedLink(
        name=want.host_ifname,
        index=7,
        kind="veth",
        alias=want.alias,
        mac="0a:00:00:00:00:07",
        mtu=want.mtu,
        up=True,
        master=want.bridge,
        peer_index=8,
        vlans=(want.vlan,) if want.vlan else (),
    )
    guest = ObservedLink(
        name=want.ifname,
        index=8,
        kind="veth",
        alias=want.alias,
        mac=want.mac,
        mtu=want.mtu,
        up=True,
        peer_index=7,
        addresses=(*want.addresses, ip("fe80::1234/64")),
        routes=tuple(ObservedRoute(r.destination, r.via, r.metric) for r in want.routes),
    )
    return ObservedEndpoint(host=host, guest=guest)


# ------------------------------------------------------------ missing endpoint


def test_missing_endpoint_gets_the_whole_create_sequence_in_order() -> None:
    r = rec()
    want = desired(r)
    ops = plan_endpoint(want, ObservedEndpoint(None, None), FEATURES)
    g = "eth1"
    assert ops == (
        # created as a port of the bridge, and up, in one message
        CreateVeth(r.host_ifname, g, r.mac, 1500, naming.endpoint_alias(r.id, AGENT), BRIDGE),
        EnableIpv6(g),  # Docker turns IPv6 off in containers it gives no IPv6
        AddAddress(Where.GUEST, g, ip("198.18.0.10/24")),
        AddAddress(Where.GUEST, g, ip("2001:db8::10/64")),
        SetUp(Where.GUEST, g),
        AddRoute(g, RouteSpec(net("198.19.0.0/16"), addr("198.18.0.254"))),
        AddRoute(g, RouteSpec(net("0.0.0.0/0"), addr("198.18.0.1"))),
        Announce(g, r.mac, want.addresses),
    )


def test_create_sequence_puts_the_vlan_right_after_the_bridge_port() -> None:
    ops = plan_endpoint(desired(rec(vlan=42)), ObservedEndpoint(None, None), FEATURES)
    names = types(ops)
    assert names[:2] == ["CreateVeth", "SetPortVlan"]
    assert ops[1] == SetPortVlan(rec().host_ifname, 42)


def test_on_link_routes_come_before_routes_through_them() -> None:
    r = rec(
        addresses=("198.18.0.10/24",),
        gateways=("198.19.250.1",),  # outside 198.18.0.0/24: needs an on-link route
        routes=(("198.19.0.0/16", "198.19.250.1", 0), ("198.19.192.0/24", "", 0)),
    )
    ops = plan_endpoint(desired(r), ObservedEndpoint(None, None), FEATURES)
    routes = [op.route for op in ops if isinstance(op, AddRoute)]
    on_link = [i for i, x in enumerate(routes) if x.via is None]
    via = [i for i, x in enumerate(routes) if x.via is not None]
    assert max(on_link) < min(via)
    assert routes[-1].destination.prefixlen == 0  # the default route last
    assert RouteSpec(net("198.19.250.1/32"), onlink=True) in routes


def test_no_address_no_announcement() -> None:
    ops = plan_endpoint(
        desired(rec(addresses=(), gateways=(), routes=())), ObservedEndpoint(None, None), FEATURES
    )
    assert types(ops) == ["CreateVeth", "SetUp"]


# ------------------------------------------------------------ matching, drift


def test_matching_endpoint_plans_nothing() -> None:
    r = rec(vlan=7)
    assert plan_endpoint(desired(r), in_sync(r), FEATURES) == ()


def test_ipv6_default_metric_reported_as_zero_matches() -> None:
    r = rec(routes=(("2001:db8:9::/48", "2001:db8::1", 1024),))
    assert r.spec.routes[0].metric == 0
    assert plan_endpoint(desired(r), in_sync(r), FEATURES) == ()


R = rec()
H, G = R.host_ifname, "eth1"


def host_drift(**changes: object) -> ObservedEndpoint:
    seen = in_sync(R)
    assert seen.host is not None
    return replace(seen, host=replace(seen.host, **changes))  # type: ignore[arg-type]


def guest_drift(**changes: object) -> ObservedEndpoint:
    seen = in_sync(R)
    assert seen.guest is not None
    return replace(seen, guest=replace(seen.guest, **changes))  # type: ignore[arg-type]


_SYNC_GUEST = in_sync(R).guest
assert _SYNC_GUEST is not None
_ADDRS = _SYNC_GUEST.addresses
_ROUTES = _SYNC_GUEST.routes
_EXTRA_ROUTE = ObservedRoute(net("198.19.192.0/24"), None, 0)


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        pytest.param(host_drift(mtu=9000), (SetMtu(Where.HOST, H, 1500),), id="host-mtu"),
        pytest.param(guest_drift(mtu=1400), (SetMtu(Where.GUEST, G, 1500),), id="guest-mtu"),
        pytest.param(
            guest_drift(mac="02:00:00:00:00:99"), (SetMac(Where.GUEST, G, R.mac),), id="mac"
        ),
        pytest.param(host_drift(master=""), (SetMaster(H, BRIDGE),), id="no-master"),
        pytest.param(host_drift(master=OTHER_BRIDGE), (SetMaster(H, BRIDGE),), id="wrong-master"),
        pytest.param(host_drift(up=False), (SetUp(Where.HOST, H),), id="host-down"),
        pytest.param(
            guest_drift(up=False),
            # a link that was down has lost its routes: all are re-added
            (SetUp(Where.GUEST, G), *(AddRoute(G, x) for x in _route_order(desired(R).routes))),
            id="guest-down",
        ),
        pytest.param(
            guest_drift(addresses=(*_ADDRS, ip("198.18.0.99/24"))),
            (
                DelAddress(Where.GUEST, G, ip("198.18.0.99/24")),
                # the kernel deletes secondaries with a primary: ours is re-added
                AddAddress(Where.GUEST, G, ip("198.18.0.10/24")),
                *(AddRoute(G, x) for x in _route_order(desired(R).routes)),
                Announce(G, R.mac, desired(R).addresses),
            ),
            id="extra-address",
        ),
        pytest.param(
            guest_drift(addresses=_ADDRS[1:]),
            (
                AddAddress(Where.GUEST, G, ip("198.18.0.10/24")),
                Announce(G, R.mac, desired(R).addresses),
            ),
            id="missing-address",
        ),
        pytest.param(
            guest_drift(addresses=(ip("198.18.0.10/16"), *_ADDRS[1:])),
            (
                DelAddress(Where.GUEST, G, ip("198.18.0.10/16")),
                AddAddress(Where.GUEST, G, ip("198.18.0.10/24")),
                *(AddRoute(G, x) for x in _route_order(desired(R).routes)),
                Announce(G, R.mac, desired(R).addresses),
            ),
            id="wrong-prefix",
        ),
        pytest.param(
            guest_drift(routes=(*_ROUTES, _EXTRA_ROUTE)),
            (DelRoute(G, RouteSpec(net("198.19.192.0/24"))),),
            id="extra-route",
        ),
        pytest.param(
            guest_drift(routes=_ROUTES[1:]),
            (AddRoute(G, desired(R).routes[0]),),
            id="missing-route",
        ),
        pytest.param(
            guest_drift(routes=(ObservedRoute(net("0.0.0.0/0"), addr("198.18.0.2"), 0),)),
            (
                DelRoute(G, RouteSpec(net("0.0.0.0/0"), addr("198.18.0.2"))),
                AddRoute(G, RouteSpec(net("198.19.0.0/16"), addr("198.18.0.254"))),
                AddRoute(G, RouteSpec(net("0.0.0.0/0"), addr("198.18.0.1"))),
            ),
            id="wrong-gateway",
        ),
    ],
)
def test_each_kind_of_drift_plans_exactly_its_repair(
    seen: ObservedEndpoint, expected: tuple[Op, ...]
) -> None:
    assert plan_endpoint(desired(R), seen, FEATURES) == expected


def test_wrong_access_vlan_is_reset() -> None:
    r = rec(vlan=10)
    seen = in_sync(r)
    assert seen.host is not None
    seen = replace(seen, host=replace(seen.host, vlans=(1,)))
    assert plan_endpoint(desired(r), seen, FEATURES) == (SetPortVlan(r.host_ifname, 10),)


def test_kernel_link_local_addresses_are_left_alone() -> None:
    seen = guest_drift(addresses=(*_ADDRS, ip("fe80::aa:bbff:fecc:ddee/64")))
    assert plan_endpoint(desired(R), seen, FEATURES) == ()


# ---------------------------------------------------------- things in the way


@pytest.mark.parametrize(
    "foreign_alias", ["", "somebody-else", naming.endpoint_alias("0" * 16, AGENT)]
)
def test_foreign_host_link_is_a_conflict(foreign_alias: str) -> None:
    seen = ObservedEndpoint(
        host=ObservedLink(name=H, index=3, kind="veth", alias=foreign_alias), guest=None
    )
    with pytest.raises(Conflict) as e:
        plan_endpoint(desired(R), seen, FEATURES)
    assert e.value.field == "spec.host_ifname"
    assert H in e.value.message


def test_foreign_guest_link_is_a_conflict() -> None:
    seen = ObservedEndpoint(host=None, guest=ObservedLink(name=G, index=3, kind="dummy"))
    with pytest.raises(Conflict) as e:
        plan_endpoint(desired(R), seen, FEATURES)
    assert e.value.field == "spec.ifname"


def test_links_of_another_agent_are_a_conflict() -> None:
    """The ownership tag names the agent: another netplumbd's endpoint with
    the same id is not ours to replace."""
    theirs = naming.endpoint_alias(R.id, "0ther0ne")
    seen = in_sync(R)
    assert seen.host is not None and seen.guest is not None
    seen = ObservedEndpoint(replace(seen.host, alias=theirs), replace(seen.guest, alias=theirs))
    with pytest.raises(Conflict):
        plan_endpoint(desired(R), seen, FEATURES)


def test_our_unpaired_ends_are_deleted_and_recreated() -> None:
    seen = in_sync(R)
    assert seen.host is not None and seen.guest is not None
    both = ObservedEndpoint(replace(seen.host, peer_index=99), seen.guest)
    ops = plan_endpoint(desired(R), both, FEATURES)
    assert ops[:3] == (
        DeleteLink(Where.HOST, H),
        DeleteLink(Where.GUEST, G),
        CreateVeth(H, G, R.mac, 1500, alias(R), BRIDGE),
    )
    host_only = plan_endpoint(desired(R), ObservedEndpoint(seen.host, None), FEATURES)
    assert host_only[:2] == (
        DeleteLink(Where.HOST, H),
        CreateVeth(H, G, R.mac, 1500, alias(R), BRIDGE),
    )
    guest_only = plan_endpoint(desired(R), ObservedEndpoint(None, seen.guest), FEATURES)
    assert guest_only[:2] == (
        DeleteLink(Where.GUEST, G),
        CreateVeth(H, G, R.mac, 1500, alias(R), BRIDGE),
    )


def test_vlan_without_bridge_vlan_filtering_is_refused_before_anything() -> None:
    r = rec(vlan=10)
    no_filtering = HostFeatures(bridge_vlan_filtering=False)
    for seen in (ObservedEndpoint(None, None), in_sync(r)):
        with pytest.raises(KernelFeatureMissing) as e:
            plan_endpoint(desired(r), seen, no_filtering)
        assert isinstance(e.value, PreconditionFailed)
        assert e.value.feature == "bridge-vlan-filtering"
        assert e.value.field == "spec.vlan"
        assert "OVS" in e.value.hint
    check_endpoint_features(0, no_filtering)  # no VLAN: nothing to refuse
    assert plan_endpoint(desired(rec()), in_sync(rec()), no_filtering) == ()


# -------------------------------------------------------------------- detach


def test_detach_deletes_the_host_end_when_it_is_ours() -> None:
    assert plan_detach(R, in_sync(R), AGENT) == (DeleteLink(Where.HOST, H),)


def test_detach_deletes_the_guest_end_when_only_that_is_left() -> None:
    seen = in_sync(R)
    assert plan_detach(R, ObservedEndpoint(None, seen.guest), AGENT) == (
        DeleteLink(Where.GUEST, G),
    )


def test_detach_of_nothing_or_of_foreign_links_plans_nothing() -> None:
    assert plan_detach(R, ObservedEndpoint(None, None), AGENT) == ()
    foreign = ObservedLink(name=H, index=1, kind="veth", alias="not-ours")
    assert plan_detach(R, ObservedEndpoint(foreign, replace(foreign, name=G)), AGENT) == ()
    assert plan_detach(R, in_sync(R), "0ther0ne") == ()


def test_detach_on_the_fake_host_removes_both_ends_and_the_guest_config() -> None:
    host = host_with_bridges()
    plumb(host, R)
    host.apply(plan_detach(R, observe(host, R), AGENT), GUEST_PATH)
    assert host.link(HOST, H) is None and host.link(GUEST_PATH, G) is None
    assert host.link(GUEST_PATH, "lo") is not None and host.link(HOST, BRIDGE) is not None
    assert plan_detach(R, observe(host, R), AGENT) == ()


# ------------------------------------------------------------------- bridges

BR = BridgeSpec(name="bri0", addresses=(ip("198.18.0.1/24"),), mtu=9000)
OURS = naming.bridge_alias(AGENT)


def bridge_seen(**kw: object) -> ObservedBridge:
    base = {
        "name": "bri0",
        "exists": True,
        "is_bridge": True,
        "alias": OURS,
        "mtu": 9000,
        "up": True,
        "addresses": (ip("198.18.0.1/24"),),
    }
    base.update(kw)
    return ObservedBridge(**base)  # type: ignore[arg-type]


def test_missing_bridge_is_created_and_owned() -> None:
    ops, owned = plan_bridge(BR, ObservedBridge(name="bri0", exists=False), None, AGENT)
    assert owned
    assert ops == (
        CreateBridge("bri0", 9000, OURS),
        SetMac(Where.HOST, "bri0", naming.bridge_mac("bri0", AGENT)),
        AddAddress(Where.HOST, "bri0", ip("198.18.0.1/24")),
        SetUp(Where.HOST, "bri0"),
    )


def test_a_new_bridge_gets_a_fixed_mac_the_spec_or_a_stable_one() -> None:
    """Without a MAC of its own a Linux bridge takes its lowest port's, which
    attaches and detaches change under the guests' feet."""
    ops, _ = plan_bridge(BR, ObservedBridge(name="bri0", exists=False), None, AGENT)
    again, _ = plan_bridge(BR, ObservedBridge(name="bri0", exists=False), None, AGENT)
    other, _ = plan_bridge(BR, ObservedBridge(name="bri0", exists=False), None, "another-agent")
    macs = [[op.mac for op in o if isinstance(op, SetMac)] for o in (ops, again, other)]
    assert macs[0] == macs[1] and len(macs[0]) == 1 and macs[0] != macs[2]
    assert int(macs[0][0].split(":")[0], 16) & 0x03 == 0x02  # locally administered, unicast
    given, _ = plan_bridge(
        replace(BR, mac="02:00:c6:12:00:01"), ObservedBridge(name="bri0", exists=False), None, AGENT
    )
    assert [op.mac for op in given if isinstance(op, SetMac)] == ["02:00:c6:12:00:01"]


def test_existing_bridge_of_ours_matching_plans_nothing() -> None:
    assert plan_bridge(BR, bridge_seen(), BridgeRecord(BR, owned=True), AGENT) == ((), True)


def test_existing_foreign_bridge_is_adopted_not_owned() -> None:
    seen = bridge_seen(alias="", mtu=1500, up=False, addresses=(ip("198.18.137.9/17"),))
    ops, owned = plan_bridge(BR, seen, None, AGENT)
    assert not owned
    assert ops == (
        SetMtu(Where.HOST, "bri0", 9000),
        AddAddress(Where.HOST, "bri0", ip("198.18.0.1/24")),
        SetUp(Where.HOST, "bri0"),
    )
    assert not any(isinstance(op, DelAddress | DeleteLink) for op in ops)


def test_bridge_mtu_zero_leaves_the_kernel_default() -> None:
    spec = replace(BR, mtu=0)
    assert plan_bridge(spec, bridge_seen(mtu=1500), None, AGENT) == ((), True)


def test_name_taken_by_something_else_is_a_conflict() -> None:
    with pytest.raises(Conflict) as e:
        plan_bridge(BR, bridge_seen(is_bridge=False, alias=""), None, AGENT)
    assert e.value.field == "spec.name"


def test_adopted_bridge_that_vanished_is_a_conflict_not_a_takeover() -> None:
    with pytest.raises(Conflict) as e:
        plan_bridge(
            BR, ObservedBridge(name="bri0", exists=False), BridgeRecord(BR, owned=False), AGENT
        )
    assert "bridge del" in e.value.hint


def test_owned_bridge_that_vanished_is_recreated() -> None:
    ops, owned = plan_bridge(
        BR, ObservedBridge(name="bri0", exists=False), BridgeRecord(BR, owned=True), AGENT
    )
    assert owned and isinstance(ops[0], CreateBridge)


def test_vlan_filtering_is_turned_on_once() -> None:
    assert plan_bridge_vlan(bridge_seen()) == (SetBridgeVlanFiltering("bri0"),)
    assert plan_bridge_vlan(bridge_seen(vlan_filtering=True)) == ()


def test_owned_bridge_delete_deletes_the_link() -> None:
    assert plan_bridge_delete(BridgeRecord(BR, owned=True), bridge_seen(), AGENT) == (
        DeleteLink(Where.HOST, "bri0"),
    )


def test_owned_bridge_replaced_by_someone_else_is_not_deleted() -> None:
    record = BridgeRecord(BR, owned=True)
    assert plan_bridge_delete(record, bridge_seen(alias="theirs"), AGENT) == ()
    assert plan_bridge_delete(record, bridge_seen(), "0ther0ne") == ()


def test_bridge_delete_of_a_missing_bridge_plans_nothing() -> None:
    record = BridgeRecord(BR, owned=True)
    assert plan_bridge_delete(record, ObservedBridge(name="bri0", exists=False), AGENT) == ()


def test_adopted_bridge_delete_removes_only_the_addresses_netplumb_added() -> None:
    spec = replace(BR, addresses=(ip("198.18.0.1/24"), ip("198.18.1.1/24"), ip("2001:db8::1/64")))
    record = BridgeRecord(spec, owned=False, foreign_addresses=(ip("198.18.0.1/24"),))
    seen = bridge_seen(
        alias="", addresses=(ip("198.18.0.1/24"), ip("198.18.1.1/24"), ip("198.18.128.1/17"))
    )
    assert plan_bridge_delete(record, seen, AGENT) == (
        DelAddress(Where.HOST, "bri0", ip("198.18.1.1/24")),
    )


# --------------------------------------------------------- desired endpoint


def test_gateway_inside_a_subnet_is_just_the_default_route() -> None:
    assert endpoint_routes(rec(routes=())) == (RouteSpec(net("0.0.0.0/0"), addr("198.18.0.1")),)


def test_gateway_outside_every_subnet_gets_an_on_link_host_route_first() -> None:
    r = rec(gateways=("198.19.250.1", "2001:db8:ffff::1"), routes=())
    assert endpoint_routes(r) == (
        RouteSpec(net("198.19.250.1/32"), onlink=True),
        RouteSpec(net("0.0.0.0/0"), addr("198.19.250.1")),
        RouteSpec(net("2001:db8:ffff::1/128"), onlink=True),
        RouteSpec(net("::/0"), addr("2001:db8:ffff::1")),
    )
    assert desired(r).routes == endpoint_routes(r)


def test_desired_endpoint_resolves_every_field() -> None:
    extra = RouteSpec(net("198.18.150.0/24"), addr("198.18.0.254"), 5)
    r = replace(rec(vlan=3), extra_routes=(extra,))
    want = desired(r)
    assert (want.id, want.bridge, want.ifname, want.host_ifname) == (r.id, BRIDGE, "eth1", H)
    assert (want.mac, want.mtu, want.vlan) == (r.mac, 1500, 3)
    assert want.alias == naming.endpoint_alias(r.id, AGENT)
    assert want.addresses == (ip("198.18.0.10/24"), ip("2001:db8::10/64"))
    assert want.routes[-1] == extra
    assert RouteSpec(net("198.19.0.0/16"), addr("198.18.0.254")) in want.routes


# ------------------------------------- regressions (bugs found and fixed)


def test_vlan_is_set_again_after_moving_the_port() -> None:
    host = host_with_bridges()
    r = rec(vlan=10)
    plumb(host, r)
    port = host.link(HOST, r.host_ifname)
    assert port is not None
    host.set_master(port.name, OTHER_BRIDGE)  # someone moves it to br1, VLAN 10 there
    port.vlans = (10,)
    plumb(host, r)
    assert port.master == BRIDGE and port.vlans == (10,)
    assert plan_on(host, r) == ()


def test_wanted_secondary_address_survives_deleting_an_unwanted_primary() -> None:
    host = host_with_bridges()
    r = rec(addresses=("198.18.0.10/24",), gateways=(), routes=())
    plumb(host, r)
    # Someone re-adds our address behind one of theirs: ours is now secondary.
    host.delete_address(GUEST_PATH, G, ip("198.18.0.10/24"))
    host.apply_one(AddAddress(Where.GUEST, G, ip("198.18.0.5/24")), GUEST_PATH)
    host.apply_one(AddAddress(Where.GUEST, G, ip("198.18.0.10/24")), GUEST_PATH)
    plumb(host, r)
    assert plan_on(host, r) == ()


def test_routes_are_re_added_when_the_last_ipv4_address_is_replaced() -> None:
    host = host_with_bridges()
    r = rec(addresses=("198.18.0.10/24",), routes=(("198.19.192.0/24", "", 0),))
    plumb(host, r)
    # Someone renumbers by hand: adds theirs, then removes ours (routes stay).
    host.apply_one(AddAddress(Where.GUEST, G, ip("198.18.7.7/24")), GUEST_PATH)
    host.delete_address(GUEST_PATH, G, ip("198.18.0.10/24"))
    assert {str(x.destination) for x in observe(host, r).guest.routes} == {  # type: ignore[union-attr]
        "0.0.0.0/0",
        "198.19.192.0/24",
    }
    plumb(host, r)
    assert plan_on(host, r) == ()


def test_requested_link_local_address_converges_or_is_refused() -> None:
    try:
        r = rec(addresses=("198.18.0.10/24", "fe80::5/64"))
    except InvalidSpec:
        return
    host = host_with_bridges()
    plumb(host, r)
    assert plan_on(host, r) == ()


def test_route_to_an_off_subnet_gateway_converges_or_is_refused() -> None:
    # spec.endpoint_spec refuses it: it would replace the on-link host route
    # that desired_endpoint adds for the gateway.
    with pytest.raises(InvalidSpec) as e:
        rec(
            addresses=("198.18.0.10/24",),
            gateways=("198.19.250.1",),
            routes=(("198.19.250.1/32", "198.18.0.254", 0),),
        )
    assert e.value.field == "spec.routes[0].destination"
    assert "netplumb adds" in e.value.message
