"""Operations: the imperative vocabulary the planner emits and drivers execute.

Each op is a frozen value with a readable ``str`` (used in logs, in ``check``
output and in error messages). ``Where`` says which namespace an op acts in:
the host's (root) namespace, or the guest namespace of the endpoint being
planned, which the engine opens and pins before applying.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .model import IPInterface, RouteSpec, RuleSpec


class Where(enum.Enum):
    HOST = "host"
    GUEST = "guest"


@dataclass(frozen=True, slots=True)
class CreateBridge:
    name: str
    mtu: int  # 0: kernel default
    alias: str

    def __str__(self) -> str:
        return f"create bridge {self.name}" + (f" mtu {self.mtu}" if self.mtu else "")


@dataclass(frozen=True, slots=True)
class CreateVeth:
    """A veth pair: ``host_ifname`` in the host namespace, ``guest_ifname``
    created directly inside the guest namespace (so its final name never
    collides with anything in the host namespace). With ``bridge`` the host
    end is created as a port of that bridge and up."""

    host_ifname: str
    guest_ifname: str
    mac: str
    mtu: int
    alias: str
    bridge: str = ""

    def __str__(self) -> str:
        on = f" on bridge {self.bridge}" if self.bridge else ""
        return f"create veth {self.host_ifname}{on} <-> guest {self.guest_ifname} mtu {self.mtu}"


@dataclass(frozen=True, slots=True)
class CreateMacvlan:
    """A macvlan in bridge mode on the host link ``parent``, created directly
    inside the guest namespace as ``guest_ifname``."""

    parent: str
    guest_ifname: str
    mac: str
    mtu: int
    alias: str

    def __str__(self) -> str:
        return f"create macvlan {self.guest_ifname} (guest) on {self.parent} mtu {self.mtu}"


@dataclass(frozen=True, slots=True)
class CreateDummy:
    """A dummy interface created directly inside the guest namespace."""

    guest_ifname: str
    mac: str
    alias: str

    def __str__(self) -> str:
        return f"create dummy {self.guest_ifname} (guest)"


@dataclass(frozen=True, slots=True)
class CreateVlanLink:
    """The 802.1Q sub-interface ``name`` (``<base>.<vid>``) of a host NIC, up."""

    base: str
    name: str
    vid: int
    alias: str

    def __str__(self) -> str:
        return f"create VLAN {self.vid} sub-interface {self.name} of {self.base}"


@dataclass(frozen=True, slots=True)
class MoveToGuest:
    """Move the host link ``name`` into the guest namespace, renamed to
    ``guest_ifname`` in the same step (--direct-phys)."""

    name: str
    guest_ifname: str
    alias: str

    def __str__(self) -> str:
        return f"move host interface {self.name} into the guest as {self.guest_ifname}"


@dataclass(frozen=True, slots=True)
class MoveToHost:
    """Give a moved-in interface back to the host under its own name and MAC."""

    guest_ifname: str
    name: str
    mac: str

    def __str__(self) -> str:
        return f"move {self.guest_ifname} back to the host as {self.name}"


@dataclass(frozen=True, slots=True)
class EnableIpv6:
    """IPv6 on for one guest interface (Docker turns it off in the
    namespaces of containers it gives no IPv6 network)."""

    name: str

    def __str__(self) -> str:
        return f"enable IPv6 on {self.name} (guest)"


@dataclass(frozen=True, slots=True)
class RestoreHostLink:
    """A moved-in interface that a dead namespace handed back to the host
    (under the guest's name, with the guest's MAC and netplumb's tag): its
    own name and MAC again, untagged, down."""

    name: str
    original: str
    mac: str

    def __str__(self) -> str:
        return f"give host interface {self.name} back its name {self.original}"


@dataclass(frozen=True, slots=True)
class AddRule:
    """A policy routing rule in the guest namespace."""

    rule: RuleSpec

    def __str__(self) -> str:
        return f"add rule {self.rule} (guest)"


@dataclass(frozen=True, slots=True)
class DelRule:
    rule: RuleSpec

    def __str__(self) -> str:
        return f"remove rule {self.rule} (guest)"


@dataclass(frozen=True, slots=True)
class DeleteLink:
    where: Where
    name: str

    def __str__(self) -> str:
        return f"delete link {self.name} ({self.where.value})"


@dataclass(frozen=True, slots=True)
class SetMaster:
    name: str
    bridge: str

    def __str__(self) -> str:
        return f"add {self.name} to bridge {self.bridge}"


@dataclass(frozen=True, slots=True)
class SetPortVlan:
    """Make a Linux bridge port an untagged access port of ``vlan``."""

    name: str
    vlan: int

    def __str__(self) -> str:
        return f"make {self.name} an access port of VLAN {self.vlan}"


@dataclass(frozen=True, slots=True)
class SetBridgeVlanFiltering:
    name: str

    def __str__(self) -> str:
        return f"turn VLAN filtering on for bridge {self.name}"


@dataclass(frozen=True, slots=True)
class SetMtu:
    where: Where
    name: str
    mtu: int

    def __str__(self) -> str:
        return f"set mtu {self.mtu} on {self.name} ({self.where.value})"


@dataclass(frozen=True, slots=True)
class SetMac:
    where: Where
    name: str
    mac: str

    def __str__(self) -> str:
        return f"set mac {self.mac} on {self.name} ({self.where.value})"


@dataclass(frozen=True, slots=True)
class SetUp:
    where: Where
    name: str

    def __str__(self) -> str:
        return f"set {self.name} up ({self.where.value})"


@dataclass(frozen=True, slots=True)
class AddAddress:
    where: Where
    name: str
    address: IPInterface

    def __str__(self) -> str:
        return f"add address {self.address} to {self.name} ({self.where.value})"


@dataclass(frozen=True, slots=True)
class DelAddress:
    where: Where
    name: str
    address: IPInterface

    def __str__(self) -> str:
        return f"remove address {self.address} from {self.name} ({self.where.value})"


@dataclass(frozen=True, slots=True)
class AddRoute:
    """A route in the guest namespace through ``name``, tagged with
    netplumb's route protocol."""

    name: str
    route: RouteSpec

    def __str__(self) -> str:
        return f"add route {self.route} dev {self.name} (guest)"


@dataclass(frozen=True, slots=True)
class DelRoute:
    name: str
    route: RouteSpec

    def __str__(self) -> str:
        return f"remove route {self.route} dev {self.name} (guest)"


@dataclass(frozen=True, slots=True)
class Announce:
    """Gratuitous ARP / unsolicited neighbour advertisement for the guest's
    addresses; fire and forget, never blocks the call."""

    name: str
    mac: str
    addresses: tuple[IPInterface, ...]

    def __str__(self) -> str:
        return f"announce {', '.join(str(a.ip) for a in self.addresses)} on {self.name} (guest)"


@dataclass(frozen=True, slots=True)
class AddOvsBridge:
    name: str
    datapath_type: str
    mtu: int = 0
    mac: str = ""  # other_config:hwaddr: the bridge's own MAC

    def __str__(self) -> str:
        return f"create OVS bridge {self.name} (datapath {self.datapath_type})"


@dataclass(frozen=True, slots=True)
class DelOvsBridge:
    name: str

    def __str__(self) -> str:
        return f"delete OVS bridge {self.name}"


@dataclass(frozen=True, slots=True)
class AddOvsPort:
    """An OVS port (and its interface) on ``bridge``: a veth end, or a
    tunnel when ``type`` is vxlan/geneve/gre with ``options``."""

    bridge: str
    name: str
    tag: int = 0
    type: str = ""
    options: tuple[tuple[str, str], ...] = ()
    external_ids: tuple[tuple[str, str], ...] = ()
    mtu: int = 0
    # Protected ports never forward to each other: split horizon for a full
    # mesh of tunnels, which would otherwise loop broadcasts between hosts.
    protected: bool = False

    def __str__(self) -> str:
        what = f"{self.type} tunnel {self.name}" if self.type else f"port {self.name}"
        opts = " ".join(f"{k}={v}" for k, v in self.options)
        tag = f" tag {self.tag}" if self.tag else ""
        return f"add {what} to OVS bridge {self.bridge}{tag}" + (f" ({opts})" if opts else "")


@dataclass(frozen=True, slots=True)
class DelOvsPort:
    name: str

    def __str__(self) -> str:
        return f"remove OVS port {self.name}"


@dataclass(frozen=True, slots=True)
class SetOvsPortTag:
    name: str
    tag: int

    def __str__(self) -> str:
        return (
            f"set VLAN tag {self.tag} on OVS port {self.name}"
            if self.tag
            else f"clear VLAN tag on {self.name}"
        )


@dataclass(frozen=True, slots=True)
class CreateVxlan:
    """A kernel VXLAN device for a Linux overlay bridge: learning off,
    flooding only to the head-end replication entries netplumb adds."""

    name: str
    vni: int
    local: str
    bridge: str
    mtu: int
    alias: str
    port: int = 4789

    def __str__(self) -> str:
        return f"create vxlan {self.name} vni {self.vni} local {self.local} on bridge {self.bridge}"


@dataclass(frozen=True, slots=True)
class AddFlood:
    """Head-end replication: an all-zero FDB entry sending BUM traffic of
    ``name`` to ``dst``."""

    name: str
    dst: str

    def __str__(self) -> str:
        return f"flood {self.name} to peer {self.dst}"


@dataclass(frozen=True, slots=True)
class DelFlood:
    name: str
    dst: str

    def __str__(self) -> str:
        return f"stop flooding {self.name} to peer {self.dst}"


@dataclass(frozen=True, slots=True)
class SetTxChecksum:
    """Turn tx checksum offload on or off on an interface (ethtool ioctl).
    Off on the guest end of veths on userspace (netdev) OVS bridges, which
    forward frames with unfinished checksums otherwise."""

    where: Where
    name: str
    on: bool

    def __str__(self) -> str:
        return f"turn tx checksum offload {'on' if self.on else 'off'} on {self.name} ({self.where.value})"


@dataclass(frozen=True, slots=True)
class AddFdbMac:
    """A static forwarding entry: frames to ``mac`` go to the VTEP ``dst``."""

    name: str
    mac: str
    dst: str

    def __str__(self) -> str:
        return f"forward {self.mac} on {self.name} to {self.dst}"


@dataclass(frozen=True, slots=True)
class DelFdbMac:
    name: str
    mac: str
    dst: str

    def __str__(self) -> str:
        return f"stop forwarding {self.mac} on {self.name} to {self.dst}"


@dataclass(frozen=True, slots=True)
class AddNeigh:
    """A permanent neighbour entry on a bridge: the bridge answers ARP/ND for
    ``ip`` itself (with neighbour suppression on its VXLAN port)."""

    bridge: str
    ip: str
    mac: str

    def __str__(self) -> str:
        return f"neighbour {self.ip} is {self.mac} on {self.bridge}"


@dataclass(frozen=True, slots=True)
class DelNeigh:
    bridge: str
    ip: str
    mac: str

    def __str__(self) -> str:
        return f"forget neighbour {self.ip} on {self.bridge}"


@dataclass(frozen=True, slots=True)
class SetNeighSuppress:
    """ARP/ND requests for known neighbours are answered by the bridge and
    not flooded through this port (a VXLAN device)."""

    name: str

    def __str__(self) -> str:
        return f"suppress ARP/ND flooding through {self.name}"


@dataclass(frozen=True, slots=True)
class SetOvsStaticMac:
    """A static entry in an OVS bridge's MAC table: frames to ``mac`` go out
    ``port`` (a tunnel) without flooding, and learning cannot move it."""

    bridge: str
    port: str
    mac: str

    def __str__(self) -> str:
        return f"forward {self.mac} on {self.bridge} to {self.port}"


@dataclass(frozen=True, slots=True)
class DelOvsStaticMac:
    bridge: str
    mac: str

    def __str__(self) -> str:
        return f"stop forwarding {self.mac} on {self.bridge}"


@dataclass(frozen=True, slots=True)
class SetOvsArpAnswers:
    """The OVS bridge answers ARP requests for these (ip, mac) itself (one
    flow each, tagged with our cookie); all of our answers are replaced at
    once, in one OpenFlow bundle."""

    bridge: str
    answers: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"answer ARP on {self.bridge} for {len(self.answers)} address(es)"


# OVS ops: OVSDB rows, and (the last three) ovs-vswitchd's MAC table and
# OpenFlow table.
OvsOp = (
    AddOvsBridge
    | DelOvsBridge
    | AddOvsPort
    | DelOvsPort
    | SetOvsPortTag
    | SetOvsStaticMac
    | DelOvsStaticMac
    | SetOvsArpAnswers
)

Op = (
    CreateBridge
    | CreateVeth
    | CreateMacvlan
    | CreateDummy
    | CreateVlanLink
    | MoveToGuest
    | MoveToHost
    | RestoreHostLink
    | EnableIpv6
    | AddRule
    | DelRule
    | DeleteLink
    | SetMaster
    | SetPortVlan
    | SetBridgeVlanFiltering
    | SetMtu
    | SetMac
    | SetUp
    | AddAddress
    | DelAddress
    | AddRoute
    | DelRoute
    | Announce
    | AddOvsBridge
    | DelOvsBridge
    | AddOvsPort
    | DelOvsPort
    | SetOvsPortTag
    | SetOvsStaticMac
    | DelOvsStaticMac
    | SetOvsArpAnswers
    | CreateVxlan
    | AddFlood
    | DelFlood
    | AddFdbMac
    | DelFdbMac
    | AddNeigh
    | DelNeigh
    | SetNeighSuppress
    | SetTxChecksum
)


def undo(op: Op) -> Op | None:
    """The op that reverses ``op`` during a rollback, or None when nothing
    needs reversing (the link that holds the change is deleted anyway, or
    the change is harmless to leave)."""
    if isinstance(op, CreateVeth):
        return DeleteLink(Where.HOST, op.host_ifname)
    if isinstance(op, CreateBridge | CreateVlanLink):
        return DeleteLink(Where.HOST, op.name)
    if isinstance(op, CreateMacvlan | CreateDummy):
        return DeleteLink(Where.GUEST, op.guest_ifname)
    if isinstance(op, MoveToGuest):
        return MoveToHost(op.guest_ifname, op.name, "")
    if isinstance(op, AddRule):
        return DelRule(op.rule)
    if isinstance(op, AddAddress):
        return DelAddress(op.where, op.name, op.address)
    if isinstance(op, AddRoute):
        return DelRoute(op.name, op.route)
    if isinstance(op, AddOvsBridge):
        return DelOvsBridge(op.name)
    if isinstance(op, AddOvsPort):
        return DelOvsPort(op.name)
    if isinstance(op, CreateVxlan):
        return DeleteLink(Where.HOST, op.name)
    if isinstance(op, AddFlood):
        return DelFlood(op.name, op.dst)
    if isinstance(op, AddFdbMac):
        return DelFdbMac(op.name, op.mac, op.dst)
    if isinstance(op, AddNeigh):
        return DelNeigh(op.bridge, op.ip, op.mac)
    if isinstance(op, SetOvsStaticMac):
        return DelOvsStaticMac(op.bridge, op.mac)
    return None
