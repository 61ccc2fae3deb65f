"""Protobuf messages <-> model values. Requests are validated here, through
``core.spec``, before the engine sees them."""

from __future__ import annotations

from netplumb.v1 import agent_pb2 as pb

from ..core import spec
from ..core.model import (
    BridgeKind,
    BridgeSpec,
    EndpointSpec,
    GuestRef,
    IPAddress,
    LinkKind,
    NetworkSpec,
    RouteSpec,
)
from ..core.plan import endpoint_routes
from ..engine import DEGRADED, GUEST_MISSING, BridgeView, Drift, EndpointView, PeerView
from ..errors import InvalidSpec

_KIND_IN = {
    pb.BRIDGE_KIND_UNSPECIFIED: "auto",
    pb.BRIDGE_KIND_LINUX: "linux",
    pb.BRIDGE_KIND_OVS: "ovs",
}
_KIND_OUT = {
    BridgeKind.LINUX: pb.BRIDGE_KIND_LINUX,
    BridgeKind.OVS: pb.BRIDGE_KIND_OVS,
    BridgeKind.AUTO: pb.BRIDGE_KIND_UNSPECIFIED,
}
_TUNNEL_IN = {
    pb.TUNNEL_TYPE_UNSPECIFIED: "",
    pb.TUNNEL_TYPE_VXLAN: "vxlan",
    pb.TUNNEL_TYPE_GENEVE: "geneve",
    pb.TUNNEL_TYPE_GRE: "gre",
}
_TUNNEL_OUT = {v: k for k, v in _TUNNEL_IN.items() if v}
_LINK_IN = {
    pb.ENDPOINT_KIND_UNSPECIFIED: "veth",
    pb.ENDPOINT_KIND_VETH: "veth",
    pb.ENDPOINT_KIND_MACVLAN: "macvlan",
    pb.ENDPOINT_KIND_PHYS: "phys",
    pb.ENDPOINT_KIND_DUMMY: "dummy",
}
_LINK_OUT = {
    LinkKind.VETH: pb.ENDPOINT_KIND_VETH,
    LinkKind.MACVLAN: pb.ENDPOINT_KIND_MACVLAN,
    LinkKind.PHYS: pb.ENDPOINT_KIND_PHYS,
    LinkKind.DUMMY: pb.ENDPOINT_KIND_DUMMY,
}
_STATE_OUT = {
    GUEST_MISSING: pb.ENDPOINT_STATE_GUEST_MISSING,
    DEGRADED: pb.ENDPOINT_STATE_DEGRADED,
}


def bridge_spec_in(m: pb.BridgeSpec) -> BridgeSpec:
    if m.kind not in _KIND_IN:
        raise InvalidSpec(f"spec.kind {m.kind} is not a bridge kind", field="spec.kind")
    if m.tunnel not in _TUNNEL_IN:
        raise InvalidSpec(f"spec.tunnel {m.tunnel} is not a tunnel type", field="spec.tunnel")
    return spec.bridge_spec(
        name=m.name,
        kind=_KIND_IN[m.kind],
        addresses=list(m.addresses),
        mtu_value=m.mtu,
        vni=m.vni,
        tunnel=_TUNNEL_IN[m.tunnel],
    )


def bridge_out(v: BridgeView) -> pb.Bridge:
    s = v.record.spec
    return pb.Bridge(
        spec=pb.BridgeSpec(
            name=s.name,
            kind=_KIND_OUT[s.kind],
            addresses=[str(a) for a in s.addresses],
            mtu=s.mtu,
            vni=s.vni,
            tunnel=_TUNNEL_OUT.get(s.tunnel, pb.TUNNEL_TYPE_UNSPECIFIED),
        ),
        owned=v.record.owned,
        created=v.created,
        present=v.present,
        mtu=v.mtu,
        endpoint_count=v.endpoint_count,
        endpoint_mtu=v.endpoint_mtu or v.mtu,
        datapath_type=v.datapath_type,
    )


def peer_out(v: PeerView) -> pb.Peer:
    return pb.Peer(
        address=str(v.record.address),
        name=v.record.name,
        source=v.record.source,
        tunnels=[
            pb.Tunnel(
                bridge=t.bridge,
                vni=t.vni,
                type=_TUNNEL_OUT.get(t.type, pb.TUNNEL_TYPE_UNSPECIFIED),
                port=t.port,
                state=t.state,
            )
            for t in v.tunnels
        ],
    )


def peer_address_in(value: str, field: str = "address") -> IPAddress:
    ip = spec.ip_address(value, field)
    if ip.is_loopback or ip.is_link_local:
        raise InvalidSpec(f"{field} {ip} cannot be a peer's underlay address", field=field)
    return ip


def peer_name_in(value: str, field: str = "name") -> str:
    if value and not spec.DNS_LABEL_RE.fullmatch(value):
        raise InvalidSpec(
            f"{field} {value!r} is not a valid peer name (letters, digits, '-', at most 63)",
            field=field,
        )
    return value


def endpoint_spec_in(m: pb.EndpointSpec, guest: GuestRef) -> EndpointSpec:
    """Validate an attach request; ``guest`` is ``m.guest`` already resolved
    (Docker names need the engine)."""
    if m.name and not spec.DNS_LABEL_RE.fullmatch(m.name):
        raise InvalidSpec(
            f"spec.name {m.name[:64]!r} is not a DNS label (letters, digits, '-', at most 63)",
            field="spec.name",
        )
    if m.kind not in _LINK_IN:
        raise InvalidSpec(f"spec.kind {m.kind} is not an endpoint kind", field="spec.kind")
    dhcp = None
    if m.HasField("dhcp"):
        dhcp = spec.dhcp_spec(m.dhcp.client, list(m.dhcp.options), m.dhcp.keep)
        if any(":" not in a for a in m.addresses) or any(":" not in g for g in m.gateways):
            raise InvalidSpec(
                "with DHCP, the IPv4 address and gateway come from the lease; "
                "spec.addresses and spec.gateways may hold IPv6 only",
                field="spec.addresses",
            )
    return spec.endpoint_spec(
        bridge=m.bridge,
        guest_ref=guest,
        ifname_value=m.ifname,
        host_ifname=m.host_ifname,
        mac_value=m.mac,
        mtu_value=m.mtu,
        vlan_value=m.vlan,
        addresses=list(m.addresses),
        gateways=list(m.gateways),
        routes=[(r.destination, r.via, r.metric) for r in m.routes],
        kind=_LINK_IN[m.kind],
        parent=m.parent,
        dhcp=dhcp,
        endpoint_name=m.name,
    )


def route_in(m: pb.Route, field: str = "route") -> RouteSpec:
    return spec.route(m.destination, m.via, m.metric, field)


def route_out(r: RouteSpec) -> pb.Route:
    dest = "default" if r.destination.prefixlen == 0 else str(r.destination)
    return pb.Route(destination=dest, via=str(r.via) if r.via else "", metric=r.metric)


def endpoint_out(v: EndpointView) -> pb.Endpoint:
    rec = v.record
    s = rec.spec
    routes = endpoint_routes(rec)
    return pb.Endpoint(
        spec=pb.EndpointSpec(
            bridge=s.bridge,
            guest=s.guest.key,
            ifname=s.ifname,
            host_ifname=s.host_ifname or "",
            mac=s.mac or "",
            mtu=s.mtu,
            vlan=s.vlan,
            addresses=[str(a) for a in s.addresses],
            gateways=[str(g) for g in s.gateways],
            routes=[route_out(r) for r in s.routes],
            name=s.name,
            kind=_LINK_OUT[s.kind],
            parent=s.parent,
            dhcp=pb.Dhcp(client=s.dhcp.client, options=list(s.dhcp.options), keep=s.dhcp.keep)
            if s.dhcp is not None
            else None,
        ),
        id=rec.id,
        guest=s.guest.key,
        ifname=s.ifname,
        host_ifname=rec.host_ifname,
        mac=rec.mac,
        mtu=rec.mtu,
        addresses=[str(a) for a in (*s.addresses, *rec.allocated)],
        routes=[route_out(r) for r in routes],
        state=_STATE_OUT.get(v.state, pb.ENDPOINT_STATE_READY),
        netns_path=rec.netns_path,
        guest_name=rec.guest_name,
        bridge=s.bridge,
        vlan=s.vlan,
        state_detail=v.detail,
        rules=[str(r) for r in rec.rules],
        tc=[pb.TcCommand(args=list(t)) for t in rec.tc],
        parent=rec.parent,
    )


def network_spec_in(m: pb.NetworkSpec) -> NetworkSpec:
    if m.kind not in _KIND_IN:
        raise InvalidSpec(f"spec.kind {m.kind} is not a bridge kind", field="spec.kind")
    if m.tunnel not in _TUNNEL_IN:
        raise InvalidSpec(f"spec.tunnel {m.tunnel} is not a tunnel type", field="spec.tunnel")
    kind = _KIND_IN[m.kind]
    return spec.network_spec(
        name=m.name,
        subnet=m.subnet,
        vni=m.vni,
        kind="linux" if kind == "auto" else kind,
        tunnel=_TUNNEL_IN[m.tunnel],
        gateway=m.gateway,
        dns=m.dns_address,
    )


def network_out(n: NetworkSpec, allocated: int) -> pb.Network:
    return pb.Network(
        spec=pb.NetworkSpec(
            name=n.name,
            subnet=str(n.subnet),
            vni=n.vni,
            kind=_KIND_OUT[n.kind],
            tunnel=_TUNNEL_OUT.get(n.tunnel, pb.TUNNEL_TYPE_UNSPECIFIED),
            gateway=str(n.gateway) if n.gateway else "",
            dns_address=str(n.dns) if n.dns else "",
        ),
        allocated=allocated,
    )


def drift_out(d: Drift) -> pb.Drift:
    return pb.Drift(object=d.object, name=d.name, detail=d.detail, repair=list(d.repair))
