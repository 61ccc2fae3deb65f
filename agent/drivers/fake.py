"""An in-memory host for unit tests. Not for production use.

``FakeHost`` holds network namespaces (the host's, keyed ``HOST``, and guests
keyed by their namespace path), their links, addresses and netplumb's routes.
``apply`` executes ops from ``core.ops`` the way the kernel would, with the
netlink driver's error translation and idempotency (deleting what is absent
and adding an address that exists succeed). ``FakeNetlink`` wraps it in the
method names the engine calls on ``NetlinkDriver``, so the engine can run
against it; ``open_netns`` and ``netns_ident`` stand in for ``drivers.netns``.

Kernel behaviour modelled, because the planner's contracts depend on it
(checked against a real kernel in a throwaway namespace, except the bridge
VLAN rule, which follows the kernel source: br_add_if gives a new port the
default pvid, and leaving a bridge flushes the port's VLANs):
- ifindex: one counter for the whole host, never reused.
- veth: deleting either end deletes both, with the addresses and routes of
  each. Deleting a bridge releases its ports. A new bridge port gets the
  default VLAN (pvid 1), whatever VLANs it had on another bridge.
- setting a link up adds its IPv6 link-local address (EUI-64 of its MAC).
- a link going down loses its routes and its IPv6 addresses (the default
  ``keep_addr_on_down=0``); an MTU below 1280 disables IPv6 on the link (its
  IPv6 addresses and routes go; adding an address fails with EINVAL, a
  route with ENODEV).
- IPv4: deleting a subnet's primary address also deletes its secondaries
  (``promote_secondaries=0``, the default in a new namespace); deleting the
  last IPv4 address of a link flushes the link's IPv4 routes.
- routes (the driver's ``replace``): one route per (destination, metric) in
  a namespace, whatever its device; adding one needs the link up (ENETDOWN)
  and an on-link next hop (IPv4 ENETUNREACH, IPv6 EHOSTUNREACH).
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from ..core import naming
from ..core.model import (
    HostFeatures,
    IPAddress,
    IPInterface,
    IPNetwork,
    ObservedBridge,
    ObservedEndpoint,
    ObservedLink,
    ObservedRoute,
    RuleSpec,
)
from ..core.ops import (
    AddAddress,
    AddRoute,
    AddRule,
    Announce,
    CreateBridge,
    CreateVeth,
    DelAddress,
    DeleteLink,
    DelRoute,
    DelRule,
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
from ..errors import InternalError, NetplumbError, NotFound
from .netlink import translate
from .netns import NetnsHandle

HOST = "host"  # key of the host (root) namespace
IPV6_MIN_MTU = 1280


@dataclass
class Route:
    destination: IPNetwork
    via: IPAddress | None = None
    metric: int = 0
    proto: int = naming.RTPROT_NETPLUMB  # only netplumb's are observed


@dataclass
class Link:
    name: str
    index: int
    kind: str
    alias: str = ""
    mac: str = ""
    mtu: int = 1500
    up: bool = False
    master: str = ""
    peer: tuple[str, int] | None = None  # veth: (namespace, ifindex) of the other end
    addresses: list[IPInterface] = field(default_factory=list)  # kernel order
    routes: list[Route] = field(default_factory=list)
    vlans: tuple[int, ...] = ()  # bridge port: pvid
    vlan_filtering: bool = False  # bridge


class FakeHost:
    """Namespaces of links. Mutate through ``apply`` (what netplumb does) or
    through the helpers below (what someone else does to the host)."""

    def __init__(self) -> None:
        self.netns: dict[str, dict[str, Link]] = {HOST: {}}
        self._ident: dict[str, tuple[int, int]] = {HOST: (3, 1)}
        self._next = 1  # ifindex
        self._next_ns = 2  # namespace inode: a namespace made again is another one
        self.rules: dict[str, list[RuleSpec]] = {}  # policy routing rules by namespace

    # -- namespaces

    def add_netns(self, path: str) -> None:
        if path not in self.netns:
            self.netns[path] = {}
            self._ident[path] = (3, self._next_ns)
            self._next_ns += 1

    def delete_netns(self, path: str) -> None:
        """The namespace dies: its links go, and with them their veth peers."""
        for link in list(self.netns.get(path, {}).values()):
            self._delete(path, link)
        self.netns.pop(path, None)
        self._ident.pop(path, None)

    def open_netns(self, path: str, field: str = "guest") -> NetnsHandle:
        if path not in self.netns:
            raise NotFound(f"network namespace {path} does not exist", field=field)
        return NetnsHandle(fd=-1, path=path, ident=self._ident[path])

    def netns_ident(self, path: str) -> tuple[int, int] | None:
        return self._ident.get(path)

    # -- links, as someone else would make them

    def add_link(self, ns: str, name: str, kind: str, **attrs: object) -> Link:
        """A link made by someone else: ``attrs`` are set as given."""
        if name in self.netns[ns]:
            raise ValueError(f"{name} exists in {ns}")
        link = Link(name=name, index=self._next, kind=kind, mac=_mac(self._next))
        self._next += 1
        for key, value in attrs.items():
            setattr(link, key, value)
        self.netns[ns][name] = link
        return link

    def add_veth(self, ns: str, name: str, peer_ns: str, peer_name: str, alias: str = "") -> None:
        a = self.add_link(ns, name, "veth", alias=alias)
        b = self.add_link(peer_ns, peer_name, "veth", alias=alias)
        a.peer, b.peer = (peer_ns, b.index), (ns, a.index)

    def link(self, ns: str, name: str) -> Link | None:
        return self.netns.get(ns, {}).get(name)

    def rename(self, ns: str, name: str, new: str) -> None:
        """``ip link set NAME down; ip link set NAME name NEW`` (a link that
        is up cannot be renamed)."""
        self.set_down(ns, name)
        link = self.netns[ns].pop(name)
        link.name = new
        self.netns[ns][new] = link
        for other in self._all_links():
            if other.master == name:
                other.master = new

    def set_down(self, ns: str, name: str) -> None:
        link = self.netns[ns][name]
        link.up = False
        link.routes.clear()
        link.addresses = [a for a in link.addresses if a.version == 4]

    def set_master(self, name: str, bridge: str) -> None:
        """Enslave (or, with bridge "", release) a host link."""
        link = self.netns[HOST][name]
        if link.master != bridge:
            link.master = bridge
            link.vlans = (1,) if bridge else ()

    def set_mtu(self, ns: str, name: str, mtu: int) -> None:
        link = self.netns[ns][name]
        old, link.mtu = link.mtu, mtu
        if mtu < IPV6_MIN_MTU:
            link.addresses = [a for a in link.addresses if a.version == 4]
            link.routes = [r for r in link.routes if r.destination.version == 4]
        elif old < IPV6_MIN_MTU and link.up:
            self._add_link_local(link)

    def add_route(self, ns: str, name: str, route: Route) -> None:
        """A route with no reachability check (as with ``onlink``)."""
        self._replace_route(ns, self.netns[ns][name], route)

    def delete_address(self, ns: str, name: str, address: IPInterface) -> None:
        self._del_address(self.netns[ns][name], address)

    # -- observation (what NetlinkDriver reports)

    def observe_bridge(self, name: str) -> ObservedBridge:
        link = self.link(HOST, name)
        if link is None:
            return ObservedBridge(name=name, exists=False)
        return ObservedBridge(
            name=name,
            exists=True,
            is_bridge=link.kind == "bridge",
            alias=link.alias,
            mtu=link.mtu,
            up=link.up,
            addresses=tuple(link.addresses),
            vlan_filtering=link.vlan_filtering,
        )

    def observe_endpoint(
        self, host_ifname: str, ifname: str, guest: str | None
    ) -> ObservedEndpoint:
        host = self.link(HOST, host_ifname)
        g = self.link(guest, ifname) if guest is not None else None
        return ObservedEndpoint(
            host=_observed(host, detail=False) if host else None,
            guest=_observed(g, detail=True) if g else None,
        )

    def tagged_host_links(self) -> list[tuple[str, str, str]]:
        return [
            (link.name, link.kind, link.alias)
            for link in self.netns[HOST].values()
            if naming.is_ours(link.alias)
        ]

    # -- ops

    def apply(self, ops: Sequence[Op], guest: str | None) -> list[Op]:
        """Execute ``ops`` in order, like ``NetlinkDriver.apply``: on a failure
        the NetplumbError raised has ``completed``, the ops done before it."""
        done: list[Op] = []
        for op in ops:
            try:
                self.apply_one(op, guest)
            except NetplumbError as e:
                e.completed = done  # type: ignore[attr-defined]
                raise
            done.append(op)
        return done

    def apply_one(self, op: Op, guest: str | None) -> None:
        try:
            self._apply_one(op, guest)
        except NetlinkError as e:
            raise translate(op, e) from e

    def _apply_one(self, op: Op, guest: str | None) -> None:
        if isinstance(op, CreateBridge):
            if op.name in self.netns[HOST]:
                raise NetlinkError(errno.EEXIST, "File exists")
            self.add_link(HOST, op.name, "bridge", alias=op.alias, mtu=op.mtu or 1500)
        elif isinstance(op, CreateVeth):
            gns = self._guest(guest)
            bridge = self.link(HOST, op.bridge) if op.bridge else None
            if op.bridge and bridge is None:
                raise NotFound(f"interface {op.bridge} does not exist (host)")
            if op.host_ifname in self.netns[HOST] or op.guest_ifname in self.netns[gns]:
                raise NetlinkError(errno.EEXIST, "File exists")
            if not 68 <= op.mtu <= 65535:
                raise NetlinkError(errno.EINVAL, "Invalid argument")
            self.add_veth(HOST, op.host_ifname, gns, op.guest_ifname, alias=op.alias)
            for ns, name in ((HOST, op.host_ifname), (gns, op.guest_ifname)):
                self.netns[ns][name].mtu = op.mtu
            self.netns[gns][op.guest_ifname].mac = op.mac
            if op.bridge:
                # created as a port of the bridge, and up, in one message
                self.set_master(op.host_ifname, op.bridge)
                self.netns[HOST][op.host_ifname].up = True
        elif isinstance(op, DeleteLink):
            ns = self._where(op.where, guest)
            link = self.link(ns, op.name)
            if link is not None:
                self._delete(ns, link)
        elif isinstance(op, SetMaster):
            bridge = self.link(HOST, op.bridge)
            if bridge is None:
                raise NotFound(f"bridge {op.bridge} does not exist", field="spec.bridge")
            if bridge.kind != "bridge":
                raise NetlinkError(errno.EOPNOTSUPP, "Operation not supported")
            self._need(HOST, op.name)
            self.set_master(op.name, op.bridge)
        elif isinstance(op, SetBridgeVlanFiltering):
            self._need(HOST, op.name).vlan_filtering = True
        elif isinstance(op, SetPortVlan):
            link = self._need(HOST, op.name)
            if not link.master:
                raise NetlinkError(errno.EINVAL, "Invalid argument")
            link.vlans = (op.vlan,)
        elif isinstance(op, SetMtu):
            ns = self._where(op.where, guest)
            self._need(ns, op.name)
            if not 68 <= op.mtu <= 65535:
                raise NetlinkError(errno.EINVAL, "Invalid argument")
            self.set_mtu(ns, op.name, op.mtu)
        elif isinstance(op, SetMac):
            link = self._need(self._where(op.where, guest), op.name)
            if int(op.mac[:2], 16) & 1:
                raise NetlinkError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
            link.mac = op.mac
        elif isinstance(op, SetUp):
            link = self._need(self._where(op.where, guest), op.name)
            link.up = True
            if link.kind != "bridge" and link.mtu >= IPV6_MIN_MTU:
                self._add_link_local(link)
        elif isinstance(op, AddAddress):
            link = self._need_index(self._where(op.where, guest), op.name)
            self._add_address(link, op.address)
        elif isinstance(op, DelAddress):
            link = self._need_index(self._where(op.where, guest), op.name)
            self._del_address(link, op.address)
        elif isinstance(op, AddRoute):
            gns = self._guest(guest)
            link = self._need_index(gns, op.name)
            r = op.route
            if not link.up:
                raise NetlinkError(errno.ENETDOWN, "Network is down")
            if r.family == 6 and link.mtu < IPV6_MIN_MTU:
                raise NetlinkError(errno.ENODEV, "No such device")  # IPv6 is off on the link
            if r.via is not None and not _on_link(link, r.via):
                code = errno.ENETUNREACH if r.via.version == 4 else errno.EHOSTUNREACH
                raise NetlinkError(code, "unreachable next hop")
            self._replace_route(gns, link, Route(r.destination, r.via, r.metric))
        elif isinstance(op, DelRoute):
            link = self._need_index(self._guest(guest), op.name)
            r = op.route
            link.routes = [
                x
                for x in link.routes
                if not (x.destination == r.destination and x.via == r.via and x.metric == r.metric)
            ]
        elif isinstance(op, Announce):
            self._need_index(self._guest(guest), op.name)
        elif isinstance(op, EnableIpv6):
            self._need(self._guest(guest), op.name)
        elif isinstance(op, AddRule):
            rules = self.rules.setdefault(self._guest(guest), [])
            if op.rule not in rules:
                rules.append(op.rule)
        elif isinstance(op, DelRule):
            rules = self.rules.setdefault(self._guest(guest), [])
            if op.rule in rules:
                rules.remove(op.rule)
        else:  # pragma: no cover - exhaustive
            raise InternalError(f"fake host cannot apply {op!r}")

    # -- internals

    def _all_links(self) -> Iterable[Link]:
        for links in self.netns.values():
            yield from links.values()

    def _guest(self, guest: str | None) -> str:
        if guest is None:
            raise InternalError("operation needs a guest namespace and none is open")
        if guest not in self.netns:
            raise NetlinkError(errno.EINVAL, "namespace is gone")
        return guest

    def _where(self, where: Where, guest: str | None) -> str:
        return HOST if where is Where.HOST else self._guest(guest)

    def _need(self, ns: str, name: str) -> Link:
        link = self.link(ns, name)
        if link is None:
            raise NetlinkError(errno.ENODEV, "No such device")
        return link

    def _need_index(self, ns: str, name: str) -> Link:
        link = self.link(ns, name)
        if link is None:  # the driver's _index(): a NotFound, not a netlink error
            raise NotFound(f"interface {name} does not exist")
        return link

    def _delete(self, ns: str, link: Link) -> None:
        self.netns[ns].pop(link.name, None)
        if link.kind == "bridge":
            for port in self.netns[ns].values():
                if port.master == link.name:
                    port.master, port.vlans = "", ()
        if link.peer is not None:
            peer_ns, peer_index = link.peer
            for other in list(self.netns.get(peer_ns, {}).values()):
                if other.index == peer_index:
                    other.peer = None
                    self._delete(peer_ns, other)

    def _add_link_local(self, link: Link) -> None:
        ll = _link_local(link.mac)
        if not any(a.ip == ll.ip for a in link.addresses):
            link.addresses.append(ll)

    def _add_address(self, link: Link, address: IPInterface) -> None:
        # The kernel keeps no scope id: this is what a dump reports back.
        a = ipaddress.ip_interface(f"{address.ip}/{address.network.prefixlen}")
        if a.version == 6 and link.mtu < IPV6_MIN_MTU:
            raise NetlinkError(errno.EINVAL, "Invalid argument")
        for have in link.addresses:
            same_prefix = have.network.prefixlen == a.network.prefixlen
            if have.ip == a.ip and (a.version == 6 or same_prefix):
                return  # EEXIST, which the driver treats as done
        link.addresses.append(a)

    def _del_address(self, link: Link, address: IPInterface) -> None:
        if address not in link.addresses:
            return  # EADDRNOTAVAIL: the driver treats it as done
        subnet = [a for a in link.addresses if a.version == 4 and a.network == address.network]
        gone: set[IPInterface] = {address}
        if address.version == 4 and subnet[0] == address:
            gone.update(subnet)  # a primary takes its secondaries with it
        link.addresses = [a for a in link.addresses if a not in gone]
        if address.version == 4 and not any(a.version == 4 for a in link.addresses):
            link.routes = [r for r in link.routes if r.destination.version != 4]

    def _replace_route(self, ns: str, link: Link, route: Route) -> None:
        for other in self.netns[ns].values():
            other.routes = [
                r
                for r in other.routes
                if not (r.destination == route.destination and r.metric == route.metric)
            ]
        link.routes.append(route)


class FakeNetlink:
    """``NetlinkDriver``'s interface over a ``FakeHost``; guest namespaces are
    found by the handle's path. ``fail_at`` names an op type at which
    ``apply`` fails (like NETPLUMB_FAULT_INJECT); ``applied`` records every
    op executed, with the guest path."""

    def __init__(
        self, host: FakeHost, features: HostFeatures | None = None, fail_at: str = ""
    ) -> None:
        self.host = host
        self._features = features or HostFeatures(bridge_vlan_filtering=True)
        self.fail_at = fail_at
        self.applied: list[tuple[Op, str | None]] = []

    def close(self) -> None:
        pass

    def features(self) -> HostFeatures:
        return self._features

    def observe_bridge(self, name: str, addresses: bool = True) -> ObservedBridge:
        return self.host.observe_bridge(name)

    def link_mtu(self, name: str) -> int | None:
        link = self.host.link(HOST, name)
        return None if link is None else link.mtu

    def observe_endpoint(
        self, host_ifname: str, ifname: str, guest: NetnsHandle | None, bridge: str = ""
    ) -> ObservedEndpoint:
        return self.host.observe_endpoint(host_ifname, ifname, _path(guest))

    @contextmanager
    def scope(self, guest: NetnsHandle | None) -> Iterator[None]:
        """The real driver shares connections within a scope; nothing to share here."""
        yield

    def tagged_host_links(self) -> list[tuple[str, str, str]]:
        return self.host.tagged_host_links()

    @contextmanager
    def host_snapshot(self) -> Iterator[None]:
        yield  # the fake host is read directly

    def touched(self, ops: Iterable[Op]) -> None:
        pass

    def apply(self, ops: Sequence[Op], guest: NetnsHandle | None) -> list[Op]:
        done: list[Op] = []
        for op in ops:
            try:
                if self.fail_at and type(op).__name__ == self.fail_at:
                    raise InternalError(f"fault injected before '{op}'")
                self.host.apply_one(op, _path(guest))
            except NetplumbError as e:
                e.completed = done  # type: ignore[attr-defined]
                raise
            self.applied.append((op, _path(guest)))
            done.append(op)
        return done

    def apply_quietly(self, ops: Iterable[Op], guest: NetnsHandle | None) -> list[tuple[Op, str]]:
        failures: list[tuple[Op, str]] = []
        for op in ops:
            try:
                self.host.apply_one(op, _path(guest))
                self.applied.append((op, _path(guest)))
            except NotFound:
                pass
            except NetplumbError as e:
                failures.append((op, str(e)))
        return failures


def _path(handle: NetnsHandle | None) -> str | None:
    return handle.path if handle is not None else None


def _observed(link: Link, detail: bool) -> ObservedLink:
    return ObservedLink(
        name=link.name,
        index=link.index,
        kind=link.kind,
        alias=link.alias,
        mac=link.mac,
        mtu=link.mtu,
        up=link.up,
        master=link.master,
        peer_index=link.peer[1] if link.peer else 0,
        addresses=tuple(link.addresses) if detail else (),
        routes=tuple(
            ObservedRoute(r.destination, r.via, r.metric)
            for r in link.routes
            if r.proto == naming.RTPROT_NETPLUMB
        )
        if detail
        else (),
        vlans=link.vlans,
    )


def _on_link(link: Link, via: IPAddress) -> bool:
    if via.version == 6 and via.is_link_local:
        return True
    if any(a.version == via.version and via in a.network for a in link.addresses):
        return True
    return any(r.via is None and via in r.destination for r in link.routes)


def _mac(index: int) -> str:
    return "0a:00:00:" + ":".join(f"{b:02x}" for b in index.to_bytes(3, "big"))


def _link_local(mac: str) -> ipaddress.IPv6Interface:
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    ip = ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)
    return ipaddress.IPv6Interface(f"{ip}/64")
