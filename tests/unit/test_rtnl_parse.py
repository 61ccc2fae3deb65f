"""The rtnetlink answer parsers (agent/drivers/rtnl.py) on messages encoded
by pyroute2, for what the test machine's kernel cannot produce (a bridge
with VLAN filtering) and for malformed answers, which must never raise from
inside the walk or read past a message. tests/netns/test_rtnl.py compares
the parsers with pyroute2 on real kernel answers."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from netplumb.agent.drivers import rtnl
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

HEADER = 16  # struct nlmsghdr


def _encoded(msg: Any, kind: int) -> bytes:
    msg["header"]["type"] = kind
    msg.encode()
    return bytes(msg.data)


def _bridge(vlan_filtering: int) -> bytes:
    m = ifinfmsg()
    m["index"] = 7
    m["flags"] = 1
    m["attrs"] = [
        ("IFLA_IFNAME", "br0"),
        ("IFLA_ADDRESS", "02:00:C6:12:00:01"),
        ("IFLA_MTU", 1400),
        (
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ("IFLA_INFO_KIND", "bridge"),
                    ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_VLAN_FILTERING", vlan_filtering)]}),
                ]
            },
        ),
        ("IFLA_IFALIAS", "netplumb:x"),
        ("IFLA_MASTER", 3),
    ]
    return _encoded(m, 16)


@pytest.mark.parametrize("on", [0, 1])
def test_a_bridge_with_vlan_filtering(on: int) -> None:
    data = _bridge(on)
    facts = rtnl.parse_link(data, HEADER, len(data))
    assert facts == rtnl.LinkFacts(
        name="br0",
        index=7,
        kind="bridge",
        alias="netplumb:x",
        mac="02:00:c6:12:00:01",
        mtu=1400,
        up=True,
        master_index=3,
        peer_index=0,
        vlan_filtering=bool(on),
    )


def test_vlan_filtering_is_read_only_for_bridges() -> None:
    """The same attribute number means something else in another kind's
    IFLA_INFO_DATA."""
    m = ifinfmsg()
    m["index"] = 9
    m["attrs"] = [
        ("IFLA_IFNAME", "vx0"),
        (
            "IFLA_LINKINFO",
            {
                "attrs": [
                    ("IFLA_INFO_KIND", "vxlan"),
                    ("IFLA_INFO_DATA", {"attrs": [("IFLA_VXLAN_ID", 42), ("IFLA_VXLAN_TTL", 7)]}),
                ]
            },
        ),
    ]
    data = _encoded(m, 16)
    facts = rtnl.parse_link(data, HEADER, len(data))
    assert facts.kind == "vxlan" and facts.vlan_filtering is False


@pytest.mark.parametrize("cut", [HEADER + 16, HEADER + 17, HEADER + 20, HEADER + 27, -1, -3])
def test_a_truncated_link_reads_what_is_whole_and_never_past_the_end(cut: int) -> None:
    data = _bridge(1)
    end = cut if cut > 0 else len(data) + cut
    facts = rtnl.parse_link(data, HEADER, end)
    assert facts.index == 7  # the fixed header is whole
    assert facts.name in ("", "br0")


def test_an_attribute_claiming_more_than_is_there_ends_the_walk() -> None:
    # one good attribute, then one whose length runs past the end
    good = b"\x08\x00\x04\x00" + (1400).to_bytes(4, "little")
    bad = b"\xff\x00\x03\x00br0\x00"
    data = good + bad
    assert rtnl._attributes(data, 0, len(data)) == {4: (1400).to_bytes(4, "little")}
    assert rtnl._attributes(b"\x02\x00\x03\x00", 0, 4) == {}  # a length below 4


def test_routes_and_neighbours_of_both_families() -> None:
    r = rtmsg()
    r["family"] = socket.AF_INET6
    r["dst_len"] = 48
    r["table"] = 254
    r["proto"] = 151
    r["attrs"] = [
        ("RTA_DST", "2001:db8:98::"),
        ("RTA_GATEWAY", "2001:db8:9::1"),
        ("RTA_OIF", 5),
        ("RTA_PRIORITY", 7),
        ("RTA_TABLE", 1000),
    ]
    data = _encoded(r, 24)
    assert rtnl.parse_route(data, HEADER, len(data)) == rtnl.RouteFacts(
        family=socket.AF_INET6,
        dst_len=48,
        table=1000,  # RTA_TABLE wins over the 8-bit field
        protocol=151,
        dst="2001:db8:98::",
        gateway="2001:db8:9::1",
        oif=5,
        priority=7,
    )
    n = ndmsg()
    n["family"] = 7  # AF_BRIDGE: an FDB entry with a VXLAN remote
    n["ifindex"] = 12
    n["state"] = 0x80
    n["attrs"] = [("NDA_LLADDR", "00:00:00:00:00:00"), ("NDA_DST", "198.18.5.20")]
    data = _encoded(n, 28)
    assert rtnl.parse_neighbour(data, HEADER, len(data)) == rtnl.NeighbourFacts(
        ifindex=12, state=0x80, dst="198.18.5.20", lladdr="00:00:00:00:00:00"
    )


class _Answers:
    """A socket stand-in that returns canned datagrams."""

    def __init__(self, *datagrams: bytes) -> None:
        self.datagrams = list(datagrams)
        self.sent: list[bytes] = []

    def bind(self, _: Any) -> None: ...
    def settimeout(self, _: float) -> None: ...
    def setsockopt(self, *_: Any) -> None: ...

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def recv(self, _: int) -> bytes:
        return self.datagrams.pop(0)


def _header(length: int, kind: int, seq: int, flags: int = 0) -> bytes:
    return (
        length.to_bytes(4, "little")
        + kind.to_bytes(2, "little")
        + flags.to_bytes(2, "little")
        + seq.to_bytes(4, "little")
        + b"\0\0\0\0"
    )


def test_a_truncated_answer_is_an_error_not_a_hang() -> None:
    sock = _Answers(_header(64, 16, 1) + b"\0" * 8)  # claims 64 bytes, carries 24
    reader = rtnl.Rtnl(sock)  # type: ignore[arg-type]
    with pytest.raises(NetlinkError) as e:
        reader.link(name="eth0")
    assert "truncated" in str(e.value)


def test_answers_to_an_abandoned_request_are_skipped_and_errors_carry_the_kernel_message() -> None:
    stale = _header(20, 2, 1) + (0).to_bytes(4, "little")  # an ack of seq 1
    text = b"Nexthop has invalid gateway\0"
    tlv = (4 + len(text)).to_bytes(2, "little") + (1).to_bytes(2, "little") + text
    tlv += b"\0" * (-len(tlv) % 4)
    body = (-101).to_bytes(4, "little", signed=True) + _header(36, 24, 2) + tlv
    error = _header(16 + len(body), 2, 2, flags=0x300) + body  # NLM_F_CAPPED | ACK_TLVS
    reader = rtnl.Rtnl(_Answers(stale + error))  # type: ignore[arg-type]
    reader._seq = 1  # the next request is seq 2
    with pytest.raises(NetlinkError) as e:
        reader.write(
            "route", "replace", dst="198.18.11.0", dst_len=24, oif=5, gateway="198.19.99.1"
        )
    assert e.value.code == 101 and e.value.args[1] == "Nexthop has invalid gateway"
