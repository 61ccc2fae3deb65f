"""Overlays and OVS bridges: names, MTU arithmetic and the plans that join a
bridge to its peers. Pure: no I/O.

Two backends make one L2 network out of same-VNI bridges on several hosts:
- OVS bridges get one tunnel port per peer (vxlan, geneve or gre, keyed by
  the VNI), tagged in external_ids;
- Linux bridges get one kernel VXLAN device (learning off) with an all-zero
  FDB entry per peer: head-end replication, no multicast needed.
"""

from __future__ import annotations

import hashlib

from ..errors import Conflict, KernelFeatureMissing, Unimplemented
from . import naming
from .model import (
    BridgeRecord,
    BridgeSpec,
    HostFeatures,
    ObservedBridge,
    ObservedOvsBridge,
    ObservedOvsKnown,
    ObservedOvsPort,
    ObservedVxlan,
    PeerRecord,
)
from .ops import (
    AddAddress,
    AddFdbMac,
    AddFlood,
    AddNeigh,
    AddOvsBridge,
    AddOvsPort,
    CreateVxlan,
    DelAddress,
    DeleteLink,
    DelFdbMac,
    DelFlood,
    DelNeigh,
    DelOvsBridge,
    DelOvsPort,
    DelOvsStaticMac,
    Op,
    SetMac,
    SetMtu,
    SetNeighSuppress,
    SetOvsArpAnswers,
    SetOvsStaticMac,
    SetUp,
    Where,
)

VXLAN_PORT = 4789
# Encapsulation overhead over an IPv4 underlay, inner Ethernet header included:
# VXLAN 14 + 8 + 8 + 20; Geneve the same without options; Ethernet over GRE
# with a key 14 + 8 + 20. An IPv6 underlay adds 20.
OVERHEAD = {"vxlan": 50, "geneve": 50, "gre": 42}
IPV6_EXTRA = 20
KERNEL_KIND = {"vxlan": "vxlan", "geneve": "geneve", "gre": "gretap"}

BRIDGE_ID = "netplumb-bridge"
PEER_ID = "netplumb-peer"
ENDPOINT_ID = "netplumb-endpoint"


def overlay_mtu(underlay_mtu: int, tunnel: str, ipv6_underlay: bool = False) -> int:
    """The largest guest MTU whose frames still fit the underlay once
    encapsulated."""
    return underlay_mtu - OVERHEAD[tunnel] - (IPV6_EXTRA if ipv6_underlay else 0)


def tunnel_port_name(bridge: str, peer: str) -> str:
    """OVS tunnel port towards ``peer`` on ``bridge``: "nt" + 12 hex digits."""
    return "nt" + hashlib.sha256(f"{bridge}\0{peer}".encode()).hexdigest()[:12]


def vxlan_name(vni: int) -> str:
    """The kernel VXLAN device of a Linux overlay bridge (one per VNI)."""
    return f"npvx{vni}"


def vxlan_alias(agent_id: str) -> str:
    return f"{naming.TAG}:vx:{agent_id}"


def check_linux_tunnel(spec: BridgeSpec, features: HostFeatures) -> None:
    """Linux overlays need the tunnel type in the kernel."""
    if not spec.vni:
        return
    kind = KERNEL_KIND[spec.tunnel]
    if not features.extras.get(kind, kind == "vxlan" and features.vxlan):
        raise KernelFeatureMissing(
            kind,
            f"a Linux overlay over {spec.tunnel} needs the kernel's {kind} devices, "
            "which this kernel lacks",
            field="spec.tunnel",
            hint="use --tunnel vxlan, or an OVS bridge (--kind ovs), which implements "
            "geneve and gre itself",
        )
    if spec.tunnel != "vxlan":
        raise Unimplemented(
            f"Linux overlays over {spec.tunnel} are not implemented in this version",
            field="spec.tunnel",
            hint="use --tunnel vxlan, or an OVS bridge (--kind ovs)",
        )


# ------------------------------------------------------------- OVS bridges


def plan_ovs_bridge(
    spec: BridgeSpec,
    seen: ObservedOvsBridge | None,
    record: BridgeRecord | None,
    agent_id: str,
    datapath_type: str,
    mtu: int,
) -> tuple[tuple[Op, ...], bool]:
    """Ops that make the OVS bridge row exist, and whether netplumb owns it.
    Addresses and link state of its internal interface are planned with
    ``plan_bridge_link`` once the interface exists."""
    if seen is None:
        if record is not None and not record.owned:
            raise Conflict(
                f"OVS bridge {spec.name} was adopted by netplumb and no longer exists",
                hint=f"recreate it, or 'netplumb bridge del {spec.name}' to forget it",
            )
        mac = spec.mac or naming.bridge_mac(spec.name, agent_id)
        return (AddOvsBridge(spec.name, datapath_type, mtu, mac),), True
    return (), seen.owner == agent_id


def plan_bridge_link(spec: BridgeSpec, seen: ObservedBridge, mtu: int) -> tuple[Op, ...]:
    """Addresses, MTU and link state of an OVS bridge's internal interface."""
    ops: list[Op] = []
    if mtu and seen.mtu != mtu:
        ops.append(SetMtu(Where.HOST, spec.name, mtu))
    if spec.mac and seen.mac and seen.mac != spec.mac:
        ops.append(SetMac(Where.HOST, spec.name, spec.mac))
    ops.extend(
        AddAddress(Where.HOST, spec.name, a) for a in spec.addresses if a not in seen.addresses
    )
    if not seen.up:
        ops.append(SetUp(Where.HOST, spec.name))
    return tuple(ops)


def plan_ovs_bridge_delete(
    record: BridgeRecord, seen: ObservedOvsBridge | None, link: ObservedBridge
) -> tuple[Op, ...]:
    if seen is None:
        return ()
    if record.owned:
        return (DelOvsBridge(record.spec.name),)
    return tuple(
        DelAddress(Where.HOST, record.spec.name, a)
        for a in record.spec.addresses
        if a in link.addresses and a not in record.foreign_addresses
    )


# ----------------------------------------------------------------- tunnels


def desired_tunnels(
    spec: BridgeSpec, peers: list[PeerRecord], local_ip: str
) -> dict[str, AddOvsPort]:
    out: dict[str, AddOvsPort] = {}
    for peer in peers:
        remote = str(peer.address)
        options = [("key", str(spec.vni)), ("remote_ip", remote)]
        if local_ip:
            options.append(("local_ip", local_ip))
        name = tunnel_port_name(spec.name, remote)
        out[name] = AddOvsPort(
            bridge=spec.name,
            name=name,
            type=spec.tunnel,
            options=tuple(sorted(options)),
            external_ids=((BRIDGE_ID, spec.name), (PEER_ID, remote)),
            protected=True,
        )
    return out


def plan_ovs_tunnels(
    spec: BridgeSpec, peers: list[PeerRecord], local_ip: str, ours: list[ObservedOvsPort]
) -> tuple[Op, ...]:
    """Tunnel ports of one OVS overlay bridge: one per peer; ours that are
    not wanted (a removed peer) go. ``ours`` are the tunnel ports tagged by
    this agent for this bridge."""
    want = desired_tunnels(spec, peers, local_ip) if spec.vni else {}
    ops: list[Op] = []
    for port in sorted(ours, key=lambda p: p.name):
        if port.name not in want:
            ops.append(DelOvsPort(port.name))
    have = {p.name: p for p in ours}
    for name, add in sorted(want.items()):
        seen = have.get(name)
        if seen is None or seen.bridge != spec.name:
            if seen is not None:
                ops.append(DelOvsPort(name))
            ops.append(add)
        elif seen.type != add.type or seen.options != dict(add.options) or not seen.protected:
            ops.append(add)  # add_port may_exist + db_set rewrites type and options
    return tuple(ops)


# ---------------------------------------------------------- Linux overlays


def plan_linux_overlay(
    spec: BridgeSpec,
    peers: list[PeerRecord],
    local_ip: str,
    mtu: int,
    seen: ObservedVxlan | None,
    agent_id: str,
) -> tuple[Op, ...]:
    """The VXLAN device of a Linux overlay bridge and its flood list."""
    name = vxlan_name(spec.vni)
    alias = vxlan_alias(agent_id)
    want_flood = sorted(str(p.address) for p in peers)
    ops: list[Op] = []
    if seen is not None and seen.alias != alias:
        raise Conflict(
            f"{name} exists and netplumb did not create it",
            field="spec.vni",
            hint="choose another VNI, or remove that device",
        )
    if seen is not None and (
        seen.vni != spec.vni or seen.local != local_ip or seen.master != spec.name or seen.learning
    ):
        ops.append(DeleteLink(Where.HOST, name))
        seen = None
    if seen is None:
        ops.append(CreateVxlan(name, spec.vni, local_ip, spec.name, mtu, alias, VXLAN_PORT))
        ops.extend(AddFlood(name, dst) for dst in want_flood)
        return tuple(ops)
    if seen.mtu != mtu:
        ops.append(SetMtu(Where.HOST, name, mtu))
    ops.extend(DelFlood(name, dst) for dst in seen.flood_to if dst not in want_flood)
    ops.extend(AddFlood(name, dst) for dst in want_flood if dst not in seen.flood_to)
    return tuple(ops)


def plan_known_endpoints(
    bridge: str,
    vni: int,
    remote: tuple[tuple[str, str, str], ...],
    seen: ObservedVxlan | None,
    neighbours: tuple[tuple[str, str], ...],
) -> tuple[Op, ...]:
    """Cluster networks on Linux bridges: every remote endpoint's MAC goes
    straight to its host's VTEP (no unknown-unicast flooding) and the bridge
    answers ARP/ND for its address (no broadcast across hosts). Unknown
    addresses are still flooded and answered by whoever has them.
    ``remote``: (ip, mac, vtep); ``neighbours``: the bridge's permanent
    (ip, mac) entries. A missing VXLAN device is planned again later."""
    name = vxlan_name(vni)
    have_macs = set(seen.macs) if seen is not None else set()
    want_macs = {(mac, vtep) for _, mac, vtep in remote}
    want_neigh = {(ip, mac) for ip, mac, _ in remote}
    have_neigh = set(neighbours)
    ops: list[Op] = []
    if seen is None or not seen.neigh_suppress:
        ops.append(SetNeighSuppress(name))  # (a device created just before in the plan)
    ops.extend(DelNeigh(bridge, ip, mac) for ip, mac in sorted(have_neigh - want_neigh))
    ops.extend(DelFdbMac(name, mac, dst) for mac, dst in sorted(have_macs - want_macs))
    ops.extend(AddFdbMac(name, mac, dst) for mac, dst in sorted(want_macs - have_macs))
    ops.extend(AddNeigh(bridge, ip, mac) for ip, mac in sorted(want_neigh - have_neigh))
    return tuple(ops)


# ------------------------------------------------- known endpoints on OVS

# The upper 16 bits of the cookie of every ARP answer flow netplumb adds
# ("NP"); the lower 48 bits are the answered MAC. Ours are found, and
# replaced, by this mask alone.
ARP_COOKIE = 0x4E50 << 48
ARP_COOKIE_MASK = 0xFFFF << 48
ARP_PRIORITY = 100


def arp_answer_flow(ip: str, mac: str) -> str:
    """An OpenFlow rule (ovs-ofctl syntax) that turns an ARP request for
    ``ip`` into the reply "``ip`` is at ``mac``" and sends it back where it
    came from."""
    cookie = ARP_COOKIE | int(mac.replace(":", ""), 16)
    return (
        f"cookie={cookie:#x},table=0,priority={ARP_PRIORITY},arp,arp_op=1,arp_tpa={ip},"
        "actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
        f"mod_dl_src:{mac},"
        "load:0x2->NXM_OF_ARP_OP[],"
        "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
        "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
        f"set_field:{mac}->arp_sha,"
        f"set_field:{ip}->arp_spa,"
        "in_port"
    )


def cookie_mac(cookie: int) -> str | None:
    """The MAC an ARP answer flow's cookie carries, None for a cookie that
    is not ours."""
    if cookie & ARP_COOKIE_MASK != ARP_COOKIE:
        return None
    raw = f"{cookie & ~ARP_COOKIE_MASK:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def plan_ovs_known_endpoints(
    bridge: str,
    remote: tuple[tuple[str, str, str], ...],
    tunnel_ports: dict[str, str],
    seen: ObservedOvsKnown,
) -> tuple[Op, ...]:
    """Cluster networks on OVS bridges, as plan_known_endpoints does for
    Linux ones: every remote endpoint's MAC is a static entry towards the
    tunnel to its host (no unknown-unicast flooding), and the bridge answers
    ARP for its IPv4 address with a flow (no broadcast across hosts).
    ``remote``: (ip, mac, vtep); ``tunnel_ports``: vtep -> tunnel port name;
    endpoints behind a VTEP whose tunnel ovs-vswitchd has not built (yet,
    or at all: a port in error) are left to flooding; the plan runs again
    when peers or endpoints change and at every reconcile. IPv6 neighbour
    discovery is still multicast, and works as before."""
    ready = set(seen.ready_ports)
    tunnel_ports = {vtep: port for vtep, port in tunnel_ports.items() if port in ready}
    want_macs = {(mac, tunnel_ports[vtep]) for _, mac, vtep in remote if vtep in tunnel_ports}
    want_arp = {(ip, mac) for ip, mac, vtep in remote if vtep in tunnel_ports and ":" not in ip}
    have_macs = set(seen.static_macs)
    ops: list[Op] = [DelOvsStaticMac(bridge, mac) for mac, _ in sorted(have_macs - want_macs)]
    ops.extend(SetOvsStaticMac(bridge, port, mac) for mac, port in sorted(want_macs - have_macs))
    if want_arp != set(seen.arp_answers):
        ops.append(SetOvsArpAnswers(bridge, tuple(sorted(want_arp))))
    return tuple(ops)
