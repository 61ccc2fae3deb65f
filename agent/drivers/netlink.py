"""The netlink driver: observes links, addresses and routes, and executes
ops, on the plain rtnetlink sockets of rtnl.py (and pyroute2's IPRoute for
FDB and neighbour writes, bridge-port, VLAN-filter and rule requests). It
makes no decisions; it translates netlink errors into netplumb errors and
nothing else escapes it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..core import naming
from ..core.model import (
    HostFeatures,
    IPInterface,
    ObservedBridge,
    ObservedEndpoint,
    ObservedLink,
    ObservedRoute,
    ObservedVxlan,
)
from ..core.ops import (
    AddAddress,
    AddFdbMac,
    AddFlood,
    AddNeigh,
    AddRoute,
    AddRule,
    Announce,
    CreateBridge,
    CreateDummy,
    CreateMacvlan,
    CreateVeth,
    CreateVlanLink,
    CreateVxlan,
    DelAddress,
    DeleteLink,
    DelFdbMac,
    DelFlood,
    DelNeigh,
    DelRoute,
    DelRule,
    EnableIpv6,
    MoveToGuest,
    MoveToHost,
    Op,
    RestoreHostLink,
    SetBridgeVlanFiltering,
    SetMac,
    SetMaster,
    SetMtu,
    SetNeighSuppress,
    SetPortVlan,
    SetTxChecksum,
    SetUp,
    Where,
)
from ..errors import (
    Conflict,
    InternalError,
    InvalidSpec,
    KernelFeatureMissing,
    NetplumbError,
    NotFound,
)
from .netns import NETLINK_ROUTE, NetnsHandle, socket_in, throwaway_socket, write_sysctl_in
from .rtnl import LinkFacts, Rtnl

log = logging.getLogger("netplumb.netlink")
T = TypeVar("T")

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254
IPV6_DEFAULT_METRIC = 1024
ETH_P_ARP = 0x0806
ZERO_MAC = "00:00:00:00:00:00"
SIOCETHTOOL = 0x8946
SIOCGIFINDEX = 0x8933
SIOCGIFMTU = 0x8921
IFNAMSIZ = 16
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
AF_BRIDGE = 7
RTEXT_FILTER_BRVLAN = 2
BRIDGE_VLAN_INFO_PVID = 0x2
FIB_RULE_INVERT = 0x2
NUD_NOARP = 0x40
NTF_SELF = 0x02
NTF_MASTER = 0x04
NUD_PERMANENT = 0x80


def _open(handle: NetnsHandle | None) -> IPRoute:
    sock = socket_in(handle, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    # groups=0: no multicast subscriptions. Otherwise every link, address and
    # route event on the host is queued to this socket and parsed by pyroute2.
    return IPRoute(fileno=sock.detach(), groups=0)


def _ifreq(conn: Rtnl, request: int, name: str) -> int | None:
    """An interface's index (SIOCGIFINDEX) or MTU (SIOCGIFMTU) by name, or
    None when the namespace has no such interface: one ioctl on the netlink
    socket, answered for that socket's namespace (what if_nametoindex does).
    A lookup by RTM_GETLINK returns and decodes the whole link (~1 ms in
    pyroute2); this costs microseconds and sits on the attach path."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or len(raw) >= IFNAMSIZ:
        return None
    req = struct.pack("16si20x", raw, 0)  # struct ifreq: name, then an int in the union
    try:
        out = fcntl.ioctl(conn.fileno(), request, req)
    except OSError as e:
        if e.errno == errno.ENODEV:
            return None
        raise
    return int(struct.unpack_from("16si", out)[1])


def _open_rtnl(handle: NetnsHandle | None) -> Rtnl:
    return Rtnl(socket_in(handle, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))


def _host_rtnl() -> Rtnl:
    return _per_thread("rtnl", lambda: _open_rtnl(None))


# One host-namespace netlink connection per thread, kept for the thread's
# life: opening one costs as much as several requests, and gRPC reuses its
# worker threads. A connection is dropped after an unexpected error.
_tls = threading.local()


def _host_ipr() -> IPRoute:
    return _per_thread("host", lambda: _open(None))


def _per_thread(attr: str, open_: Callable[[], T]) -> T:
    """This thread's connection kept under ``attr``, opened on first use."""
    conn: T | None = getattr(_tls, attr, None)
    if conn is None:
        conn = open_()
        setattr(_tls, attr, conn)
    return conn


def _drop_host_connections() -> None:
    rtnl = getattr(_tls, "rtnl", None)
    _tls.rtnl = None
    if rtnl is not None:
        rtnl.close()
    ipr = getattr(_tls, "host", None)
    _tls.host = None
    if ipr is not None:
        try:
            ipr.close()
        except Exception:
            pass


class HostSnapshot:
    """Every host-namespace link, from one dump, for a start-up reconcile:
    thousands of endpoints then cost one dump instead of several requests
    each. Names that an op touched since are "stale" and looked up live
    again; nothing else changes the host meanwhile (the daemon does not
    serve yet)."""

    def __init__(self, reader: Rtnl) -> None:
        self.links: dict[str, LinkFacts] = {}
        self.names: dict[int, str] = {}
        self.stale: set[str] = set()
        for facts in reader.links():
            self.links[facts.name] = facts
            self.names[facts.index] = facts.name

    def knows(self, name: str) -> bool:
        return name not in self.stale

    def touch(self, op: Op) -> None:
        """Every name an op mentions is looked up live from now on (more than
        needed is harmless; fewer would not be)."""
        for value in (getattr(op, f, None) for f in getattr(op, "__slots__", ())):
            if isinstance(value, str) and value:
                self.stale.add(value)


def _snapshot() -> HostSnapshot | None:
    return getattr(_tls, "snapshot", None)


class Session:
    """Netlink connections for one call: the thread's host connections and,
    opened on first use, the pinned guest namespace's. Reads and the common
    writes go through an Rtnl socket (``host``, ``guest``, ``at``); the
    rest (FDB, neighbours, bridge ports, rules) through an IPRoute
    (``ipr``), which a guest opens only if it needs one. Caches interface
    indexes for the duration of the call (ops that create or delete links
    update the cache)."""

    def __init__(self, guest: NetnsHandle | None = None) -> None:
        self.guest_ns = guest
        self._guest_ipr: IPRoute | None = None
        self._guest_rtnl: Rtnl | None = None
        self._index: dict[tuple[Where, str], int] = {}
        self.filtering: dict[str, bool] = {}  # bridge -> VLAN filtering, read this session

    @property
    def host(self) -> Rtnl:
        return _host_rtnl()

    @property
    def guest(self) -> Rtnl:
        return self.at(Where.GUEST)

    def at(self, where: Where) -> Rtnl:
        """The Rtnl socket of that namespace; a guest's is opened on first
        use."""
        if where is Where.HOST:
            return _host_rtnl()
        if self._guest_rtnl is None:
            self._guest_rtnl = _open_rtnl(self._guest_ns())
        return self._guest_rtnl

    def ipr(self, where: Where) -> IPRoute:
        if where is Where.HOST:
            return _host_ipr()
        if self._guest_ipr is None:
            self._guest_ipr = _open(self._guest_ns())
        return self._guest_ipr

    def _guest_ns(self) -> NetnsHandle:
        if self.guest_ns is None:
            raise InternalError("operation needs a guest namespace and none is open")
        return self.guest_ns

    def index(self, where: Where, name: str) -> int:
        key = (where, name)
        snap = _snapshot() if where is Where.HOST else None
        if key not in self._index and snap is not None and snap.knows(name):
            if name not in snap.links:
                raise NotFound(f"interface {name} does not exist ({where.value})")
            self._index[key] = snap.links[name].index
        if key not in self._index:
            found = _ifreq(self.at(where), SIOCGIFINDEX, name)
            if found is None:
                raise NotFound(f"interface {name} does not exist ({where.value})")
            self._index[key] = found
        return self._index[key]

    def remember(self, where: Where, name: str, index: int) -> None:
        self._index[(where, name)] = index

    def forget(self, where: Where, name: str) -> None:
        self._index.pop((where, name), None)

    def close(self) -> None:
        if self._guest_rtnl is not None:
            self._guest_rtnl.close()
            self._guest_rtnl = None
        if self._guest_ipr is not None:
            self._guest_ipr.close()
            self._guest_ipr = None


# ------------------------------------------------------------- observation


def _addresses(reader: Rtnl, index: int) -> tuple[IPInterface, ...]:
    return tuple(
        ipaddress.ip_interface(f"{a.address}/{a.prefixlen}")
        for a in reader.addresses(index)
        if a.index == index and a.address
    )


def _routes(reader: Rtnl, index: int) -> tuple[ObservedRoute, ...]:
    out: list[ObservedRoute] = []
    for r in reader.routes(RT_TABLE_MAIN, naming.RTPROT_NETPLUMB, index):
        if r.protocol != naming.RTPROT_NETPLUMB or r.oif != index or r.table != RT_TABLE_MAIN:
            continue
        dst = r.dst or ("0.0.0.0" if r.family == socket.AF_INET else "::")
        metric = r.priority
        if r.family == socket.AF_INET6 and metric == IPV6_DEFAULT_METRIC:
            metric = 0
        out.append(
            ObservedRoute(
                destination=ipaddress.ip_network(f"{dst}/{r.dst_len}"),
                via=ipaddress.ip_address(r.gateway) if r.gateway else None,
                metric=metric,
            )
        )
    return tuple(out)


def _port_vlans(ipr: IPRoute, index: int) -> tuple[int, ...]:
    """Access VLANs (PVID) of a bridge port; empty without VLAN filtering."""
    try:
        msgs = ipr.link("get", index=index, family=AF_BRIDGE, ext_mask=RTEXT_FILTER_BRVLAN)
    except NetlinkError:
        return ()
    vids: list[int] = []
    for msg in msgs:
        spec = msg.get_attr("IFLA_AF_SPEC")
        if spec is None:
            continue
        for name, info in spec.get("attrs", []):
            if name == "IFLA_BRIDGE_VLAN_INFO" and info.get("flags", 0) & BRIDGE_VLAN_INFO_PVID:
                vids.append(int(info["vid"]))
    return tuple(sorted(vids))


def _link_facts(s: Session, where: Where, name: str) -> LinkFacts | None:
    snap = _snapshot() if where is Where.HOST else None
    if snap is not None and snap.knows(name):
        return snap.links.get(name)
    return s.at(where).link(name=name)


def _observe_link(
    s: Session, where: Where, name: str, bridge: str, detail: bool
) -> ObservedLink | None:
    reader = s.at(where)
    link = _link_facts(s, where, name)
    if link is None:
        s.forget(where, name)
        return None
    s.remember(where, name, link.index)
    master = _master(s, where, link.master_index, bridge)
    return ObservedLink(
        name=name,
        index=link.index,
        kind=link.kind,
        alias=link.alias,
        mac=link.mac,
        mtu=link.mtu,
        up=link.up,
        master=master,
        peer_index=link.peer_index,
        addresses=_addresses(reader, link.index) if detail else (),
        routes=_routes(reader, link.index) if detail else (),
        vlans=_port_vlans(s.ipr(where), link.index)
        if master and where is Where.HOST and _filtering(s, master)
        else (),
    )


def _filtering(s: Session, bridge: str) -> bool:
    """Whether ``bridge`` has VLAN filtering on (then its ports' VLANs are
    read, a request of its own); from a start-up snapshot that still knows
    the bridge, else read once per session. (Assuming "on" when unsure cost
    every attach, and every endpoint of a restart after a repair had touched
    the bridge, a decoded AF_BRIDGE link request.)"""
    snap = _snapshot()
    facts = snap.links.get(bridge) if snap is not None and snap.knows(bridge) else None
    if facts is None:
        if bridge not in s.filtering:
            found = s.at(Where.HOST).link(name=bridge)
            s.filtering[bridge] = found is not None and found.vlan_filtering
        return s.filtering[bridge]
    return facts.vlan_filtering


def _master(s: Session, where: Where, index: int, expected: str = "") -> str:
    """Name of the master with ifindex ``index`` ("" for none); ``expected``
    names the bridge it should be a port of, which saves a lookup when it is."""
    if not index:
        return ""
    if expected and _safe_index(s, expected) == index:
        return expected
    snap = _snapshot() if where is Where.HOST else None
    if snap is not None and index in snap.names and snap.knows(snap.names[index]):
        return snap.names[index]
    found = s.at(where).link(index=index)
    return found.name if found is not None else ""


def _safe_index(s: Session, name: str) -> int:
    try:
        return s.index(Where.HOST, name)
    except NotFound:
        return -1


class NetlinkDriver:
    """Linux bridges, veth pairs, addresses and routes via netlink.

    Calls made inside ``scope(guest)`` on one thread share that scope's
    netlink connections and index cache; calls outside a scope open what they
    need and close it after. Callers serialise calls that touch the same
    endpoint or bridge.
    """

    def __init__(self, fault_inject: str = "") -> None:
        # Test hook: the name of an op type at which apply() fails, to prove
        # rollback. Set from NETPLUMB_FAULT_INJECT by the daemon.
        self._fault_inject = fault_inject
        self._announcer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="announce")
        self._features: HostFeatures | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._announcer.shutdown(wait=False, cancel_futures=True)

    # -- sessions

    @contextmanager
    def scope(self, guest: NetnsHandle | None) -> Iterator[None]:
        """Share one session (and its index cache) among the calls made
        inside, on this thread."""
        s = Session(guest)
        prev = getattr(_tls, "session", None)
        _tls.session = s
        try:
            yield
        finally:
            _tls.session = prev
            s.close()

    @contextmanager
    def host_snapshot(self) -> Iterator[None]:
        """Serve host-link lookups on this thread from one dump (see
        HostSnapshot): for the start-up reconcile, before anything else can
        change the host through this daemon."""
        with self._session(None) as s:
            snap = HostSnapshot(s.at(Where.HOST))
        _tls.snapshot = snap
        try:
            yield
        finally:
            _tls.snapshot = None

    def touched(self, ops: Iterable[Op]) -> None:
        """Ops that changed host links some other way (OVSDB): a snapshot in
        use looks their names up live from now on."""
        snap = _snapshot()
        if snap is not None:
            for op in ops:
                snap.touch(op)

    @contextmanager
    def _session(self, guest: NetnsHandle | None) -> Iterator[Session]:
        cur: Session | None = getattr(_tls, "session", None)
        if cur is not None and (guest is None or cur.guest_ns is guest):
            yield cur
            return
        s = Session(guest)
        try:
            yield s
        except (OSError, RuntimeError) as e:
            if not isinstance(e, NetlinkError):
                _drop_host_connections()
            raise
        finally:
            s.close()

    # -- features

    def features(self) -> HostFeatures:
        with self._lock:
            if self._features is None:
                self._features = probe_features()
            return self._features

    # -- observe

    def observe_bridge(self, name: str, addresses: bool = True) -> ObservedBridge:
        """The bridge link; ``addresses=False`` skips the address dump (the
        cheap form, for its MTU)."""
        with self._session(None) as s:
            reader = s.at(Where.HOST)
            link = reader.link(name=name)
            if link is None:
                s.forget(Where.HOST, name)
                return ObservedBridge(name=name, exists=False)
            s.remember(Where.HOST, name, link.index)
            return ObservedBridge(
                name=name,
                exists=True,
                is_bridge=link.kind == "bridge",
                alias=link.alias,
                mtu=link.mtu,
                up=link.up,
                addresses=_addresses(reader, link.index) if addresses else (),
                vlan_filtering=link.vlan_filtering,
                mac=link.mac,
            )

    def link_mtu(self, name: str) -> int | None:
        """A host interface's MTU, or None when it does not exist (one
        ioctl, no netlink round trip)."""
        with self._session(None) as s:
            return _ifreq(s.at(Where.HOST), SIOCGIFMTU, name)

    def observe_endpoint(
        self, host_ifname: str, ifname: str, guest: NetnsHandle | None, bridge: str = ""
    ) -> ObservedEndpoint:
        """The host end by name, and the guest's ``ifname`` (None when the
        guest namespace is not open, i.e. gone). ``bridge`` names the bridge
        the host end should be a port of, which saves a lookup."""
        try:
            with self._session(guest) as s:
                host = (
                    _observe_link(s, Where.HOST, host_ifname, bridge, False)
                    if host_ifname
                    else None
                )
                g = _observe_link(s, Where.GUEST, ifname, "", True) if guest is not None else None
                return ObservedEndpoint(host=host, guest=g)
        except NetlinkError as e:
            raise InternalError(f"netlink error while observing {host_ifname}: {e}") from e

    def observe_host_link(self, name: str, mac: str = "", alias: str = "") -> ObservedLink | None:
        """A host-namespace link by name; failing that, the link tagged
        ``alias``, or the one whose address is ``mac`` (a moved-in NIC that a
        dead namespace handed back under another name)."""
        try:
            with self._session(None) as s:
                found = _observe_link(s, Where.HOST, name, "", False) if name else None
                other = ""
                if found is None and alias:
                    # read to the end: the socket is reused
                    tagged = [link.name for link in s.host.links() if link.alias == alias]
                    other = tagged[0] if tagged else ""
                if found is None and not other and mac:
                    other = self.link_name_by_mac(mac)
                if found is None and other:
                    found = _observe_link(s, Where.HOST, other, "", False)
                return found
        except NetlinkError as e:
            raise InternalError(f"netlink error while observing {name}: {e}") from e

    def has_ipv4(self, guest: NetnsHandle, ifname: str) -> bool:
        """Whether the guest's ``ifname`` has an IPv4 address (a DHCP lease)."""
        try:
            with self._session(guest) as s:
                index = s.index(Where.GUEST, ifname)
                return any(
                    a.index == index and a.family == socket.AF_INET
                    for a in s.guest.addresses(index)
                )
        except (NetlinkError, NotFound):
            return False

    def link_name_by_mac(self, mac: str) -> str:
        """Name of the host-namespace link with that MAC ("" for none);
        pipework's ``mac:`` host interface."""
        mac = mac.lower()
        found = ""
        for link in _host_rtnl().links():  # read to the end: the socket is reused
            if not found and link.mac == mac:
                found = link.name
        return found

    def tagged_host_links(self) -> list[tuple[str, str, str]]:
        """(name, kind, alias) of every host-namespace link whose alias carries
        netplumb's tag: the candidates for garbage collection."""
        out = []
        snap = _snapshot()
        with self._session(None) as s:
            links = (
                snap.links.values()
                if snap is not None and not snap.stale
                else s.at(Where.HOST).links()
            )
            for link in links:
                if naming.is_ours(link.alias):
                    out.append((link.name, link.kind, link.alias))
        return out

    def observe_vxlan(self, name: str) -> ObservedVxlan | None:
        with self._session(None) as s:
            msg = s.at(Where.HOST).link_message(name)
            if msg is None or msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "vxlan":
                return None
            index = msg["index"]
            s.remember(Where.HOST, name, index)
            data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
            master = _master(s, Where.HOST, msg.get_attr("IFLA_MASTER") or 0)
            entries = s.host.fdb(index)
            flood = sorted(e.dst for e in entries if e.lladdr == ZERO_MAC and e.dst)
            macs = sorted(
                (e.lladdr, e.dst)
                for e in entries
                if e.lladdr not in ("", ZERO_MAC) and e.dst and e.state & NUD_PERMANENT
            )
            suppress = False
            if master:
                for m in s.ipr(Where.HOST).brport("show", index=index):
                    info = m.get_attr("IFLA_PROTINFO")
                    suppress = bool(info and info.get_attr("IFLA_BRPORT_NEIGH_SUPPRESS"))
            return ObservedVxlan(
                name=name,
                vni=int(data.get_attr("IFLA_VXLAN_ID") or 0) if data is not None else 0,
                local=str(
                    (data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6") or "")
                    if data is not None
                    else ""
                ),
                master=master,
                learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")) if data is not None else True,
                mtu=msg.get_attr("IFLA_MTU") or 0,
                alias=msg.get_attr("IFLA_IFALIAS") or "",
                flood_to=tuple(flood),
                macs=tuple(macs),
                neigh_suppress=suppress,
            )

    def bridge_neighbours(self, bridge: str) -> tuple[tuple[str, str], ...]:
        """The bridge's permanent neighbour entries, (ip, mac)."""
        with self._session(None) as s:
            try:
                index = s.index(Where.HOST, bridge)
            except NotFound:
                return ()
            return tuple(
                sorted(
                    (n.dst, n.lladdr)
                    for n in s.host.neighbours(index)
                    if n.state & NUD_PERMANENT and n.lladdr
                )
            )

    def tx_checksum(self, guest: NetnsHandle | None, name: str) -> bool | None:
        """tx checksum offload state of ``name`` (None: no such interface)."""
        try:
            return get_tx_checksum(guest, name)
        except OSError:
            return None

    def link_index(self, name: str) -> int:
        """The host link's ifindex, 0 when there is none."""
        with self._session(None) as s:
            return _ifreq(s.at(Where.HOST), SIOCGIFINDEX, name) or 0

    def underlay(self, local: str = "", towards: str = "") -> tuple[str, str, int] | None:
        """(local address, interface, MTU) of the underlay: the interface
        holding ``local``, else the route towards ``towards`` (its source
        address), else the default route's interface. None if none is found."""
        with self._session(None) as s:
            if local:
                fam = socket.AF_INET6 if ":" in local else socket.AF_INET
                for a in s.ipr(Where.HOST).addr("dump", family=fam):
                    ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
                    if ip == local:
                        msg = s.ipr(Where.HOST).link("get", index=a["index"])[0]
                        return local, msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MTU") or 1500
                return None
            target = towards or "198.18.0.0"
            try:
                routes = s.ipr(Where.HOST).route("get", dst=target)
            except NetlinkError:
                return None
            if not routes:
                return None
            r = routes[0]
            oif = r.get_attr("RTA_OIF")
            src = r.get_attr("RTA_PREFSRC") or ""
            if not oif:
                return None
            msg = s.ipr(Where.HOST).link("get", index=oif)[0]
            return src, msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MTU") or 1500

    # -- apply

    def apply(self, ops: Sequence[Op], guest: NetnsHandle | None) -> list[Op]:
        """Execute ``ops`` in order. Returns the ops that completed; on a
        failure raises a NetplumbError whose ``completed`` attribute lists
        the ops that completed before it (for the caller's rollback)."""
        done: list[Op] = []
        snap = _snapshot()
        with self._session(guest) as s:
            for op in ops:
                if snap is not None:
                    snap.touch(op)
                try:
                    if self._fault_inject and type(op).__name__ == self._fault_inject:
                        raise InternalError(f"fault injected before '{op}' (NETPLUMB_FAULT_INJECT)")
                    self._apply_one(s, op)
                except NetplumbError as e:
                    e.completed = done  # type: ignore[attr-defined]
                    raise
                except NetlinkError as e:
                    err = translate(op, e)
                    err.completed = done  # type: ignore[attr-defined]
                    raise err from e
                except OSError as e:
                    err2: NetplumbError = InternalError(f"{op}: {e}")
                    err2.completed = done  # type: ignore[attr-defined]
                    raise err2 from e
                done.append(op)
        return done

    def apply_quietly(self, ops: Iterable[Op], guest: NetnsHandle | None) -> list[tuple[Op, str]]:
        """Best-effort execution (for rollbacks): every op is tried; failures
        are returned, not raised."""
        failures: list[tuple[Op, str]] = []
        snap = _snapshot()
        try:
            with self._session(guest) as s:
                for op in ops:
                    if snap is not None:
                        snap.touch(op)
                    try:
                        self._apply_one(s, op)
                    except (NetlinkError, OSError, NetplumbError) as e:
                        if not _is_absent(e):
                            failures.append((op, str(e)))
        except OSError as e:
            failures.append((DeleteLink(Where.HOST, "?"), f"cannot open netlink: {e}"))
        return failures

    def _apply_one(self, s: Session, op: Op) -> None:
        if isinstance(op, CreateBridge):
            kw: dict[str, Any] = {"ifname": op.name, "kind": "bridge"}
            if op.mtu:
                kw["mtu"] = op.mtu
            s.host.write("link", "add", **kw)
            _tag_or_undo(s, Where.HOST, op.name, op.alias)
            s.forget(Where.HOST, op.name)
        elif isinstance(op, CreateVeth):
            assert s.guest_ns is not None
            kw = {}
            if op.bridge:
                # Enslaved and up in the same message: one request fewer each.
                kw = {"master": s.index(Where.HOST, op.bridge), "state": "up"}
            s.host.write(
                "link",
                "add",
                ifname=op.host_ifname,
                kind="veth",
                mtu=op.mtu,
                peer={
                    "ifname": op.guest_ifname,
                    "net_ns_fd": s.guest_ns.fd,
                    "address": op.mac,
                    "mtu": op.mtu,
                },
                **kw,
            )
            s.forget(Where.HOST, op.host_ifname)
            s.forget(Where.GUEST, op.guest_ifname)
            # The kernel ignores IFLA_IFALIAS when creating a link.
            _tag_or_undo(s, Where.HOST, op.host_ifname, op.alias)
            _tag_or_undo(s, Where.GUEST, op.guest_ifname, op.alias, Where.HOST, op.host_ifname)
        elif isinstance(op, CreateMacvlan):
            assert s.guest_ns is not None
            kw = {"address": op.mac} if op.mac else {}
            if op.mtu:
                kw["mtu"] = op.mtu
            s.host.write(
                "link",
                "add",
                ifname=op.guest_ifname,
                kind="macvlan",
                link=s.index(Where.HOST, op.parent),
                macvlan_mode="bridge",
                net_ns_fd=s.guest_ns.fd,
                **kw,
            )
            s.forget(Where.GUEST, op.guest_ifname)
            _tag_or_undo(s, Where.GUEST, op.guest_ifname, op.alias)
        elif isinstance(op, CreateDummy):
            kw = {"address": op.mac} if op.mac else {}
            s.guest.write("link", "add", ifname=op.guest_ifname, kind="dummy", **kw)
            s.forget(Where.GUEST, op.guest_ifname)
            _tag_or_undo(s, Where.GUEST, op.guest_ifname, op.alias)
        elif isinstance(op, CreateVlanLink):
            s.host.write(
                "link",
                "add",
                ifname=op.name,
                kind="vlan",
                link=s.index(Where.HOST, op.base),
                vlan_id=op.vid,
                state="up",
            )
            s.forget(Where.HOST, op.name)
            _tag_or_undo(s, Where.HOST, op.name, op.alias)
        elif isinstance(op, MoveToGuest):
            assert s.guest_ns is not None
            # Moved and renamed in one message: the kernel takes the new name
            # in the target namespace, so it never collides in the host's.
            s.host.write(
                "link",
                "set",
                index=s.index(Where.HOST, op.name),
                net_ns_fd=s.guest_ns.fd,
                ifname=op.guest_ifname,
            )
            s.forget(Where.HOST, op.name)
            s.forget(Where.GUEST, op.guest_ifname)
            try:
                s.guest.write("link", "set", ifname=op.guest_ifname, ifalias=op.alias)
            except (NetlinkError, OSError):
                # untagged, it would be lost to the host: give it back
                try:
                    self._apply_one(s, MoveToHost(op.guest_ifname, op.name, ""))
                except (NetlinkError, OSError, NetplumbError):
                    pass
                raise
        elif isinstance(op, MoveToHost):
            index = s.index(Where.GUEST, op.guest_ifname)
            s.guest.write("link", "set", index=index, state="down")
            kw = {"address": op.mac} if op.mac else {}
            if kw:
                s.guest.write("link", "set", index=index, **kw)
            s.guest.write("link", "set", index=index, ifalias="")
            s.guest.write("link", "set", index=index, net_ns_fd=_host_netns_fd(), ifname=op.name)
            s.forget(Where.GUEST, op.guest_ifname)
            s.forget(Where.HOST, op.name)
        elif isinstance(op, EnableIpv6):
            path = f"/proc/sys/net/ipv6/conf/{op.name}/disable_ipv6"
            try:
                write_sysctl_in(s.guest_ns, path, "0")
            except FileNotFoundError:
                pass  # the kernel has no IPv6 at all: adding the address will say so
        elif isinstance(op, RestoreHostLink):
            index = s.index(Where.HOST, op.name)
            s.host.write("link", "set", index=index, state="down")
            s.host.write("link", "set", index=index, ifalias="")
            if op.mac:
                s.host.write("link", "set", index=index, address=op.mac)
            if op.original != op.name:
                s.host.write("link", "set", index=index, ifname=op.original)
            s.forget(Where.HOST, op.name)
        elif isinstance(op, AddRule | DelRule):
            self._rule(s, op)
        elif isinstance(op, DeleteLink):
            try:
                s.at(op.where).write("link", "del", ifname=op.name)
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise
            s.forget(op.where, op.name)
        elif isinstance(op, SetMaster):
            try:
                bridge = s.index(Where.HOST, op.bridge)
            except NotFound:
                raise NotFound(f"bridge {op.bridge} does not exist", field="spec.bridge") from None
            s.host.write("link", "set", index=s.index(Where.HOST, op.name), master=bridge)
        elif isinstance(op, SetBridgeVlanFiltering):
            s.host.write("link", "set", ifname=op.name, kind="bridge", br_vlan_filtering=1)
            s.filtering[op.name] = True
        elif isinstance(op, SetPortVlan):
            index = s.index(Where.HOST, op.name)
            s.ipr(Where.HOST).vlan_filter("del", index=index, vlan_info={"vid": 1})
            s.ipr(Where.HOST).vlan_filter(
                "add", index=index, vlan_info={"vid": op.vlan, "flags": ["pvid", "untagged"]}
            )
        elif isinstance(op, SetMtu):
            s.at(op.where).write("link", "set", index=s.index(op.where, op.name), mtu=op.mtu)
        elif isinstance(op, SetMac):
            s.at(op.where).write("link", "set", index=s.index(op.where, op.name), address=op.mac)
        elif isinstance(op, SetUp):
            s.at(op.where).write("link", "set", index=s.index(op.where, op.name), state="up")
        elif isinstance(op, AddAddress | DelAddress):
            rt = s.at(op.where)
            a = op.address
            kw = {
                "index": s.index(op.where, op.name),
                "address": str(a.ip),
                "prefixlen": a.network.prefixlen,
            }
            if a.version == 4 and a.network.prefixlen < 31:
                kw["broadcast"] = str(a.network.broadcast_address)
            if isinstance(op, AddAddress):
                # No duplicate address detection: the address is usable at once.
                kw["flags"] = IFA_F_NODAD
                try:
                    rt.write("addr", "add", **kw)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise
            else:
                try:
                    rt.write("addr", "del", **kw)
                except NetlinkError as e:
                    if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                        raise
        elif isinstance(op, AddRoute | DelRoute):
            r = op.route
            kw = {
                "dst": str(r.destination.network_address),
                "dst_len": r.destination.prefixlen,
                "oif": s.index(Where.GUEST, op.name),
                "proto": naming.RTPROT_NETPLUMB,
                "table": RT_TABLE_MAIN,
                "family": socket.AF_INET if r.family == 4 else socket.AF_INET6,
            }
            if r.via is not None:
                kw["gateway"] = str(r.via)
            if r.metric:
                kw["priority"] = r.metric
            if r.via is None:
                # On-link; a delete must say so too, or the kernel looks for a
                # universe-scope route, finds none (ESRCH) and keeps this one.
                kw["scope"] = RT_SCOPE_LINK
            if isinstance(op, AddRoute):
                s.guest.write("route", "replace", **kw)
            else:
                try:
                    s.guest.write("route", "del", **kw)
                except NetlinkError as e:
                    if e.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                        raise
        elif isinstance(op, CreateVxlan):
            local_key = "vxlan_local6" if ":" in op.local else "vxlan_local"
            s.host.write(
                "link",
                "add",
                ifname=op.name,
                kind="vxlan",
                vxlan_id=op.vni,
                **{local_key: op.local},
                vxlan_port=op.port,
                vxlan_learning=0,
                master=s.index(Where.HOST, op.bridge),
                mtu=op.mtu,
                state="up",
            )
            s.forget(Where.HOST, op.name)
            _tag_or_undo(s, Where.HOST, op.name, op.alias)
        elif isinstance(op, AddFlood | DelFlood):
            kw = {"ifindex": s.index(Where.HOST, op.name), "lladdr": ZERO_MAC, "dst": op.dst}
            if isinstance(op, AddFlood):
                try:
                    s.ipr(Where.HOST).fdb("append", **kw)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise
            else:
                try:
                    s.ipr(Where.HOST).fdb("del", **kw)
                except NetlinkError as e:
                    if e.code not in (errno.ENOENT, errno.ENODEV):
                        raise
        elif isinstance(op, AddFdbMac | DelFdbMac):
            # Both tables: the bridge's (the MAC is behind the VXLAN port, so
            # the bridge does not flood for it) and the VXLAN device's own
            # (which host it is on).
            # A "permanent" bridge entry would mean a local address (frames
            # for it go up to the host): the bridge's is "static".
            vx = s.index(Where.HOST, op.name)
            own: dict[str, Any] = {
                "ifindex": vx,
                "lladdr": op.mac,
                "dst": op.dst,
                "flags": NTF_SELF,
            }
            master: dict[str, Any] = {"ifindex": vx, "lladdr": op.mac, "flags": NTF_MASTER}
            if isinstance(op, AddFdbMac):
                s.ipr(Where.HOST).fdb("replace", state=NUD_PERMANENT | NUD_NOARP, **own)
                s.ipr(Where.HOST).fdb("replace", state=NUD_NOARP, **master)
            else:
                for entry in (own, master):
                    try:
                        s.ipr(Where.HOST).fdb("del", **entry)
                    except NetlinkError as e:
                        if e.code not in (errno.ENOENT, errno.ENODEV):
                            raise
        elif isinstance(op, AddNeigh | DelNeigh):
            family = socket.AF_INET6 if ":" in op.ip else socket.AF_INET
            kw = {"ifindex": s.index(Where.HOST, op.bridge), "dst": op.ip, "family": family}
            if isinstance(op, AddNeigh):
                s.ipr(Where.HOST).neigh("replace", lladdr=op.mac, state=NUD_PERMANENT, **kw)
            else:
                try:
                    s.ipr(Where.HOST).neigh("del", **kw)
                except NetlinkError as e:
                    if e.code not in (errno.ENOENT, errno.ENODEV):
                        raise
        elif isinstance(op, SetNeighSuppress):
            s.ipr(Where.HOST).brport("set", index=s.index(Where.HOST, op.name), neigh_suppress=1)
        elif isinstance(op, SetTxChecksum):
            set_tx_checksum(s.guest_ns if op.where is Where.GUEST else None, op.name, op.on)
        elif isinstance(op, Announce):
            self._announce(s, op)
        else:  # pragma: no cover - exhaustive
            raise InternalError(f"netlink driver cannot apply {op!r}")

    def _rule(self, s: Session, op: AddRule | DelRule) -> None:
        r = op.rule
        kw: dict[str, Any] = {
            "family": socket.AF_INET if r.family == 4 else socket.AF_INET6,
            "table": r.table,
        }
        if r.priority:
            kw["priority"] = r.priority
        for key, net in (("src", r.src), ("dst", r.dst)):
            if net is not None:
                kw[key] = str(net.network_address)
                kw[f"{key}_len"] = net.prefixlen
        if r.fwmark:
            kw["fwmark"] = r.fwmark
            if r.fwmask:
                kw["fwmask"] = r.fwmask
        if r.iif:
            kw["iifname"] = r.iif
        if r.oif:
            kw["oifname"] = r.oif
        if r.invert:
            kw["flags"] = FIB_RULE_INVERT
        try:
            s.ipr(Where.GUEST).rule("add" if isinstance(op, AddRule) else "del", **kw)
        except NetlinkError as e:
            if isinstance(op, AddRule) and e.code == errno.EEXIST:
                return
            if isinstance(op, DelRule) and e.code in (errno.ENOENT, errno.ESRCH):
                return
            raise

    def _announce(self, s: Session, op: Announce) -> None:
        """Open the sockets now, inside the guest namespace; send from a
        background thread so the call never waits for it."""
        index = s.index(Where.GUEST, op.name)
        socks: list[tuple[socket.socket, bytes, Any]] = []
        mac = bytes.fromhex(op.mac.replace(":", ""))
        for a in op.addresses:
            try:
                if a.version == 4:
                    sk = socket_in(s.guest_ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
                    socks.append((sk, _garp(mac, a.ip.packed), (op.name, ETH_P_ARP)))
                else:
                    sk = socket_in(
                        s.guest_ns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6
                    )
                    sk.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                    sk.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                    sk.bind((str(a.ip), 0, 0, index))
                    socks.append((sk, _unsolicited_na(mac, a.ip.packed), ("ff02::1", 0, 0, index)))
            except OSError as e:
                log.warning("cannot announce %s on %s: %s", a.ip, op.name, e)
        if socks:
            self._announcer.submit(_send_announcements, socks)


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


class _IfReq(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 16),
        ("data", ctypes.c_void_p),
        ("pad", ctypes.c_char * 16),
    ]


def _ethtool(ns: NetnsHandle | None, name: str, cmd: int, data: int = 0) -> int:
    """One legacy ethtool ioctl (struct ethtool_value) on ``name`` inside
    ``ns``: what `ethtool -K IF tx off` does, without the binary."""
    value = _EthtoolValue(cmd, data)
    req = _IfReq(name.encode(), ctypes.addressof(value))
    sock = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM, 0)
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)
    finally:
        sock.close()
    return int(value.data)


def get_tx_checksum(ns: NetnsHandle | None, name: str) -> bool:
    return bool(_ethtool(ns, name, ETHTOOL_GTXCSUM))


def set_tx_checksum(ns: NetnsHandle | None, name: str, on: bool) -> None:
    _ethtool(ns, name, ETHTOOL_STXCSUM, 1 if on else 0)


def _send_announcements(socks: list[tuple[socket.socket, bytes, Any]]) -> None:
    import time

    try:
        for attempt in range(3):
            for sk, frame, dest in socks:
                try:
                    sk.sendto(frame, dest)
                except OSError as e:
                    log.debug("announcement failed: %s", e)
            if attempt < 2:
                time.sleep(0.05)
    finally:
        for sk, _, _ in socks:
            sk.close()


def _garp(mac: bytes, ip: bytes) -> bytes:
    """A gratuitous ARP request (sender = target = our address), broadcast."""
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return eth + arp


def _unsolicited_na(mac: bytes, ip6: bytes) -> bytes:
    """ICMPv6 neighbour advertisement with the override flag and the target
    link-layer address option; the kernel fills in the checksum."""
    return struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ip6 + struct.pack("!BB", 2, 1) + mac


def _tag_or_undo(
    s: Session, where: Where, name: str, alias: str, also: Where | None = None, also_name: str = ""
) -> None:
    """Put netplumb's ownership tag on a link just created. If that fails, the
    link is deleted again before the error goes up: an untagged leftover
    would never be collected (the kernel ignores IFLA_IFALIAS at creation,
    so creating and tagging are two requests)."""
    try:
        s.at(where).write("link", "set", ifname=name, ifalias=alias)
    except (NetlinkError, OSError):
        for w, n in ((where, name), (also, also_name)):
            if w is not None and n:
                try:
                    s.at(w).write("link", "del", ifname=n)
                except (NetlinkError, OSError):
                    pass
                s.forget(w, n)
        raise


_host_ns_fd: int | None = None


def _host_netns_fd() -> int:
    """An fd of the agent's own (host) network namespace, opened once."""
    global _host_ns_fd
    if _host_ns_fd is None:
        import os

        _host_ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return _host_ns_fd


def _is_absent(e: BaseException) -> bool:
    if isinstance(e, NetlinkError):
        return e.code in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)
    return isinstance(e, NotFound)


def translate(op: Op, e: NetlinkError) -> NetplumbError:
    """Netlink errno -> netplumb error, with the op for context."""
    code = e.code
    text = f"{op}: {errno.errorcode.get(code, code)} ({e.args[1] if len(e.args) > 1 else e})"
    if code == errno.EEXIST:
        if isinstance(op, AddRoute):
            return Conflict(f"{op}: a route to {op.route.destination} already exists in the guest")
        return Conflict(f"{op}: an object of that name already exists", hint="choose another name")
    if code in (errno.ENETUNREACH, errno.EHOSTUNREACH) and isinstance(op, AddRoute):
        return InvalidSpec(
            f"{op}: next hop {op.route.via} is not reachable through {op.name}",
            field="spec.routes",
            hint="give the interface an address in the next hop's subnet",
        )
    if code == errno.EOPNOTSUPP and isinstance(op, CreateVlanLink | CreateDummy | CreateMacvlan):
        feature = {CreateVlanLink: "8021q", CreateDummy: "dummy", CreateMacvlan: "macvlan"}[
            type(op)
        ]
        return KernelFeatureMissing(feature, f"{op}: the kernel lacks {feature} interfaces")
    if code in (errno.EINVAL, errno.ERANGE) and isinstance(
        op, CreateMacvlan | CreateVlanLink | MoveToGuest | CreateDummy
    ):
        return InvalidSpec(
            f"{op}: the kernel refused it ({errno.errorcode.get(code, code)}): the host "
            "interface cannot carry it (not Ethernet, an MTU above its own, a name over 15 "
            "bytes, or a device that cannot change namespace)",
            field="spec.parent",
            hint="check the host interface and --mtu",
        )
    if code == errno.EBUSY and isinstance(op, CreateMacvlan | MoveToGuest):
        return Conflict(
            f"{op}: the host interface is busy (a bridge port, or enslaved)",
            field="spec.parent",
            hint="use an interface that is not a bridge or bond port",
        )
    if code == errno.EOPNOTSUPP:
        if isinstance(op, SetPortVlan | SetBridgeVlanFiltering):
            return KernelFeatureMissing(
                "bridge-vlan-filtering", f"{op}: the kernel lacks bridge VLAN filtering"
            )
        return KernelFeatureMissing("unknown", f"{op}: not supported by this kernel")
    if code in (errno.EINVAL, errno.ERANGE) and isinstance(op, SetMtu | CreateVeth | CreateBridge):
        return InvalidSpec(f"{op}: the kernel refused the MTU", field="spec.mtu")
    if code == errno.EADDRNOTAVAIL:
        return InvalidSpec(f"{text}", hint="check the addresses and gateways")
    if code in (errno.ENODEV, errno.ENOENT):
        return NotFound(text)
    return InternalError(text)


# ----------------------------------------------------------------- probing


def probe_features() -> HostFeatures:
    """Probe kernel features in a throwaway namespace: nothing on the host
    is created or changed."""
    try:
        sock = throwaway_socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    except OSError as e:
        log.warning("cannot probe kernel features: %s", e)
        return HostFeatures()
    ipr = IPRoute(fileno=sock.detach())
    results: dict[str, bool] = {}
    try:

        def attempt(name: str, **kw: Any) -> bool:
            try:
                ipr.link("add", ifname=name, **kw)
                return True
            except NetlinkError:
                return False

        results["bridge"] = attempt("probebr", kind="bridge")
        results["veth"] = attempt("probev0", kind="veth", peer={"ifname": "probev1"})
        results["vxlan"] = attempt("probevx", kind="vxlan", vxlan_id=1, vxlan_port=4789)
        results["geneve"] = attempt(
            "probegn", kind="geneve", geneve_id=1, geneve_remote="198.18.0.1"
        )
        results["gretap"] = attempt("probegt", kind="gretap", gre_remote="198.18.0.1")
        results["dummy"] = attempt("probedu", kind="dummy")
        results["macvlan"] = results["veth"] and attempt(
            "probemv",
            kind="macvlan",
            link=ipr.link_lookup(ifname="probev0")[0],
            macvlan_mode="bridge",
        )
        filtering = False
        if results["bridge"]:
            try:
                ipr.link("set", ifname="probebr", kind="bridge", br_vlan_filtering=1)
                msg = ipr.link("get", ifname="probebr")[0]
                data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
                filtering = bool(data and data.get_attr("IFLA_BR_VLAN_FILTERING"))
            except NetlinkError:
                filtering = False
        results["bridge-vlan-filtering"] = filtering
        vlan = False
        if results["veth"]:
            vlan = attempt(
                "probev0.1", kind="vlan", link=ipr.link_lookup(ifname="probev0")[0], vlan_id=1
            )
        results["8021q"] = vlan
    finally:
        ipr.close()  # closing the only socket destroys the namespace
    log.info(
        "kernel features: %s", " ".join(f"{k}={'yes' if v else 'no'}" for k, v in results.items())
    )
    return HostFeatures(
        bridge_vlan_filtering=results["bridge-vlan-filtering"],
        vxlan=results["vxlan"],
        vlan_8021q=results["8021q"],
        dummy=results["dummy"],
        extras=results,
    )
