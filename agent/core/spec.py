"""Validation: raw request values in, validated model values out. Pure.

Every function raises ``InvalidSpec`` naming the request field at fault, so a
bad request is refused before anything on the host is touched.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from ..errors import InvalidSpec
from .model import (
    DEFAULT_IFNAME,
    BridgeKind,
    BridgeSpec,
    DhcpSpec,
    EndpointSpec,
    GuestKind,
    GuestRef,
    IPAddress,
    IPInterface,
    IPNetwork,
    LinkKind,
    NetworkSpec,
    RouteSpec,
    RuleSpec,
)

IFNAMSIZ = 15
MTU_MIN, MTU_MAX = 68, 65535
IPV6_MIN_MTU = 1280
VLAN_MIN, VLAN_MAX = 1, 4094
VNI_MAX = (1 << 24) - 1
PID_MAX = 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit
MAX_ADDRESSES = 64
MAX_ROUTES = 256
MAX_PATH = 4096
MAX_ARGS = 64  # words of a rule or tc command
MAX_ARG_LEN = 256
DHCP_CLIENTS = ("dhcp", "udhcpc", "dhclient", "dhcpcd")  # "dhcp": any installed

_IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_NETNS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_DOCKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_NETNS_DIRS = ("/run/netns/", "/var/run/netns/")
_PROC_NS_RE = re.compile(r"/proc/([0-9]+)/ns/net")
DNS_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _no_scope_id(value: str, field: str) -> None:
    """Refuse an IPv6 scope id ("fe80::1%eth0"): ipaddress keeps it, but the
    kernel stores the address without it, so the stored value would never
    equal the observed one."""
    if "%" in value:
        raise InvalidSpec(
            f"{field} {_show(value)} has an IPv6 scope id ('%...'), which the kernel ignores",
            field=field,
            hint="drop the '%' and what follows; netplumb knows which interface it means",
        )


def ifname(value: str, field: str) -> str:
    """A Linux interface name: 1..15 bytes of [A-Za-z0-9_.-], not starting
    with a punctuation character."""
    if not value:
        raise InvalidSpec(f"{field} is empty; give an interface name", field=field)
    if len(value.encode()) > IFNAMSIZ:
        raise InvalidSpec(
            f"{field} {_show(value)} is longer than {IFNAMSIZ} bytes (the kernel's IFNAMSIZ)",
            field=field,
        )
    if not _IFNAME_RE.fullmatch(value):
        raise InvalidSpec(
            f"{field} {_show(value)} is not a valid interface name; use letters, digits, "
            "'_', '.' and '-', starting with a letter or digit",
            field=field,
        )
    return value


def guest(value: str, field: str = "guest") -> GuestRef:
    """Parse a guest reference (see EndpointSpec.guest in the proto).

    A bare NAME is a named network namespace; resolving Docker names is the
    caller's business (it needs I/O).
    """
    if not value:
        raise InvalidSpec(f"{field} is empty; name a guest such as netns:NAME", field=field)
    if "\0" in value or len(value) > MAX_PATH:
        raise InvalidSpec(f"{field} {_show(value)} is not a valid guest reference", field=field)
    if value.startswith("/"):
        return _guest_path(value, field)
    kind, sep, rest = value.partition(":")
    if not sep:
        return GuestRef(GuestKind.NETNS, _netns_name(value, field))
    if kind == "netns":
        return GuestRef(GuestKind.NETNS, _netns_name(rest, field))
    if kind == "pid":
        return GuestRef(GuestKind.PID, str(_pid(rest, field)))
    if kind == "path":
        # GuestRef.key of a path guest; canonicalised like a bare path, so that
        # path:/run/netns/x is netns:x and path:/proc/5/ns/net is pid:5.
        if not rest.startswith("/"):
            raise InvalidSpec(
                f"{field} {_show(value)}: {_show(rest)} is not an absolute path",
                field=field,
                hint="write it as path:/PATH, e.g. path:/var/lib/ns/blue",
            )
        return _guest_path(rest, field)
    if kind == "docker":
        if not _DOCKER_RE.fullmatch(rest):
            raise InvalidSpec(
                f"{field} {_show(value)}: {_show(rest)} is not a Docker container name or id",
                field=field,
            )
        return GuestRef(GuestKind.DOCKER, rest)
    raise InvalidSpec(
        f"{field} {_show(value)} has an unknown kind {_show(kind)}",
        field=field,
        hint="use netns:NAME, pid:PID, docker:NAME, path:/PATH, "
        "or a namespace path such as /proc/PID/ns/net",
    )


def _netns_name(name: str, field: str) -> str:
    if not _NETNS_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidSpec(
            f"{field}: {_show(name)} is not a valid network namespace name "
            "(1-64 of [A-Za-z0-9_.-], not starting with '.' or '-')",
            field=field,
        )
    return name


def _pid(text: str, field: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise InvalidSpec(f"{field}: pid {_show(text)} is not a number", field=field)
    pid = int(text)
    if not 1 <= pid <= PID_MAX:
        raise InvalidSpec(f"{field}: pid {pid} is out of range 1..{PID_MAX}", field=field)
    return pid


def _guest_path(path: str, field: str) -> GuestRef:
    import posixpath

    if posixpath.normpath(path) != path or "//" in path:
        raise InvalidSpec(
            f"{field} {_show(path)} is not a normalised absolute path",
            field=field,
            hint="give the path without '..', '.' or doubled slashes",
        )
    match = _PROC_NS_RE.fullmatch(path)
    if match:
        return GuestRef(GuestKind.PID, str(_pid(match.group(1), field)))
    for prefix in _NETNS_DIRS:
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return GuestRef(GuestKind.NETNS, _netns_name(path[len(prefix) :], field))
    return GuestRef(GuestKind.PATH, path)


def mac(value: str, field: str) -> str:
    if not _MAC_RE.fullmatch(value):
        raise InvalidSpec(
            f"{field} {_show(value)} is not a MAC address (six hex pairs separated by ':')",
            field=field,
        )
    value = value.lower()
    if int(value[:2], 16) & 1:
        raise InvalidSpec(
            f"{field} {value} is a multicast address; give a unicast MAC", field=field
        )
    if value == "00:00:00:00:00:00":
        raise InvalidSpec(f"{field} {value} is the all-zero address", field=field)
    return value


def mtu(value: int, field: str) -> int:
    """0 means "default"; anything else must be 68..65535."""
    if value != 0 and not MTU_MIN <= value <= MTU_MAX:
        raise InvalidSpec(f"{field} {value} is out of range {MTU_MIN}..{MTU_MAX}", field=field)
    return value


def vlan(value: int, field: str) -> int:
    if value != 0 and not VLAN_MIN <= value <= VLAN_MAX:
        raise InvalidSpec(f"{field} {value} is out of range {VLAN_MIN}..{VLAN_MAX}", field=field)
    return value


def interface_address(value: str, field: str, link_local: bool = False) -> IPInterface:
    """An address with its prefix length, e.g. 198.18.0.10/24. IPv6
    link-local addresses only with ``link_local`` (bridges may carry a fixed
    fe80::1 as the guests' gateway; in guests the kernel manages them)."""
    _no_scope_id(value, field)
    if "/" not in value:
        raise InvalidSpec(
            f"{field} {_show(value)} has no prefix length",
            field=field,
            hint=f"write it as ADDRESS/PREFIX, e.g. {value}/24",
        )
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise InvalidSpec(
            f"{field} {_show(value)} is not an IP address/prefix", field=field
        ) from None
    ip = iface.ip
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise InvalidSpec(
            f"{field} {value} is not a usable interface address "
            "(unspecified, multicast or loopback)",
            field=field,
        )
    if ip.version == 6 and ip.is_link_local and not link_local:
        raise InvalidSpec(
            f"{field} {value} is an IPv6 link-local address (fe80::/10); the kernel "
            "manages those itself",
            field=field,
            hint="give a global or unique-local address; the kernel adds the link-local one",
        )
    net = iface.network
    if ip.version == 4 and net.prefixlen < 31:
        if ip == net.network_address:
            raise InvalidSpec(f"{field} {value} is the network address of its subnet", field=field)
        if ip == net.broadcast_address:
            raise InvalidSpec(
                f"{field} {value} is the broadcast address of its subnet", field=field
            )
    return iface


def ip_address(value: str, field: str) -> IPAddress:
    _no_scope_id(value, field)
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidSpec(f"{field} {_show(value)} is not an IP address", field=field) from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidSpec(f"{field} {value} is not a usable next hop", field=field)
    return ip


def destination(value: str, field: str, family: int = 0) -> IPNetwork:
    """A route destination: CIDR with host bits clear, or "default"."""
    _no_scope_id(value, field)
    if value == "default":
        if family == 6:
            return ipaddress.IPv6Network("::/0")
        return ipaddress.IPv4Network("0.0.0.0/0")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InvalidSpec(
                f"{field} {_show(value)} is not a CIDR destination or 'default'", field=field
            ) from None
        raise InvalidSpec(
            f"{field} {value} has host bits set",
            field=field,
            hint=f"did you mean {loose}?",
        ) from None


def route(dest: str, via: str, metric: int, field: str) -> RouteSpec:
    gw = ip_address(via, f"{field}.via") if via else None
    net = destination(dest, f"{field}.destination", gw.version if gw else 0)
    if gw is not None and gw.version != net.version:
        raise InvalidSpec(
            f"{field}: next hop {gw} and destination {net} are of different IP families",
            field=f"{field}.via",
        )
    if not 0 <= metric <= 0xFFFFFFFF:
        raise InvalidSpec(f"{field}.metric {metric} is out of range", field=f"{field}.metric")
    if net.version == 6 and metric == 1024:
        metric = 0  # the kernel's default IPv6 metric: stored as "default"
    return RouteSpec(destination=net, via=gw, metric=metric)


def bridge_kind(value: str, field: str) -> BridgeKind:
    try:
        return BridgeKind(value or "linux")
    except ValueError:
        raise InvalidSpec(
            f"{field} {_show(value)} is not a bridge kind; use linux, ovs or auto", field=field
        ) from None


def bridge_spec(
    name: str,
    kind: str = "linux",
    addresses: Sequence[str] = (),
    mtu_value: int = 0,
    vni: int = 0,
    tunnel: str = "",
) -> BridgeSpec:
    name = ifname(name, "spec.name")
    if len(addresses) > MAX_ADDRESSES:
        raise InvalidSpec(
            f"spec.addresses has more than {MAX_ADDRESSES} entries", field="spec.addresses"
        )
    addrs = tuple(
        interface_address(a, f"spec.addresses[{i}]", link_local=True)
        for i, a in enumerate(addresses)
    )
    _no_duplicates(addrs, "spec.addresses")
    if not 0 <= vni <= VNI_MAX:
        raise InvalidSpec(f"spec.vni {vni} is out of range 1..{VNI_MAX}", field="spec.vni")
    if tunnel not in ("", "vxlan", "geneve", "gre"):
        raise InvalidSpec(
            f"spec.tunnel {_show(tunnel)} is not vxlan, geneve or gre", field="spec.tunnel"
        )
    if tunnel and not vni:
        raise InvalidSpec("spec.tunnel needs spec.vni", field="spec.tunnel", hint="give --vni N")
    return BridgeSpec(
        name=name,
        kind=bridge_kind(kind, "spec.kind"),
        addresses=_sorted_addrs(addrs),
        mtu=mtu(mtu_value, "spec.mtu"),
        vni=vni,
        tunnel=tunnel or ("vxlan" if vni else ""),
    )


def endpoint_spec(
    *,
    bridge: str,
    guest_ref: GuestRef,
    ifname_value: str = "",
    host_ifname: str = "",
    mac_value: str = "",
    mtu_value: int = 0,
    vlan_value: int = 0,
    addresses: Sequence[str] = (),
    gateways: Sequence[str] = (),
    routes: Sequence[tuple[str, str, int]] = (),
    kind: str = "",
    parent: str = "",
    dhcp: DhcpSpec | None = None,
    endpoint_name: str = "",
) -> EndpointSpec:
    """Validate an attach request. ``guest_ref`` is already parsed (and, for
    Docker, resolved to the container's full id); ``dhcp`` has its client
    resolved (see ``dhcp_spec``)."""
    link = link_kind(kind, "spec.kind")
    if link is LinkKind.VETH:
        bridge = ifname(bridge, "spec.bridge")
        if parent:
            raise InvalidSpec(
                "spec.parent is for macvlan and phys endpoints; a veth endpoint has a bridge",
                field="spec.parent",
            )
    else:
        if bridge:
            raise InvalidSpec(
                f"spec.bridge is for veth endpoints; a {link.value} endpoint has none",
                field="spec.bridge",
                hint="give the host interface as spec.parent" if link is not LinkKind.DUMMY else "",
            )
        if link is LinkKind.DUMMY:
            if parent:
                raise InvalidSpec("a dummy endpoint has no spec.parent", field="spec.parent")
        else:
            parent = parent_interface(parent, "spec.parent")
        if host_ifname:
            raise InvalidSpec(
                f"spec.host_ifname names a veth's host end; a {link.value} endpoint has none",
                field="spec.host_ifname",
            )
        if vlan_value and link is LinkKind.DUMMY:
            raise InvalidSpec("a dummy endpoint has no VLAN", field="spec.vlan")
    name = ifname(ifname_value or DEFAULT_IFNAME, "spec.ifname")
    host = ifname(host_ifname, "spec.host_ifname") if host_ifname else None
    if len(addresses) > MAX_ADDRESSES:
        raise InvalidSpec(
            f"spec.addresses has more than {MAX_ADDRESSES} entries", field="spec.addresses"
        )
    addrs = tuple(interface_address(a, f"spec.addresses[{i}]") for i, a in enumerate(addresses))
    _no_duplicates(addrs, "spec.addresses")
    mtu_v = mtu(mtu_value, "spec.mtu")
    if mtu_v and mtu_v < IPV6_MIN_MTU and any(a.version == 6 for a in addrs):
        raise InvalidSpec(
            f"spec.mtu {mtu_v} is below {IPV6_MIN_MTU}, the minimum for IPv6 addresses",
            field="spec.mtu",
        )
    gws = _gateways(gateways, addrs)
    if len(routes) > MAX_ROUTES:
        raise InvalidSpec(f"spec.routes has more than {MAX_ROUTES} entries", field="spec.routes")
    rts = tuple(route(d, v, m, f"spec.routes[{i}]") for i, (d, v, m) in enumerate(routes))
    if mtu_v and mtu_v < IPV6_MIN_MTU:
        for i, r in enumerate(rts):
            if r.family == 6:
                raise InvalidSpec(
                    f"spec.mtu {mtu_v} is below {IPV6_MIN_MTU}, the minimum for IPv6 routes "
                    f"(spec.routes[{i}] is {r})",
                    field="spec.mtu",
                )
    onlink = _onlink_host_routes(gws, addrs)
    seen: set[tuple[IPNetwork, int]] = set()
    for i, r in enumerate(rts):
        if (r.destination, r.metric) in seen:
            raise InvalidSpec(
                f"spec.routes[{i}] repeats destination {r.destination}", field=f"spec.routes[{i}]"
            )
        seen.add((r.destination, r.metric))
        if r.destination.prefixlen == 0 and any(g.version == r.family for g in gws):
            raise InvalidSpec(
                f"spec.routes[{i}] is a default route and a gateway of that family is given",
                field=f"spec.routes[{i}]",
            )
        if r.destination in onlink:
            raise InvalidSpec(
                f"spec.routes[{i}] is a route to {r.destination}, the host route of gateway "
                f"{onlink[r.destination]}, which is outside every address's subnet: netplumb "
                "adds that on-link route itself",
                field=f"spec.routes[{i}].destination",
                hint="drop the route; the gateway is reached on-link through the interface",
            )
    return EndpointSpec(
        bridge=bridge,
        guest=guest_ref,
        ifname=name,
        host_ifname=host,
        mac=mac(mac_value, "spec.mac") if mac_value else None,
        mtu=mtu_v,
        vlan=vlan(vlan_value, "spec.vlan"),
        addresses=_sorted_addrs(addrs),
        gateways=tuple(sorted(gws, key=lambda g: (g.version, int(g)))),
        routes=tuple(sorted(rts, key=_route_key)),
        kind=link,
        parent=parent,
        dhcp=dhcp,
        name=endpoint_name.lower(),
    )


def link_kind(value: str, field: str) -> LinkKind:
    try:
        return LinkKind(value or "veth")
    except ValueError:
        raise InvalidSpec(
            f"{field} {_show(value)} is not an endpoint kind; use veth, macvlan, phys or dummy",
            field=field,
        ) from None


def parent_interface(value: str, field: str) -> str:
    """A host interface by name, or ``mac:MAC`` (the interface with that MAC)."""
    if not value:
        raise InvalidSpec(f"{field} is required: the host interface", field=field)
    if value.startswith("mac:"):
        return "mac:" + mac(value[4:], field)
    return ifname(value, field)


# DHCP client options that name a program to run or a file to read or write
# (the client runs as root on the host's filesystem): refused, whatever the
# client -- netplumb sets its own script, pid and lease files.
_UDHCPC = {"-s", "--script", "-p", "--pidfile"}
_DHCLIENT = {"-sf", "-cf", "-pf", "-lf", "-df"}
_DHCPCD = {"-c", "--script", "-f", "--config", "-j", "--logfile", "-e", "--env"}
DHCP_FORBIDDEN_OPTIONS = {
    "udhcpc": frozenset(_UDHCPC),
    "dhclient": frozenset(_DHCLIENT),
    "dhcpcd": frozenset(_DHCPCD),
    "dhcp": frozenset(_UDHCPC | _DHCLIENT | _DHCPCD),  # whichever client it turns out to be
}


def dhcp_spec(
    client: str, options: Sequence[str], keep: bool, field: str = "spec.dhcp"
) -> DhcpSpec:
    """A DHCP request with its client already chosen (``dhcp`` resolved by
    the agent to an installed client). Options that name a script or a file
    (or any word with a ``/``) are refused: the client runs as root."""
    if client not in DHCP_CLIENTS:
        raise InvalidSpec(
            f"{field}.client {_show(client)} is not a DHCP client netplumb runs",
            field=f"{field}.client",
            hint="use udhcpc, dhclient, dhcpcd, or dhcp (any installed one)",
        )
    opts = command_args(options, f"{field}.options")
    for i, o in enumerate(opts):
        if o.split("=", 1)[0] in DHCP_FORBIDDEN_OPTIONS[client] or "/" in o:
            raise InvalidSpec(
                f"{field}.options[{i}] {_show(o)}: options that name a script or a file are "
                "not passed to the DHCP client (it runs as root; netplumb sets its own)",
                field=f"{field}.options[{i}]",
                hint="give lease options only, e.g. -O staticroutes or -x hostname:web",
            )
    return DhcpSpec(client=client, options=opts, keep=keep)


def command_args(args: Sequence[str], field: str) -> tuple[str, ...]:
    """Words handed to a program as an argument list (never to a shell):
    bounded, printable, no NUL."""
    if len(args) > MAX_ARGS:
        raise InvalidSpec(f"{field} has more than {MAX_ARGS} words", field=field)
    for i, a in enumerate(args):
        if not a or len(a) > MAX_ARG_LEN or not a.isprintable():
            raise InvalidSpec(
                f"{field}[{i}] {_show(a)} is empty, too long or not printable",
                field=f"{field}[{i}]",
            )
    return tuple(args)


_RULE_TABLES = {"main": 254, "local": 255, "default": 253}


def ip_rule(args: Sequence[str], field: str = "args") -> tuple[str, RuleSpec]:
    """``ip rule`` arguments as pipework passed them: ``[add|del] [not]
    [from PREFIX] [to PREFIX] [fwmark N[/M]] [iif IF] [oif IF]
    [priority N] [table|lookup ID]``, ``-6`` first for IPv6. Returns the verb
    ("add" or "del") and the rule."""
    words = list(command_args(args, field))
    family = 0
    if words and words[0] in ("-4", "-6"):
        family = int(words.pop(0)[1])
    verb = "add"
    if words and words[0] in ("add", "del", "delete"):
        verb = "del" if words.pop(0) != "add" else "add"
    kw: dict[str, object] = {}
    nets: list[IPNetwork] = []
    if words and words[0] == "not":
        kw["invert"] = True
        words.pop(0)
    while words:
        key = words.pop(0)
        if not words:
            raise InvalidSpec(f"{field}: {_show(key)} needs a value", field=field)
        value = words.pop(0)
        if key in ("from", "to"):
            if value == "all":
                continue
            net = _rule_prefix(value, f"{field}: {key}")
            nets.append(net)
            kw["src" if key == "from" else "dst"] = net
        elif key == "fwmark":
            mark, _, mask = value.partition("/")
            kw["fwmark"] = _number(mark, f"{field}: fwmark", 0xFFFFFFFF)
            kw["fwmask"] = _number(mask, f"{field}: fwmark mask", 0xFFFFFFFF) if mask else 0
        elif key in ("iif", "oif"):
            kw[key] = ifname(value, f"{field}: {key}")
        elif key in ("priority", "pref", "preference"):
            kw["priority"] = _number(value, f"{field}: priority", 0xFFFFFFFF)
        elif key in ("table", "lookup"):
            kw["table"] = _RULE_TABLES.get(value) or _number(value, f"{field}: table", 0xFFFFFFFF)
        else:
            raise InvalidSpec(
                f"{field}: {_show(key)} is not supported",
                field=field,
                hint="netplumb records rules of the form [not] [from P] [to P] [fwmark N[/M]] "
                "[iif IF] [oif IF] [priority N] [table ID]",
            )
    versions = {n.version for n in nets}
    if len(versions) > 1 or (family and versions and versions != {family}):
        raise InvalidSpec(f"{field}: mixes IPv4 and IPv6", field=field)
    kw["family"] = family or (versions.pop() if versions else 4)
    return verb, RuleSpec(**kw)  # type: ignore[arg-type]


def _rule_prefix(value: str, field: str) -> IPNetwork:
    _no_scope_id(value, field)
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidSpec(
            f"{field} {_show(value)} is not an address or prefix", field=field
        ) from None


def _number(value: str, field: str, top: int) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        raise InvalidSpec(f"{field} {_show(value)} is not a number", field=field) from None
    if not 0 <= n <= top:
        raise InvalidSpec(f"{field} {n} is out of range", field=field)
    return n


TC_OBJECTS = ("qdisc", "class", "filter")
# tc words followed by a host path (eBPF objects, bytecode files, pinned maps).
TC_FORBIDDEN_WORDS = frozenset(
    {"obj", "object-file", "bytecode-file", "export", "pinned", "object-pinned", "map"}
)


def tc_command(args: Sequence[str], field: str = "args") -> tuple[str, str, tuple[str, ...]]:
    """``tc`` arguments as pipework passed them: ``OBJECT VERB dev IF ...``.
    Returns (verb, the interface, the words); the words go to ``tc`` as an
    argument list."""
    words = command_args(args, field)
    if len(words) < 4 or words[0] not in TC_OBJECTS:
        raise InvalidSpec(
            f"{field}: expected qdisc|class|filter VERB dev IF ..., got {_show(' '.join(words))}",
            field=field,
            hint="e.g. pipework tc GUEST qdisc add dev eth1 root netem delay 10ms",
        )
    verb = words[1]
    if verb not in ("add", "replace", "change", "del", "delete"):
        raise InvalidSpec(
            f"{field}: tc {words[0]} {_show(verb)} is not recorded; use add, replace, change or del",
            field=field,
        )
    if words[2] != "dev":
        raise InvalidSpec(f"{field}: 'dev IF' must follow the verb", field=field)
    for w in words:
        if w in TC_FORBIDDEN_WORDS:
            raise InvalidSpec(
                f"{field}: {_show(w)} names a file tc would read or write as root: not run",
                field=field,
                hint="bpf filters and actions from files are not supported through netplumb",
            )
    return ("del" if verb in ("del", "delete") else "add"), ifname(words[3], f"{field}: dev"), words


def _gateways(values: Sequence[str], addrs: Sequence[IPInterface]) -> tuple[IPAddress, ...]:
    out: list[IPAddress] = []
    for i, value in enumerate(values):
        field = f"spec.gateways[{i}]"
        gw = ip_address(value, field)
        if any(g.version == gw.version for g in out):
            raise InvalidSpec(f"{field}: more than one IPv{gw.version} gateway", field=field)
        if not any(a.version == gw.version for a in addrs):
            raise InvalidSpec(
                f"{field} {gw} has no IPv{gw.version} address on the interface to go with it",
                field=field,
                hint="add an address of that family, e.g. ADDRESS/PREFIX@GATEWAY",
            )
        if any(a.ip == gw for a in addrs):
            raise InvalidSpec(f"{field} {gw} is one of the interface's own addresses", field=field)
        out.append(gw)
    return tuple(out)


def gateway_host_route(gw: IPAddress, addrs: Sequence[IPInterface]) -> IPNetwork | None:
    """The on-link host route (gw/32, gw/128) a gateway outside every
    address's subnet needs, as pipework added for hosters' failover
    addresses; None for a gateway inside one."""
    if any(gw in a.network for a in addrs):
        return None
    return ipaddress.ip_network(f"{gw}/{gw.max_prefixlen}")


def _onlink_host_routes(
    gws: Sequence[IPAddress], addrs: Sequence[IPInterface]
) -> dict[IPNetwork, IPAddress]:
    """The on-link host routes plan.endpoint_routes adds, by destination: a
    requested route with that destination would replace one."""
    routes = {gw: gateway_host_route(gw, addrs) for gw in gws}
    return {net: gw for gw, net in routes.items() if net is not None}


def _no_duplicates(addrs: Sequence[IPInterface], field: str) -> None:
    seen: set[IPAddress] = set()
    for i, a in enumerate(addrs):
        if a.ip in seen:
            raise InvalidSpec(f"{field}[{i}] repeats address {a.ip}", field=f"{field}[{i}]")
        seen.add(a.ip)


def _sorted_addrs(addrs: Sequence[IPInterface]) -> tuple[IPInterface, ...]:
    return tuple(sorted(addrs, key=lambda a: (a.version, int(a.ip), a.network.prefixlen)))


def _route_key(r: RouteSpec) -> tuple[int, int, int, int]:
    return (r.family, int(r.destination.network_address), r.destination.prefixlen, r.metric)


def network_spec(
    name: str,
    subnet: str,
    vni: int,
    kind: str = "linux",
    tunnel: str = "",
    gateway: str = "",
    dns: str = "",
) -> NetworkSpec:
    """A cluster network. The name is also the bridge name on every host (and
    a DNS zone); the gateway defaults to the subnet's first address, the DNS
    address to the gateway."""
    name = ifname(name, "spec.name")
    if not DNS_LABEL_RE.fullmatch(name):
        raise InvalidSpec(
            f"spec.name {name!r}: a network name is also a DNS zone: letters, digits and '-'",
            field="spec.name",
        )
    _no_scope_id(subnet, "spec.subnet")
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError:
        raise InvalidSpec(
            f"spec.subnet {_show(subnet)} is not a CIDR with host bits clear", field="spec.subnet"
        ) from None
    if net.num_addresses < 4:
        raise InvalidSpec(f"spec.subnet {net} is too small for guests", field="spec.subnet")
    if not 1 <= vni <= VNI_MAX:
        raise InvalidSpec(f"spec.vni {vni} is out of range 1..{VNI_MAX}", field="spec.vni")
    k = bridge_kind(kind or "linux", "spec.kind")
    if k is BridgeKind.AUTO:
        k = BridgeKind.LINUX
    tunnel = tunnel or "vxlan"
    if tunnel not in ("vxlan", "geneve", "gre"):
        raise InvalidSpec(f"spec.tunnel {_show(tunnel)} is not a tunnel type", field="spec.tunnel")

    def inside(value: str, field: str, default: IPAddress) -> IPAddress:
        if not value:
            return default
        ip = ip_address(value, field)
        if (
            ip not in net
            or ip == net.network_address
            or (net.version == 4 and ip == net.broadcast_address)
        ):
            raise InvalidSpec(f"{field} {ip} is not a host address of {net}", field=field)
        return ip

    first: IPAddress = net.network_address + 1
    gw = inside(gateway, "spec.gateway", first)
    return NetworkSpec(
        name=name,
        subnet=net,
        vni=vni,
        kind=k,
        tunnel=tunnel,
        gateway=gw,
        dns=inside(dns, "spec.dns_address", gw),
    )
