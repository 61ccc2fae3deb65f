"""Observation and the common writes on a plain rtnetlink socket.

Observation -- a link by name or index, the host's links, a link's addresses
and routes, one device's FDB or neighbour entries -- is most of a start-up
reconcile (thousands of guests, one host dump) and a good part of an attach.
Through pyroute2's IPRoute each request also runs an asyncio loop and request
filters (~0.7 ms over the kernel's own time), and each answer is decoded
whole: a link message carries some fifty attributes, and decoding them into
pyroute2's objects took more than half of a restart at 1000 endpoints. Here requests are still encoded by pyroute2's
message classes (once, then cached), but the answers are walked with
``struct`` and only the attributes observation uses are read. The layouts
are the kernel's ABI (``linux/netlink.h``, ``rtnetlink.h``, ``if_link.h``,
``if_addr.h``, ``neighbour.h``); ``tests/netns/test_rtnl.py`` checks every figure against
pyroute2's full decoding of the same kernel answers.

The writes of an attach and a repair (links, addresses, routes) go through
the same socket: their keyword arguments are turned into a message by
pyroute2's own request filters, exactly as IPRoute would build it, and only
the asyncio round trip is left out (~0.4 ms a request, and the ~0.7 ms of
opening an IPRoute in each guest).

Errors are pyroute2's ``NetlinkError``, as from IPRoute, with the kernel's
extended-ack message when it gives one.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

READ_TIMEOUT = 10.0  # seconds: the kernel answers at once; never hang on a bug
SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
NETLINK_CAP_ACK = 10  # an error answer does not echo the request's payload
NETLINK_EXT_ACK = 11  # ... but carries the kernel's message (NLMSGERR_ATTR_MSG)
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
RTEXT_FILTER_SKIP_STATS = 8
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# if_link.h
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS = 18, 20
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_VLAN_FILTERING = 7
# if_addr.h
IFA_ADDRESS, IFA_LOCAL = 1, 2
# neighbour.h
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
AF_BRIDGE = 7
# rtnetlink.h
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What observation reads of a link message. A snapshot of thousands of
    links keeps these, not messages."""

    name: str
    index: int
    kind: str
    alias: str
    mac: str
    mtu: int
    up: bool
    master_index: int
    peer_index: int
    vlan_filtering: bool  # a bridge's


@dataclass(frozen=True, slots=True)
class AddressFacts:
    index: int
    family: int
    prefixlen: int
    address: str  # IFA_LOCAL, else IFA_ADDRESS (a point-to-point peer's)


@dataclass(frozen=True, slots=True)
class RouteFacts:
    family: int
    dst_len: int
    table: int  # RTA_TABLE, else the header's 8-bit field
    protocol: int
    dst: str  # "" for a default route
    gateway: str
    oif: int
    priority: int


@dataclass(frozen=True, slots=True)
class NeighbourFacts:
    """A neighbour (ARP/NDP) or FDB entry."""

    ifindex: int
    state: int
    dst: str  # an IP address; for an FDB entry the remote (VXLAN) end, if any
    lladdr: str  # lower-case MAC, "" for none


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The payload of each attribute type (the first of each) between
    ``offset`` and ``end``."""
    out: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            break  # malformed: stop rather than read past the message
        kind &= _NLA_TYPE_MASK
        if kind not in out:
            out[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def _string(value: bytes | None) -> str:
    if not value:
        return ""
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(value: bytes | None) -> int:
    return _U32.unpack_from(value)[0] if value and len(value) >= 4 else 0


def _ip(family: int, value: bytes | None) -> str:
    return socket.inet_ntop(family, value) if value else ""


def parse_link(data: bytes, offset: int, end: int) -> LinkFacts:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, offset)
    a = _attributes(data, offset + _IFINFOMSG.size, end)
    kind, vlan_filtering = "", False
    info = a.get(IFLA_LINKINFO)
    if info:
        nested = _attributes(info, 0, len(info))
        kind = _string(nested.get(IFLA_INFO_KIND))
        bridge = nested.get(IFLA_INFO_DATA) if kind == "bridge" else None
        if bridge:
            flag = _attributes(bridge, 0, len(bridge)).get(IFLA_BR_VLAN_FILTERING)
            vlan_filtering = bool(flag and flag[0])
    mac = a.get(IFLA_ADDRESS)
    return LinkFacts(
        name=_string(a.get(IFLA_IFNAME)),
        index=index,
        kind=kind,
        alias=_string(a.get(IFLA_IFALIAS)),
        mac=mac.hex(":") if mac else "",
        mtu=_u32(a.get(IFLA_MTU)),
        up=bool(flags & IFF_UP),
        master_index=_u32(a.get(IFLA_MASTER)),
        peer_index=_u32(a.get(IFLA_LINK)),
        vlan_filtering=vlan_filtering,
    )


def parse_address(data: bytes, offset: int, end: int) -> AddressFacts:
    family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(data, offset)
    a = _attributes(data, offset + _IFADDRMSG.size, end)
    return AddressFacts(
        index=index,
        family=family,
        prefixlen=prefixlen,
        address=_ip(family, a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)),
    )


def parse_route(data: bytes, offset: int, end: int) -> RouteFacts:
    family, dst_len, _, _, table, protocol, _, _, _ = _RTMSG.unpack_from(data, offset)
    a = _attributes(data, offset + _RTMSG.size, end)
    return RouteFacts(
        family=family,
        dst_len=dst_len,
        table=_u32(a.get(RTA_TABLE)) or table,
        protocol=protocol,
        dst=_ip(family, a.get(RTA_DST)),
        gateway=_ip(family, a.get(RTA_GATEWAY)),
        oif=_u32(a.get(RTA_OIF)),
        priority=_u32(a.get(RTA_PRIORITY)),
    )


# (mode, command) -> message class, type and the flags beyond
# NLM_F_REQUEST | NLM_F_ACK: IPRoute's command maps, for the writes used.
_CREATE = NLM_F_CREATE | NLM_F_EXCL
_WRITES: dict[tuple[str, str], tuple[Callable[[], Any], int, int]] = {
    ("link", "add"): (ifinfmsg, RTM_NEWLINK, _CREATE),
    ("link", "set"): (ifinfmsg, RTM_NEWLINK, 0),
    ("link", "del"): (ifinfmsg, RTM_DELLINK, 0),
    ("addr", "add"): (ifaddrmsg, RTM_NEWADDR, _CREATE),
    ("addr", "del"): (ifaddrmsg, RTM_DELADDR, 0),
    ("route", "add"): (rtmsg, RTM_NEWROUTE, _CREATE),
    ("route", "replace"): (rtmsg, RTM_NEWROUTE, NLM_F_REPLACE | NLM_F_CREATE),
    ("route", "del"): (rtmsg, RTM_DELROUTE, 0),
}


def parse_neighbour(data: bytes, offset: int, end: int) -> NeighbourFacts:
    _, ifindex, state, _, _ = _NDMSG.unpack_from(data, offset)
    a = _attributes(data, offset + _NDMSG.size, end)
    dst = a.get(NDA_DST)
    if dst and len(dst) in (4, 16):
        address = socket.inet_ntop(socket.AF_INET if len(dst) == 4 else socket.AF_INET6, dst)
    else:
        address = ""
    mac = a.get(NDA_LLADDR)
    return NeighbourFacts(
        ifindex=ifindex, state=state, dst=address, lladdr=mac.hex(":") if mac else ""
    )


class Rtnl:
    """One rtnetlink socket (see the module's doc). Not thread-safe: one per
    session (guests) or per thread (the host)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.bind((0, 0))
        self.sock.settimeout(READ_TIMEOUT)
        self._seq = 0
        self._marshal: MarshalRtnl | None = None
        # Strict checking (Linux 4.20+) lets a dump carry filters the kernel
        # applies (an interface, a table, a protocol): fewer messages to
        # read. Callers filter again, so older kernels only cost more.
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            self.strict = True
        except OSError:
            self.strict = False
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self.sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                pass  # older kernels: errors without the kernel's message

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _answers(
        self, key: tuple[Any, ...], make: Callable[[], Any], dump: bool
    ) -> Iterator[tuple[bytes, int, int]]:
        """Send the request ``make`` builds (a pyroute2 message of type
        ``key[0]``; its encoding is cached under ``key``, only the sequence
        number changes) and yield each answer message as (buffer, offset of
        its payload, end), as they arrive: a dump of thousands of links is
        never held at once. Read it to the end before the next request."""
        template = _encoded.get(key)
        if template is None:
            msg = make()
            msg["header"]["type"] = key[0]
            msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
            msg.encode()
            template = bytes(msg.data)
            if len(_encoded) >= 256:
                _encoded.clear()
            _encoded[key] = template
        return self._read(self._send(bytearray(template)), dump)

    def _send(self, request: bytearray) -> int:
        """Send an encoded request under the next sequence number; returns it."""
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        struct.pack_into("=I", request, 8, seq)  # nlmsghdr: len, type, flags, seq, pid
        self.sock.send(request)
        return seq

    def _read(self, seq: int, dump: bool) -> Iterator[tuple[bytes, int, int]]:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                raise NetlinkError(errno.ETIMEDOUT, "no netlink answer") from None
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, flags, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                end = offset + length
                if length < _NLMSGHDR.size or end > len(data):
                    raise NetlinkError(errno.EBADMSG, "truncated netlink answer")
                payload, offset = offset + _NLMSGHDR.size, (end + 3) & ~3
                if mseq != seq:
                    continue  # the answer to an earlier, abandoned request
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    code = _I32.unpack_from(data, payload)[0] if end - payload >= 4 else 0
                    if code < 0:
                        raise _error(-code, data, flags, payload, end, kind == NLMSG_ERROR)
                    return
                yield data, payload, end
                if not dump:
                    return

    def write(self, mode: str, command: str, **kwargs: Any) -> None:
        """A link, address or route change, given as to IPRoute (``mode``
        "link", "addr" or "route"; ``command`` "add", "set", "replace" or
        "del"), acknowledged by the kernel or raised as NetlinkError."""
        make, kind, flags = _WRITES[(mode, command)]
        parameters = None
        if mode == "route":
            parameters = {"strict_check": False}  # as IPRoute() builds it
            if command in ("add", "replace"):
                kwargs["proto"] = kwargs.get("proto", "static") or "static"
                kwargs["type"] = kwargs.get("type", "unicast") or "unicast"
        arguments = get_arguments_processor(mode, command, kwargs, parameters)
        msg = make()
        for field in msg.fields:  # what pyroute2's NetlinkRequest does
            msg[field[0]] = arguments.get_value(field[0], default=0, mode="field")
        for key, value in arguments.items():
            nla = type(msg).name2nla(key)
            if msg.valid_nla(nla) and value is not None:
                msg["attrs"].append([nla, value])
        if "attrs" in arguments:
            msg["attrs"].extend(arguments["attrs"])
        msg["header"]["type"] = kind
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg.encode()
        for _ in self._read(self._send(bytearray(msg.data)), dump=False):
            pass  # a write answers with an acknowledgement only

    def link(self, name: str = "", index: int = 0) -> LinkFacts | None:
        """The link by name or index, or None when there is none."""
        for data, offset, end in self._link(name, index):
            return parse_link(data, offset, end)
        return None

    def link_message(self, name: str) -> Any | None:
        """The link decoded whole by pyroute2 (for the attributes of a kind,
        such as a VXLAN's), or None when there is none."""
        for data, offset, end in self._link(name, 0):
            if self._marshal is None:
                self._marshal = MarshalRtnl()
            start = offset - _NLMSGHDR.size
            return next(iter(self._marshal.parse(data[start:end])))
        return None

    def _link(self, name: str, index: int) -> Iterator[tuple[bytes, int, int]]:
        def make() -> Any:
            msg = ifinfmsg()
            msg["index"] = index
            msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
            if name:
                msg["attrs"].append(("IFLA_IFNAME", name))
            return msg

        try:
            yield from self._answers((RTM_GETLINK, name, index), make, dump=False)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise

    def links(self) -> Iterator[LinkFacts]:
        """Every link, as they arrive."""

        def make() -> Any:
            msg = ifinfmsg()
            msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
            return msg

        for data, offset, end in self._answers((RTM_GETLINK, "*"), make, dump=True):
            yield parse_link(data, offset, end)

    def addresses(self, index: int = 0) -> list[AddressFacts]:
        """Addresses, of interface ``index`` (where the kernel filters) or all."""
        index = index if self.strict else 0

        def make() -> Any:
            msg = ifaddrmsg()
            msg["index"] = index
            return msg

        return [parse_address(*m) for m in self._answers((RTM_GETADDR, index), make, dump=True)]

    def routes(self, table: int = 0, protocol: int = 0, oif: int = 0) -> list[RouteFacts]:
        """Routes of both families, of that table, protocol and output
        interface where the kernel filters, or all."""
        if not self.strict:
            table = protocol = oif = 0

        def make() -> Any:
            msg = rtmsg()
            msg["family"] = socket.AF_UNSPEC  # both families (pyroute2's default is AF_INET)
            msg["table"] = table if table < 256 else 0
            msg["proto"] = protocol
            if oif:
                msg["attrs"] = [("RTA_OIF", oif)]
            return msg

        return [
            parse_route(*m)
            for m in self._answers((RTM_GETROUTE, table, protocol, oif), make, dump=True)
        ]

    def fdb(self, ifindex: int) -> list[NeighbourFacts]:
        """The forwarding-database entries of one device (a VXLAN's remote
        ends, a bridge port's MACs). A bridge's FDB holds an entry for every
        port, thousands on a busy host: the kernel's filter matters."""
        return self._entries(AF_BRIDGE, ifindex)

    def neighbours(self, ifindex: int) -> list[NeighbourFacts]:
        """The neighbour (ARP and NDP) entries of one device."""
        return self._entries(socket.AF_UNSPEC, ifindex)

    def _entries(self, family: int, ifindex: int) -> list[NeighbourFacts]:
        """One device's FDB (AF_BRIDGE) or neighbour (AF_UNSPEC: both
        families) entries, filtered by the kernel where it can: an FDB dump
        takes the device in the header, a neighbour dump in NDA_IFINDEX."""
        index = ifindex if self.strict else 0

        def make() -> Any:
            msg = ndmsg()
            msg["family"] = family
            if index and family == AF_BRIDGE:
                msg["ifindex"] = index
            elif index:
                msg["attrs"] = [("NDA_IFINDEX", index)]
            return msg

        answers = self._answers((RTM_GETNEIGH, family, index), make, dump=True)
        return [n for n in (parse_neighbour(*m) for m in answers) if n.ifindex == ifindex]


def _error(code: int, data: bytes, flags: int, payload: int, end: int, ack: bool) -> NetlinkError:
    """The error an answer carries, with the kernel's own message when the
    extended ack has one (the request is not echoed: NETLINK_CAP_ACK)."""
    if ack and flags & NLM_F_ACK_TLVS:
        tlvs = payload + 4 + _NLMSGHDR.size  # error code, the request's header
        message = _string(_attributes(data, tlvs, end).get(NLMSGERR_ATTR_MSG))
        if message:
            return NetlinkError(code, message)
    return NetlinkError(code)


# Encoded requests by what they ask, shared by all sockets (bytes: safe to
# share between threads); bounded, cleared when full.
_encoded: dict[tuple[Any, ...], bytes] = {}
