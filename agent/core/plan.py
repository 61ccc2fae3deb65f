"""The planner: desired state + observed state -> operations. Pure.

Contracts, for every ``plan_*`` function:
- ``plan(desired, observed_after_applying(plan(desired, observed)))`` is empty:
  one round converges.
- An empty plan means the host already matches.
- Something in the way that netplumb did not create raises ``Conflict``; the
  planner never plans to change or delete an object without netplumb's tag.
"""

from __future__ import annotations

import ipaddress

from ..errors import Conflict, KernelFeatureMissing, NotFound
from . import naming
from .model import (
    BridgeRecord,
    BridgeSpec,
    DesiredEndpoint,
    EndpointRecord,
    HostFeatures,
    IPInterface,
    LinkKind,
    ObservedBridge,
    ObservedEndpoint,
    ObservedLink,
    ObservedRoute,
    RouteSpec,
)
from .ops import (
    AddAddress,
    AddOvsPort,
    AddRoute,
    AddRule,
    Announce,
    CreateBridge,
    CreateDummy,
    CreateMacvlan,
    CreateVeth,
    CreateVlanLink,
    DelAddress,
    DeleteLink,
    DelOvsPort,
    DelRoute,
    EnableIpv6,
    MoveToGuest,
    MoveToHost,
    Op,
    RestoreHostLink,
    SetBridgeVlanFiltering,
    SetMac,
    SetMaster,
    SetMtu,
    SetOvsPortTag,
    SetPortVlan,
    SetTxChecksum,
    SetUp,
    Where,
)
from .overlay import ENDPOINT_ID
from .spec import gateway_host_route

VLAN_FILTERING_HINT = (
    "this kernel was built without bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); "
    "use an OVS bridge (--kind ovs), whose ports take VLAN tags, or a kernel that has it"
)


def endpoint_routes(record: EndpointRecord) -> tuple[RouteSpec, ...]:
    """Every route an endpoint puts in its guest.

    Each gateway becomes the default route of its family; a gateway outside
    every address's subnet first gets an on-link host route, as pipework did
    for hosters' failover addresses.
    """
    spec = record.spec
    routes: list[RouteSpec] = []
    addresses = (*spec.addresses, *record.allocated)
    for gw in spec.gateways or record.net_gateways:
        host_net = gateway_host_route(gw, addresses)
        if host_net is not None:
            routes.append(RouteSpec(destination=host_net, onlink=True))
        default = ipaddress.ip_network("0.0.0.0/0" if gw.version == 4 else "::/0")
        routes.append(RouteSpec(destination=default, via=gw))
    routes.extend(spec.routes)
    routes.extend(record.extra_routes)
    return tuple(routes)


def desired_endpoint(
    record: EndpointRecord, agent_id: str, ovs: bool = False, tx_checksum_off: bool = False
) -> DesiredEndpoint:
    """Resolve a stored endpoint into what must exist on the host. ``ovs``:
    its bridge is an OVS bridge; ``tx_checksum_off``: a userspace one."""
    spec = record.spec
    parent, base = record.parent, ""
    if spec.kind in (LinkKind.MACVLAN, LinkKind.PHYS) and spec.vlan:
        parent, base = vlan_link_name(record.parent, spec.vlan), record.parent
    return DesiredEndpoint(
        id=record.id,
        alias=naming.endpoint_alias(record.id, agent_id),
        bridge=spec.bridge,
        ifname=spec.ifname,
        host_ifname=record.host_ifname,
        mac=record.mac,
        mtu=record.mtu,
        vlan=spec.vlan,
        addresses=(*spec.addresses, *record.allocated),
        routes=endpoint_routes(record),
        ovs=ovs,
        tx_checksum_off=tx_checksum_off,
        kind=spec.kind,
        parent=parent,
        vlan_base=base,
        vlan_alias=naming.vlan_alias(agent_id) if spec.kind is LinkKind.MACVLAN else "",
        parent_mac=record.parent_mac,
        dhcp=spec.dhcp is not None,
        rules=record.rules,
    )


def vlan_link_name(base: str, vid: int) -> str:
    """pipework's name of an 802.1Q sub-interface, ``<if>.<vid>``."""
    return f"{base}.{vid}"


def check_endpoint_features(
    spec_vlan: int, features: HostFeatures, ovs: bool = False, kind: LinkKind = LinkKind.VETH
) -> None:
    """Refuse what this kernel cannot do, before anything is touched. (OVS
    ports take VLAN tags whatever the kernel.)"""
    if kind is LinkKind.DUMMY and not features.dummy:
        raise KernelFeatureMissing(
            "dummy",
            "cannot create a dummy interface in the guest: the kernel lacks dummy interfaces",
            field="spec.kind",
            hint="load the dummy module (modprobe dummy), or attach to a bridge instead",
        )
    if kind in (LinkKind.MACVLAN, LinkKind.PHYS):
        if spec_vlan and not features.vlan_8021q:
            raise KernelFeatureMissing(
                "8021q",
                f"cannot create the VLAN {spec_vlan} sub-interface: the kernel lacks 802.1Q "
                "VLAN devices",
                field="spec.vlan",
                hint="load the 8021q module (modprobe 8021q), or use an OVS bridge, whose "
                "ports take VLAN tags",
            )
        return
    if spec_vlan and not ovs and not features.bridge_vlan_filtering:
        raise KernelFeatureMissing(
            "bridge-vlan-filtering",
            f"cannot make the port an access port of VLAN {spec_vlan}: the kernel lacks "
            "bridge VLAN filtering",
            field="spec.vlan",
            hint=VLAN_FILTERING_HINT,
        )


def plan_endpoint(
    want: DesiredEndpoint, seen: ObservedEndpoint, features: HostFeatures
) -> tuple[Op, ...]:
    """Operations that make the host match ``want``."""
    check_endpoint_features(want.vlan, features, want.ovs, want.kind)
    alias = want.alias
    host, guest = seen.host, seen.guest
    if want.kind is LinkKind.VETH and host is not None and host.alias != alias:
        raise Conflict(
            f"host interface {want.host_ifname} already exists and netplumb did not create it "
            "for this endpoint",
            field="spec.host_ifname",
            hint="choose another --host-ifname, or remove that interface",
        )
    if guest is not None and guest.alias != alias:
        raise Conflict(
            f"the guest already has an interface {want.ifname} that netplumb did not create",
            field="spec.ifname",
            hint="choose another --ifname",
        )
    if want.kind is not LinkKind.VETH:
        if guest is not None and (want.kind is LinkKind.PHYS or guest.kind == want.kind.value):
            return _plan_guest_update(want, guest)
        return _plan_fresh_other(want, seen)
    paired = (
        host is not None
        and guest is not None
        and host.kind == "veth"
        and host.peer_index == guest.index
        and guest.peer_index == host.index
    )
    if not paired:
        return _plan_fresh(want, seen, features)
    assert host is not None and guest is not None
    return _plan_update(want, host, guest, features, seen)


def _plan_fresh(
    want: DesiredEndpoint, seen: ObservedEndpoint, features: HostFeatures
) -> tuple[Op, ...]:
    ops: list[Op] = []
    if seen.host is not None:
        ops.append(DeleteLink(Where.HOST, want.host_ifname))
    if seen.guest is not None:
        ops.append(DeleteLink(Where.GUEST, want.ifname))
    ops.append(
        CreateVeth(
            host_ifname=want.host_ifname,
            guest_ifname=want.ifname,
            mac=want.mac,
            mtu=want.mtu,
            alias=want.alias,
            bridge="" if want.ovs else want.bridge,
        )
    )
    if want.ovs:
        if seen.ovs_port is not None:
            ops.append(DelOvsPort(want.host_ifname))  # a stale row of the old veth
        ops.append(SetUp(Where.HOST, want.host_ifname))
        ops.append(_ovs_port(want))
        if want.tx_checksum_off:
            ops.append(SetTxChecksum(Where.GUEST, want.ifname, on=False))
    elif want.vlan:
        ops.append(SetPortVlan(want.host_ifname, want.vlan))
    ops.extend(_configure_fresh(want))
    return tuple(ops)


def _configure_fresh(want: DesiredEndpoint) -> list[Op]:
    """Addresses, link up, routes, rules and announcements of a guest
    interface that was just created (or moved in)."""
    ops: list[Op] = []
    if _wants_ipv6(want):
        ops.append(EnableIpv6(want.ifname))
    ops.extend(AddAddress(Where.GUEST, want.ifname, a) for a in want.addresses)
    ops.append(SetUp(Where.GUEST, want.ifname))
    ops.extend(AddRoute(want.ifname, r) for r in _route_order(want.routes))
    ops.extend(AddRule(r) for r in want.rules)
    if want.addresses:
        ops.append(Announce(want.ifname, want.mac, want.addresses))
    return ops


def _wants_ipv6(want: DesiredEndpoint) -> bool:
    return any(a.version == 6 for a in want.addresses) or any(
        r.destination.version == 6 for r in want.routes
    )


def _plan_fresh_other(want: DesiredEndpoint, seen: ObservedEndpoint) -> tuple[Op, ...]:
    """A macvlan, a moved-in host interface or a dummy, from scratch."""
    ops: list[Op] = []
    if seen.guest is not None:
        ops.append(DeleteLink(Where.GUEST, want.ifname))
    if want.kind is LinkKind.DUMMY:
        ops.append(CreateDummy(want.ifname, want.mac, want.alias))
        ops.extend(_configure_fresh(want))
        return tuple(ops)
    parent = seen.parent
    if parent is None and want.vlan_base:
        if seen.vlan_base is None:
            raise NotFound(
                f"host interface {want.vlan_base} does not exist",
                field="spec.parent",
                hint="'ip link' lists the host's interfaces",
            )
        ops.append(
            CreateVlanLink(want.vlan_base, want.parent, want.vlan, want.vlan_alias or want.alias)
        )
    elif parent is None:
        raise NotFound(
            f"host interface {want.parent} does not exist"
            + (" (is it in another namespace now?)" if want.kind is LinkKind.PHYS else ""),
            field="spec.parent",
            hint="'ip link' lists the host's interfaces",
        )
    elif parent.kind == "bridge" or parent.kind == "openvswitch":
        raise Conflict(
            f"host interface {want.parent} is a bridge",
            field="spec.parent",
            hint="attach to a bridge with a veth pair instead (give it as the bridge)",
        )
    if want.kind is LinkKind.MACVLAN:
        if parent is not None and not parent.up:
            ops.append(SetUp(Where.HOST, want.parent))  # pipework does the same
        ops.append(CreateMacvlan(want.parent, want.ifname, want.mac, want.mtu, want.alias))
    else:
        name = parent.name if parent is not None else want.parent
        ops.append(MoveToGuest(name, want.ifname, want.alias))
        if want.mac:
            ops.append(SetMac(Where.GUEST, want.ifname, want.mac))
        if want.mtu and (parent is None or parent.mtu != want.mtu):
            ops.append(SetMtu(Where.GUEST, want.ifname, want.mtu))
    ops.extend(_configure_fresh(want))
    return tuple(ops)


def _plan_update(
    want: DesiredEndpoint,
    host: ObservedLink,
    guest: ObservedLink,
    features: HostFeatures,
    seen: ObservedEndpoint,
) -> tuple[Op, ...]:
    ops: list[Op] = []
    if want.ovs:
        port = seen.ovs_port
        if port is None or port.bridge != want.bridge:
            if port is not None:
                ops.append(DelOvsPort(want.host_ifname))
            ops.append(_ovs_port(want))
        elif port.tag != want.vlan:
            ops.append(SetOvsPortTag(want.host_ifname, want.vlan))
        if want.tx_checksum_off and seen.guest_tx_checksum:
            ops.append(SetTxChecksum(Where.GUEST, want.ifname, on=False))
    else:
        moved = host.master != want.bridge
        if moved:
            ops.append(SetMaster(want.host_ifname, want.bridge))
        # Joining a bridge resets a port's VLANs, so a moved port is re-tagged.
        if want.vlan and features.bridge_vlan_filtering and (moved or host.vlans != (want.vlan,)):
            ops.append(SetPortVlan(want.host_ifname, want.vlan))
    if host.mtu != want.mtu:
        ops.append(SetMtu(Where.HOST, want.host_ifname, want.mtu))
    if not host.up:
        ops.append(SetUp(Where.HOST, want.host_ifname))
    return (*ops, *_plan_guest_update(want, guest))


def _plan_guest_update(want: DesiredEndpoint, guest: ObservedLink) -> tuple[Op, ...]:
    """Bring an existing guest interface of ours back to its spec."""
    ops: list[Op] = []
    if want.mtu and guest.mtu != want.mtu:
        ops.append(SetMtu(Where.GUEST, want.ifname, want.mtu))
    if want.mac and guest.mac != want.mac:
        ops.append(SetMac(Where.GUEST, want.ifname, want.mac))
    have = {a for a in guest.addresses if not _kernel_managed(a)}
    if want.dhcp:
        # The DHCP client's IPv4 lease is not netplumb's to remove.
        have = {a for a in have if a.version == 6 or a in want.addresses}
    wanted = set(want.addresses)
    removed = _addr_order(have - wanted)
    ops.extend(DelAddress(Where.GUEST, want.ifname, a) for a in removed)
    # Deleting a primary IPv4 address deletes the secondaries of its subnet
    # with it (unless promote_secondaries is set): re-add the wanted ones.
    clobbered = {
        a
        for a in want.addresses
        if a.version == 4 and any(r.version == 4 and r.network.overlaps(a.network) for r in removed)
    }
    added = [a for a in want.addresses if a not in have or a in clobbered]
    if any(a.version == 6 for a in added):
        ops.append(EnableIpv6(want.ifname))
    ops.extend(AddAddress(Where.GUEST, want.ifname, a) for a in added)
    if not guest.up:
        ops.append(SetUp(Where.GUEST, want.ifname))
    have_routes = {_route_identity(r): r for r in guest.routes}
    want_routes = {_route_identity(r): r for r in want.routes}
    for key in sorted(set(have_routes) - set(want_routes), key=str):
        r = have_routes[key]
        ops.append(DelRoute(want.ifname, RouteSpec(r.destination, r.via, r.metric)))
    # Removing an address or bringing the link up can take routes with it
    # (the kernel flushes the routes of a removed last address, and routes of
    # a link that was down are gone): then every wanted route is re-added;
    # AddRoute replaces, so re-adding a present one is harmless.
    if removed or not guest.up:
        again = list(want.routes)
    else:
        again = [r for k, r in want_routes.items() if k not in have_routes]
    ops.extend(AddRoute(want.ifname, r) for r in _route_order(again))
    if added:
        ops.append(Announce(want.ifname, want.mac, want.addresses))
    return tuple(ops)


def plan_detach(
    record: EndpointRecord, seen: ObservedEndpoint, agent_id: str, vlan_shared: bool = False
) -> tuple[Op, ...]:
    """Remove what attach made. Deleting one veth end deletes both, and with
    the guest end go its addresses and routes; a moved-in host interface goes
    back to the host under its own name and MAC; the ``<if>.<vid>`` made for
    a macvlan goes with the last macvlan on it (``vlan_shared``: another
    endpoint still uses it). Objects not tagged by netplumb are left alone."""
    alias = naming.endpoint_alias(record.id, agent_id)
    ops: list[Op] = []
    ours = seen.guest is not None and seen.guest.alias == alias
    if record.spec.kind is LinkKind.MACVLAN and record.spec.vlan:
        if ours:
            ops.append(DeleteLink(Where.GUEST, record.ifname))
        vlan = seen.parent
        # Ours: tagged for this agent, or (by an older netplumb) for one of
        # its endpoints, maybe not this one.
        made = vlan is not None and (
            vlan.alias == naming.vlan_alias(agent_id)
            or (naming.parse_endpoint_alias(vlan.alias) or ("", ""))[1] == agent_id
        )
        if not vlan_shared and made:
            ops.append(DeleteLink(Where.HOST, vlan_link_name(record.parent, record.spec.vlan)))
        return tuple(ops)
    if record.spec.kind is LinkKind.PHYS:
        if ours:
            ops.append(MoveToHost(record.ifname, _phys_name(record), record.parent_mac))
        elif seen.parent is not None and seen.parent.alias == alias:
            # the guest died: the kernel gave the interface back under the
            # guest's name and MAC, still tagged
            ops.append(RestoreHostLink(seen.parent.name, _phys_name(record), record.parent_mac))
        return tuple(ops)
    if seen.host is not None and seen.host.alias == alias:
        ops.append(DeleteLink(Where.HOST, record.host_ifname))
    elif ours:
        ops.append(DeleteLink(Where.GUEST, record.ifname))
    port = seen.ovs_port
    if (
        port is not None
        and port.owner == agent_id
        and port.external_ids.get(ENDPOINT_ID) == record.id
    ):
        ops.append(DelOvsPort(record.host_ifname))  # the row outlives the veth otherwise
    return tuple(ops)


def _phys_name(record: EndpointRecord) -> str:
    spec = record.spec
    return vlan_link_name(record.parent, spec.vlan) if spec.vlan else record.parent


def plan_bridge(
    spec: BridgeSpec, seen: ObservedBridge, record: BridgeRecord | None, agent_id: str
) -> tuple[tuple[Op, ...], bool]:
    """Operations that make the bridge exist as specified, and whether
    netplumb owns it (created it, now or before)."""
    if not seen.exists:
        if record is not None and not record.owned:
            # An adopted bridge vanished; recreating it would take ownership of
            # a name someone else manages.
            raise Conflict(
                f"bridge {spec.name} was adopted by netplumb and no longer exists",
                hint=f"recreate it, or 'netplumb bridge del {spec.name}' to forget it",
            )
        ops: list[Op] = [CreateBridge(spec.name, spec.mtu, naming.bridge_alias(agent_id))]
        # A MAC of its own, always: otherwise the kernel gives a bridge the
        # lowest MAC among its ports, so an attach or detach can change it,
        # leaving every guest with a stale neighbour entry for its gateway
        # and flushing the bridge's own neighbour entries (a Linux overlay's
        # known endpoints).
        ops.append(
            SetMac(Where.HOST, spec.name, spec.mac or naming.bridge_mac(spec.name, agent_id))
        )
        ops.extend(AddAddress(Where.HOST, spec.name, a) for a in spec.addresses)
        ops.append(SetUp(Where.HOST, spec.name))
        return tuple(ops), True
    if not seen.is_bridge:
        raise Conflict(
            f"{spec.name} exists and is not a Linux bridge",
            field="spec.name",
            hint="choose another bridge name",
        )
    owned = seen.alias == naming.bridge_alias(agent_id)
    out: list[Op] = []
    if spec.mtu and seen.mtu != spec.mtu:
        out.append(SetMtu(Where.HOST, spec.name, spec.mtu))
    if spec.mac and seen.mac != spec.mac:
        out.append(SetMac(Where.HOST, spec.name, spec.mac))
    out.extend(
        AddAddress(Where.HOST, spec.name, a) for a in spec.addresses if a not in seen.addresses
    )
    if not seen.up:
        out.append(SetUp(Where.HOST, spec.name))
    return tuple(out), owned


def plan_bridge_vlan(seen: ObservedBridge) -> tuple[Op, ...]:
    """Ops that prepare a Linux bridge for access-port VLANs."""
    return () if seen.vlan_filtering else (SetBridgeVlanFiltering(seen.name),)


def plan_bridge_delete(record: BridgeRecord, seen: ObservedBridge, agent_id: str) -> tuple[Op, ...]:
    """An owned bridge is deleted; an adopted one only loses the addresses
    netplumb added to it."""
    if not seen.exists:
        return ()
    if record.owned:
        if seen.alias != naming.bridge_alias(agent_id):
            return ()  # someone replaced it with their own: not ours to delete
        return (DeleteLink(Where.HOST, record.spec.name),)
    return tuple(
        DelAddress(Where.HOST, record.spec.name, a)
        for a in record.spec.addresses
        if a in seen.addresses and a not in record.foreign_addresses
    )


def _ovs_port(want: DesiredEndpoint) -> AddOvsPort:
    return AddOvsPort(
        bridge=want.bridge,
        name=want.host_ifname,
        tag=want.vlan,
        external_ids=((ENDPOINT_ID, want.id),),
    )


def _kernel_managed(a: IPInterface) -> bool:
    return a.version == 6 and a.ip.is_link_local


def _addr_order(addrs: set[IPInterface]) -> list[IPInterface]:
    return sorted(addrs, key=lambda a: (a.version, int(a.ip)))


def _route_identity(r: RouteSpec | ObservedRoute) -> tuple[str, str, int]:
    # The kernel gives IPv6 routes without a metric the metric 1024; drivers
    # report that as 0, the value netplumb stores for "kernel default".
    return (str(r.destination), str(r.via or ""), r.metric)


def _route_order(routes: list[RouteSpec] | tuple[RouteSpec, ...]) -> list[RouteSpec]:
    """On-link routes first: a route via a gateway needs its next hop
    reachable."""
    return sorted(routes, key=lambda r: (r.via is not None, r.destination.prefixlen == 0))
