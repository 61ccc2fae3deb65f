"""The desired-state model: frozen, validated values. Pure: no I/O.

Specs are what callers ask for, already validated and normalised (see
``spec.py``). Records are what the store keeps: a spec plus the facts the agent
resolved when it built the object (the guest's namespace identity, the
effective MTU). Observations are what drivers report about the host.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import TypeAlias

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_IFNAME = "eth1"
DEFAULT_MTU = 1500


class BridgeKind(enum.Enum):
    LINUX = "linux"
    OVS = "ovs"
    # Requests only, never stored: an existing bridge of that name, Linux or
    # OVS, else a new Linux bridge (what pipework does with its host interface).
    AUTO = "auto"


class LinkKind(enum.Enum):
    """What the guest's interface is (pipework's host-interface modes)."""

    VETH = "veth"  # a veth pair whose host end is a bridge port
    MACVLAN = "macvlan"  # a macvlan (bridge mode) on a host interface
    PHYS = "phys"  # the host interface itself, moved into the guest
    DUMMY = "dummy"  # a dummy interface in the guest


class GuestKind(enum.Enum):
    NETNS = "netns"  # /run/netns/NAME
    PID = "pid"  # /proc/PID/ns/net
    PATH = "path"  # any other nsfs path
    DOCKER = "docker"  # a Docker container (resolved to its full id)


@dataclass(frozen=True, slots=True)
class GuestRef:
    """A guest as the caller named it, in canonical form.

    ``key`` is the stable identity used for endpoint ids: "netns:NAME",
    "pid:PID", "path:/x/y" or "docker:<full id>".
    """

    kind: GuestKind
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.value}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route inside a guest through the endpoint's interface.

    ``via`` None means on-link. ``onlink`` marks the host route netplumb adds
    for a gateway outside every address's subnet (as pipework did).
    """

    destination: IPNetwork
    via: IPAddress | None = None
    metric: int = 0
    onlink: bool = False

    @property
    def family(self) -> int:
        return self.destination.version

    def __str__(self) -> str:
        dest = "default" if self.destination.prefixlen == 0 else str(self.destination)
        out = dest + (f" via {self.via}" if self.via else "")
        return out + (f" metric {self.metric}" if self.metric else "")


@dataclass(frozen=True, slots=True)
class BridgeSpec:
    name: str
    kind: BridgeKind = BridgeKind.LINUX
    addresses: tuple[IPInterface, ...] = ()
    mtu: int = 0  # 0: leave the kernel default
    vni: int = 0
    tunnel: str = ""
    mac: str = ""  # "": derived from the agent id and name (cluster networks: one for all hosts)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A cluster network: defined once in etcd, built as a bridge of the same
    name on every host. ``gateway`` and ``dns`` are on every host's bridge
    (the same addresses and MAC everywhere: an anycast gateway)."""

    name: str
    subnet: IPNetwork
    vni: int
    kind: BridgeKind = BridgeKind.LINUX
    tunnel: str = "vxlan"
    gateway: IPAddress | None = None
    dns: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class BridgeRecord:
    spec: BridgeSpec
    owned: bool  # netplumb created the link and may delete it
    # Adopted bridges: addresses the bridge already had when adopted, which
    # netplumb must leave in place when it forgets the bridge.
    foreign_addresses: tuple[IPInterface, ...] = ()
    # Cluster mode: the network this bridge implements (kept here too, so
    # the host keeps working while etcd is unreachable).
    network: NetworkSpec | None = None


@dataclass(frozen=True, slots=True)
class DhcpSpec:
    """A DHCP client run inside the guest's namespace for the interface."""

    client: str  # "udhcpc", "dhclient" or "dhcpcd" (resolved; never "dhcp")
    options: tuple[str, ...] = ()
    keep: bool = False  # keep it running to renew the lease


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A policy routing rule inside a guest (``pipework rule``)."""

    family: int  # 4 or 6
    priority: int = 0  # 0: the kernel picks one
    table: int = 254
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    fwmark: int = 0
    fwmask: int = 0
    iif: str = ""
    oif: str = ""
    invert: bool = False

    def __str__(self) -> str:
        words = ["not"] if self.invert else []
        if self.priority:
            words += ["priority", str(self.priority)]
        words += ["from", str(self.src) if self.src is not None else "all"]
        if self.dst is not None:
            words += ["to", str(self.dst)]
        if self.fwmark:
            words += ["fwmark", f"{self.fwmark:#x}" + (f"/{self.fwmask:#x}" if self.fwmask else "")]
        if self.iif:
            words += ["iif", self.iif]
        if self.oif:
            words += ["oif", self.oif]
        words += ["lookup", str(self.table)]
        return " ".join(words)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A validated attach request with every default still unresolved
    (``mtu`` 0, ``mac`` None, ``host_ifname`` None mean "derive")."""

    bridge: str
    guest: GuestRef
    ifname: str = DEFAULT_IFNAME
    host_ifname: str | None = None
    mac: str | None = None
    mtu: int = 0
    vlan: int = 0
    addresses: tuple[IPInterface, ...] = ()
    gateways: tuple[IPAddress, ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    # Cluster mode: a name to publish for the endpoint.
    name: str = ""
    # MACVLAN and PHYS: the host interface ("mac:MAC" picks it by address);
    # ``bridge`` is then empty.
    kind: LinkKind = LinkKind.VETH
    parent: str = ""
    dhcp: DhcpSpec | None = None


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """What the store keeps for one endpoint: the request as given, plus the
    values the agent resolved for it when it was first plumbed."""

    spec: EndpointSpec
    id: str
    host_ifname: str
    mac: str
    mtu: int
    # Identity (st_dev, st_ino) of the namespace the endpoint was plumbed into;
    # a pid guest whose namespace identity changed is a different process.
    netns_id: tuple[int, int] | None = None
    netns_path: str = ""
    # Routes added later with AddRoute (kept apart from spec.routes so that
    # repeating the original attach stays a no-op).
    extra_routes: tuple[RouteSpec, ...] = ()
    # Docker guests: the container's name when it was attached (for display,
    # and to find its endpoints by name once it is gone).
    guest_name: str = ""
    # MACVLAN and PHYS: the host interface as resolved at attach ("mac:" and
    # all); PHYS: its own MAC then, by which it is found again when a dead
    # namespace hands it back to the host under another name.
    parent: str = ""
    parent_mac: str = ""
    # Added later with ``pipework rule`` / ``pipework tc``; re-applied
    # whenever the guest interface is created again.
    rules: tuple[RuleSpec, ...] = ()
    tc: tuple[tuple[str, ...], ...] = ()
    # Cluster mode: addresses allocated from the network's subnet (kept
    # across restarts of the guest; released on detach), and the name
    # published in the cluster's registry.
    allocated: tuple[IPInterface, ...] = ()
    net_gateways: tuple[IPAddress, ...] = ()  # the network's, when none was given
    name: str = ""

    @property
    def guest(self) -> GuestRef:
        return self.spec.guest

    @property
    def ifname(self) -> str:
        return self.spec.ifname


@dataclass(frozen=True, slots=True)
class DesiredEndpoint:
    """Everything the planner needs to build one endpoint, fully resolved."""

    id: str
    alias: str  # ownership tag of both veth ends
    bridge: str
    ifname: str
    host_ifname: str
    mac: str
    mtu: int
    vlan: int
    addresses: tuple[IPInterface, ...]
    routes: tuple[RouteSpec, ...]  # gateways expanded into default routes
    ovs: bool = False  # the bridge is an OVS bridge: the host end is an OVS port
    tx_checksum_off: bool = False  # userspace OVS datapath: see SetTxChecksum
    kind: LinkKind = LinkKind.VETH
    # MACVLAN: the link to build on (``<if>.<vid>`` with a VLAN); PHYS: the
    # host interface to move in. ``vlan_base``: the NIC under ``<if>.<vid>``.
    parent: str = ""
    vlan_base: str = ""
    vlan_alias: str = ""  # tag of a <if>.<vid> made for macvlans (shared by them)
    parent_mac: str = ""  # PHYS: restored on the way back to the host
    dhcp: bool = False  # IPv4 addresses beyond ``addresses`` are the client's
    rules: tuple[RuleSpec, ...] = ()


# ------------------------------------------------------------ observations


@dataclass(frozen=True, slots=True)
class ObservedRoute:
    destination: IPNetwork
    via: IPAddress | None
    metric: int


@dataclass(frozen=True, slots=True)
class ObservedLink:
    """A link as netlink reports it; ``alias`` carries netplumb's ownership
    tag (``netplumb:...``) when netplumb made it."""

    name: str
    index: int
    kind: str
    alias: str = ""
    mac: str = ""
    mtu: int = 0
    up: bool = False
    master: str = ""  # name of the bridge it is a port of, "" if none
    peer_index: int = 0  # veth: ifindex of the peer in the peer's namespace
    addresses: tuple[IPInterface, ...] = ()
    routes: tuple[ObservedRoute, ...] = ()  # netplumb-tagged routes via this link
    vlans: tuple[int, ...] = ()  # bridge port: access VLANs (pvid)


@dataclass(frozen=True, slots=True)
class ObservedEndpoint:
    """The host's view of one endpoint: its host end in the root namespace and
    the link named ``ifname`` inside the guest (either may be missing)."""

    host: ObservedLink | None
    guest: ObservedLink | None
    ovs_port: ObservedOvsPort | None = None  # OVS bridges: the host end's port row
    guest_tx_checksum: bool | None = None  # tx checksum offload of the guest end
    # MACVLAN and PHYS: the host interface (PHYS: None once it is in the guest)
    parent: ObservedLink | None = None
    vlan_base: ObservedLink | None = None  # the NIC under a VLAN sub-interface


@dataclass(frozen=True, slots=True)
class ObservedBridge:
    name: str
    exists: bool
    is_bridge: bool = False
    alias: str = ""
    mtu: int = 0
    up: bool = False
    addresses: tuple[IPInterface, ...] = ()
    vlan_filtering: bool = False
    mac: str = ""


@dataclass(frozen=True, slots=True)
class HostFeatures:
    """Kernel features probed once at start."""

    bridge_vlan_filtering: bool = False
    vxlan: bool = True
    vlan_8021q: bool = False
    dummy: bool = False
    extras: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer host: the other end of every overlay bridge's tunnels."""

    address: IPAddress
    name: str = ""
    source: str = "static"  # "static" (peer add) or "cluster"


@dataclass(frozen=True, slots=True)
class ObservedOvsBridge:
    name: str
    datapath_type: str
    owner: str  # external_ids:netplumb-owner ("" when not ours)
    ports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedOvsPort:
    name: str
    bridge: str
    type: str
    options: dict[str, str]
    tag: int
    owner: str
    external_ids: dict[str, str]
    ofport: int = -1
    error: str = ""
    link_state: str = ""
    protected: bool = False


@dataclass(frozen=True, slots=True)
class ObservedOvsKnown:
    """What an OVS bridge has of the known remote endpoints: static MAC
    table entries (mac, port name) and our ARP answers (ip, mac)."""

    static_macs: tuple[tuple[str, str], ...] = ()
    arp_answers: tuple[tuple[str, str], ...] = ()
    # Our tunnel ports that ovs-vswitchd has built (they have an OpenFlow
    # port number): only those can take static entries.
    ready_ports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObservedVxlan:
    """A Linux VXLAN device and its head-end replication entries."""

    name: str
    vni: int
    local: str
    master: str
    learning: bool
    mtu: int
    alias: str
    flood_to: tuple[str, ...]  # destinations of the all-zero FDB entries
    # Cluster networks: static (MAC, destination) entries of known remote
    # endpoints, and whether the bridge answers ARP/ND for them itself.
    macs: tuple[tuple[str, str], ...] = ()
    neigh_suppress: bool = False
