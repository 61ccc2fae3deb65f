"""The planner's contract, as a property over a fake host: for any valid
endpoint and any state the host was left in (an older spec, drift made by
hand, stale or foreign links), one round of plan + apply converges:
``plan(desired, apply(plan(desired, observed))) == ()``, the host then
matches the spec, and nothing netplumb did not tag is touched."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from netplumb.agent.core import naming
from netplumb.agent.core.model import (
    DesiredEndpoint,
    EndpointRecord,
    ObservedRoute,
    RouteSpec,
)
from netplumb.agent.core.ops import AddAddress, DeleteLink, Where
from netplumb.agent.core.plan import plan_endpoint
from netplumb.agent.drivers.fake import HOST, FakeHost, Route
from netplumb.agent.errors import Conflict, NetplumbError
from unit_helpers import (
    BRIDGE,
    FEATURES,
    GUEST_PATH,
    OTHER_BRIDGE,
    ROUTE_DESTINATIONS,
    V4_SUBNETS,
    V6_SUBNETS,
    Request,
    alias,
    desired,
    host_with_bridges,
    hosts_of,
    observe,
    plumb,
    record_for,
    requests,
)

OTHER_NS = "/run/netns/other"
FOREIGN_ADDRESS = ipaddress.ip_interface("198.18.96.5/20")
FOREIGN_ROUTE = Route(ipaddress.ip_network("198.18.112.0/20"), None, 0, proto=4)

PERTURBATIONS = (
    "delete-host",
    "delete-guest",
    "rename-host",
    "rename-guest",
    "down-host",
    "down-guest",
    "mtu-host",
    "mtu-guest",
    "mac-guest",
    "nomaster",
    "master-other",
    "vlan-host",
    "add-address",
    "del-address",
    "add-route",
    "del-route",
    "foreign-route",
    "foreign-host-link",
    "foreign-guest-link",
    "stale-host-veth",
    "stale-guest-veth",
    "delete-other-bridge",
)

steps = st.one_of(
    st.tuples(st.just("plumb"), requests(), st.sampled_from([BRIDGE, OTHER_BRIDGE])),
    st.tuples(st.sampled_from(PERTURBATIONS), st.integers(0, 2**32)),
)


def identity(r: RouteSpec | ObservedRoute | Route) -> tuple[str, str, int]:
    return (str(r.destination), str(r.via or ""), r.metric)


def perturb(host: FakeHost, rec: EndpointRecord, kind: str, seed: int) -> None:
    """Something someone else did to the host, as the kernel would do it."""
    rnd = random.Random(seed)
    h = host.link(HOST, rec.host_ifname)
    g = host.link(GUEST_PATH, rec.ifname)
    fresh = f"stale{seed % 1000}"
    if kind == "delete-host" and h:
        host.apply_one(DeleteLink(Where.HOST, h.name), None)
    elif kind == "delete-guest" and g:
        host.apply_one(DeleteLink(Where.GUEST, g.name), GUEST_PATH)
    elif kind == "rename-host" and h and not host.link(HOST, fresh):
        host.rename(HOST, h.name, fresh)
    elif kind == "rename-guest" and g and not host.link(GUEST_PATH, fresh):
        host.rename(GUEST_PATH, g.name, fresh)
    elif kind == "down-host" and h:
        host.set_down(HOST, h.name)
    elif kind == "down-guest" and g:
        host.set_down(GUEST_PATH, g.name)
    elif kind == "mtu-host" and h:
        host.set_mtu(HOST, h.name, rnd.choice([576, 1000, 1280, 1400, 9000]))
    elif kind == "mtu-guest" and g:
        host.set_mtu(GUEST_PATH, g.name, rnd.choice([576, 1000, 1280, 1400, 9000]))
    elif kind == "mac-guest" and g:
        g.mac = "02:" + ":".join(f"{rnd.randrange(256):02x}" for _ in range(5))
    elif kind == "nomaster" and h:
        host.set_master(h.name, "")
    elif kind == "master-other" and h and host.link(HOST, OTHER_BRIDGE):
        host.set_master(h.name, OTHER_BRIDGE)
    elif kind == "vlan-host" and h and h.master:
        h.vlans = (rnd.choice([1, 10, 20]),)
    elif kind == "add-address" and g:
        subnet = rnd.choice(V4_SUBNETS + V6_SUBNETS)
        ip = rnd.choice(hosts_of(subnet))
        prefix = ipaddress.ip_network(subnet).prefixlen
        try:
            host.apply_one(
                AddAddress(Where.GUEST, g.name, ipaddress.ip_interface(f"{ip}/{prefix}")),
                GUEST_PATH,
            )
        except NetplumbError:
            pass  # e.g. IPv6 on a link whose MTU is below 1280
    elif kind == "del-address" and g and g.addresses:
        host.delete_address(GUEST_PATH, g.name, rnd.choice(g.addresses))
    elif kind == "add-route" and g:
        dest = ipaddress.ip_network(rnd.choice(ROUTE_DESTINATIONS))
        subnet = rnd.choice(
            [s for s in V4_SUBNETS + V6_SUBNETS if (":" in s) == (dest.version == 6)]
        )
        via = rnd.choice([None, ipaddress.ip_address(rnd.choice(hosts_of(subnet)))])
        host.add_route(GUEST_PATH, g.name, Route(dest, via, rnd.choice([0, 100])))
    elif kind == "del-route" and g and g.routes:
        g.routes.remove(rnd.choice(g.routes))
    elif kind == "foreign-route" and g:
        wanted = desired(rec).routes
        if wanted:
            r = rnd.choice(wanted)
            host.add_route(GUEST_PATH, g.name, Route(r.destination, r.via, r.metric, proto=4))
    elif kind == "foreign-host-link" and not h:
        host.add_link(HOST, rec.host_ifname, "dummy")
    elif kind == "foreign-guest-link" and not g:
        host.add_link(GUEST_PATH, rec.ifname, "dummy")
    elif kind == "stale-host-veth" and not h and not host.link(OTHER_NS, fresh):
        host.add_veth(HOST, rec.host_ifname, OTHER_NS, fresh, alias=alias(rec))
    elif kind == "stale-guest-veth" and not g and not host.link(HOST, fresh):
        host.add_veth(GUEST_PATH, rec.ifname, HOST, fresh, alias=alias(rec))
    elif kind == "delete-other-bridge":
        host.apply_one(DeleteLink(Where.HOST, OTHER_BRIDGE), None)


def assert_matches(host: FakeHost, want: DesiredEndpoint) -> None:
    h = host.link(HOST, want.host_ifname)
    g = host.link(GUEST_PATH, want.ifname)
    assert h is not None and g is not None
    assert h.kind == g.kind == "veth"
    assert h.peer == (GUEST_PATH, g.index) and g.peer == (HOST, h.index)
    assert h.alias == g.alias == want.alias
    assert h.master == want.bridge
    assert h.up and g.up
    assert h.mtu == g.mtu == want.mtu
    assert g.mac == want.mac
    if want.vlan:
        assert h.vlans == (want.vlan,)
    assert {a for a in g.addresses if not (a.version == 6 and a.ip.is_link_local)} == set(
        want.addresses
    )
    ours = {identity(r) for r in g.routes if r.proto == naming.RTPROT_NETPLUMB}
    assert ours == {identity(r) for r in want.routes}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(req=requests(), history=st.lists(steps, max_size=6))
def test_one_round_converges_from_any_host_state(
    req: Request, history: list[tuple[object, ...]]
) -> None:
    rec = record_for(req.spec())
    want = desired(rec)
    host = host_with_bridges()
    host.add_netns(OTHER_NS)
    eth0 = host.add_link(GUEST_PATH, "eth0", "veth", up=True, addresses=[FOREIGN_ADDRESS])
    host.add_route(GUEST_PATH, "eth0", FOREIGN_ROUTE)
    uplink = host.add_link(HOST, "enp1s0", "ethernet", up=True, mtu=9000)
    for step in history:
        if step[0] == "plumb":
            _, prev_req, bridge = step
            assert isinstance(prev_req, Request) and isinstance(bridge, str)
            try:
                plumb(host, record_for(prev_req.spec(bridge)))
            except NetplumbError:
                pass  # e.g. a foreign link in the way: the host stays as it is
        else:
            kind, seed = step
            assert isinstance(kind, str) and isinstance(seed, int)
            perturb(host, rec, kind, seed)

    seen = observe(host, rec)
    tag = alias(rec)
    if (seen.host and seen.host.alias != tag) or (seen.guest and seen.guest.alias != tag):
        event("conflict: a foreign link holds a name")
        with pytest.raises(Conflict):
            plan_endpoint(want, seen, FEATURES)
        return
    event("planned")

    ops = plan_endpoint(want, seen, FEATURES)
    event("recreate" if any(type(op).__name__ == "CreateVeth" for op in ops) else "update")
    event(f"{min(len(ops), 10)}{'+' if len(ops) >= 10 else ''} ops")
    host.apply(ops, GUEST_PATH)

    assert plan_endpoint(want, observe(host, rec), FEATURES) == ()
    assert_matches(host, want)
    # Nothing netplumb did not tag was touched.
    assert host.link(GUEST_PATH, "eth0") is eth0 and eth0.addresses == [FOREIGN_ADDRESS]
    assert eth0.up and eth0.routes == [FOREIGN_ROUTE]
    assert host.link(HOST, "enp1s0") is uplink and uplink.mtu == 9000 and not uplink.master
    assert host.link(GUEST_PATH, "lo") is not None


@settings(max_examples=100, deadline=None)
@given(req=requests())
def test_fresh_plan_then_replan_is_empty(req: Request) -> None:
    """plan(s, s) == (): once plumbed, the same endpoint plans nothing."""
    rec = record_for(req.spec())
    host = host_with_bridges()
    plumb(host, rec)
    assert plan_endpoint(desired(rec), observe(host, rec), FEATURES) == ()
    assert_matches(host, desired(rec))


@settings(max_examples=100, deadline=None)
@given(req=requests())
def test_applying_a_plan_twice_equals_applying_it_once(req: Request) -> None:
    rec = record_for(req.spec())
    once, twice = host_with_bridges(), host_with_bridges()
    ops = plan_endpoint(desired(rec), observe(once, rec), FEATURES)
    once.apply(ops, GUEST_PATH)
    twice.apply(ops, GUEST_PATH)
    # The second application recreates nothing: CreateVeth finds the pair
    # and fails, which is why the engine re-plans instead of replaying.
    with pytest.raises(Conflict):
        twice.apply(ops, GUEST_PATH)
    replayed = tuple(op for op in ops if type(op).__name__ != "CreateVeth")
    twice.apply(replayed, GUEST_PATH)
    assert observe(once, rec) == observe(twice, rec)
