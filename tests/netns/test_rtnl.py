"""The plain rtnetlink reader (agent/drivers/rtnl.py) against pyroute2.

The reader walks the kernel's answers with ``struct`` and reads only the
attributes observation uses. Here a scratch namespace gets links of several
kinds (a bridge with addresses, a veth pair with a MAC, an alias and a
master, a point-to-point address, routes in two tables with gateways and
metrics), and every figure the reader returns is compared with pyroute2's
full decoding of the same kernel state, through IPRoute in that namespace.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.host import Namespaces, require_root, run
from netplumb.agent.drivers.netns import NETLINK_ROUTE, open_netns, socket_in
from netplumb.agent.drivers.rtnl import LinkFacts, Rtnl
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

PROTO = 151  # netplumb's route protocol


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    require_root()
    spaces = Namespaces()
    ns = spaces.new("nprtnl")
    try:
        cmds = [
            "link add br0 type bridge",
            # A MAC of its own: ports added later (the writes test) must not
            # change it, which would flush its neighbour entries.
            "link set br0 address 02:00:c6:12:05:01 mtu 1400 alias netplumb:test-bridge up",
            "addr add 198.18.5.1/24 dev br0",
            "addr add 2001:db8:5::1/64 dev br0 nodad",
            "link add v0 type veth peer name v1",
            "link set v0 master br0 up",
            "link set v1 address 02:00:c6:12:05:02 mtu 1300 alias netplumb:ep up",
            "addr add 198.18.5.2/24 dev v1",
            "addr add 198.18.6.1 peer 198.18.6.2/32 dev v1",
            "addr add 2001:db8:5::2/64 dev v1 nodad",
            "link set lo up",
            f"route add default via 198.18.5.1 dev v1 proto {PROTO} metric 5",
            f"route add 198.18.7.0/24 dev v1 proto {PROTO}",
            f"route add 198.18.8.0/24 via 198.18.5.1 dev v1 proto {PROTO} table 100",
            f"-6 route add 2001:db8:9::/64 via 2001:db8:5::3 dev v1 proto {PROTO} metric 7",
            "link add vx0 type vxlan id 42 local 198.18.5.1 dstport 4789 nolearning",
            "link set vx0 master br0 up",
            "neigh add 198.18.5.40 lladdr 02:00:c6:12:05:40 dev br0 nud permanent",
            "-6 neigh add 2001:db8:5::40 lladdr 02:00:c6:12:05:41 dev br0 nud permanent",
            "neigh add 198.18.5.41 lladdr 02:00:c6:12:05:42 dev v1 nud permanent",
        ]
        for c in cmds:
            run("ip", "-n", ns, *c.split())
        fdb = [
            "append 00:00:00:00:00:00 dev vx0 dst 198.18.5.20",
            "append 00:00:00:00:00:00 dev vx0 dst 198.18.5.21",
            "add 02:00:c6:12:05:30 dev vx0 dst 198.18.5.20",
            "add 02:00:c6:12:05:31 dev v0 master static",
        ]
        for c in fdb:
            run("ip", "netns", "exec", ns, "bridge", "fdb", *c.split())
        yield ns
    finally:
        spaces.cleanup()


@pytest.fixture
def both(scratch: str) -> Iterator[tuple[Rtnl, IPRoute]]:
    handle = open_netns(f"/run/netns/{scratch}")
    reader = Rtnl(socket_in(handle, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    ipr = IPRoute(fileno=socket_in(handle, socket.AF_NETLINK, socket.SOCK_DGRAM, 0).detach())
    try:
        yield reader, ipr
    finally:
        reader.close()
        ipr.close()
        handle.close()


def _expected_link(m: Any) -> dict[str, object]:
    """What pyroute2's full decoding says of the figures LinkFacts holds."""
    info = m.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
    return {
        "name": m.get_attr("IFLA_IFNAME"),
        "index": m["index"],
        "kind": kind,
        "alias": m.get_attr("IFLA_IFALIAS") or "",
        "mac": (m.get_attr("IFLA_ADDRESS") or "").lower(),
        "mtu": m.get_attr("IFLA_MTU"),
        "up": bool(m["flags"] & 1),
        "master_index": m.get_attr("IFLA_MASTER") or 0,
        "peer_index": m.get_attr("IFLA_LINK") or 0,
        "vlan_filtering": bool(data.get_attr("IFLA_BR_VLAN_FILTERING"))
        if kind == "bridge" and data is not None
        else False,
    }


def _facts(f: LinkFacts) -> dict[str, object]:
    return dataclasses.asdict(f)


def test_every_link_reads_as_pyroute2_decodes_it(both: tuple[Rtnl, IPRoute]) -> None:
    reader, ipr = both
    expected = {m["index"]: _expected_link(m) for m in ipr.get_links()}
    got = {f.index: _facts(f) for f in reader.links()}
    assert got == expected
    names = {v["name"] for v in got.values()}
    assert {"lo", "br0", "v0", "v1"} <= names
    v1 = next(v for v in got.values() if v["name"] == "v1")
    assert (v1["kind"], v1["mac"], v1["mtu"], v1["alias"]) == (
        "veth",
        "02:00:c6:12:05:02",
        1300,
        "netplumb:ep",
    )
    v0 = next(v for v in got.values() if v["name"] == "v0")
    br0 = next(v for v in got.values() if v["name"] == "br0")
    assert v0["master_index"] == br0["index"] and br0["kind"] == "bridge"
    assert v1["peer_index"] == v0["index"]


def test_one_link_by_name_or_index_and_absent_ones(both: tuple[Rtnl, IPRoute]) -> None:
    reader, ipr = both
    for name in ("br0", "v0", "v1", "lo"):
        by_name = reader.link(name=name)
        assert by_name is not None
        assert _facts(by_name) == _expected_link(ipr.link("get", ifname=name)[0])
        assert reader.link(index=by_name.index) == by_name
    assert reader.link(name="nosuchlink") is None
    assert reader.link(index=999_999) is None
    # the socket still answers after the errors
    assert reader.link(name="lo") is not None
    msg = reader.link_message("br0")
    assert msg is not None and msg.get_attr("IFLA_IFNAME") == "br0"
    assert reader.link_message("nosuchlink") is None


def test_addresses_read_as_pyroute2_decodes_them(both: tuple[Rtnl, IPRoute]) -> None:
    reader, ipr = both
    expected = sorted(
        (
            a["index"],
            a["family"],
            a["prefixlen"],
            str(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")),
        )
        for a in ipr.get_addr()
    )
    got = sorted((a.index, a.family, a.prefixlen, a.address) for a in reader.addresses())
    assert got == expected
    v1 = reader.link(name="v1")
    assert v1 is not None
    mine = {(a.address, a.prefixlen) for a in reader.addresses(v1.index)}
    # the point-to-point address reads as its local end
    assert mine >= {("198.18.5.2", 24), ("198.18.6.1", 32), ("2001:db8:5::2", 64)}


def test_routes_read_as_pyroute2_decodes_them(both: tuple[Rtnl, IPRoute]) -> None:
    reader, ipr = both

    def expected(table: int, proto: int, oif: int) -> list[tuple[object, ...]]:
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=family, table=table or None):
                if proto and r["proto"] != proto:
                    continue
                if oif and r.get_attr("RTA_OIF") != oif:
                    continue
                out.append(
                    (
                        r["family"],
                        r["dst_len"],
                        r.get_attr("RTA_TABLE") or r["table"],
                        r["proto"],
                        str(r.get_attr("RTA_DST") or ""),
                        str(r.get_attr("RTA_GATEWAY") or ""),
                        r.get_attr("RTA_OIF") or 0,
                        r.get_attr("RTA_PRIORITY") or 0,
                    )
                )
        return sorted(out)

    def got(table: int, proto: int, oif: int) -> list[tuple[object, ...]]:
        return sorted(
            (r.family, r.dst_len, r.table, r.protocol, r.dst, r.gateway, r.oif, r.priority)
            for r in reader.routes(table, proto, oif)
            if (not proto or r.protocol == proto) and (not oif or r.oif == oif)
        )

    v1 = reader.link(name="v1")
    assert v1 is not None
    mine = got(254, PROTO, v1.index)
    assert mine == expected(254, PROTO, v1.index)
    assert ("198.18.5.1", 5) in {(r[5], r[7]) for r in mine}  # the default route
    assert ("2001:db8:5::3", 7) in {(r[5], r[7]) for r in mine}
    assert all(r[2] == 254 for r in mine)
    other = got(100, PROTO, 0)
    assert other == expected(100, PROTO, 0) and [r[4] for r in other] == ["198.18.8.0"]


def test_a_closed_namespace_is_an_error_not_a_hang(scratch: str) -> None:
    handle = open_netns(f"/run/netns/{scratch}")
    reader = Rtnl(socket_in(handle, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    handle.close()
    reader.close()
    with pytest.raises(OSError) as e:
        reader.link(name="lo")
    assert e.value.errno == errno.EBADF or isinstance(e.value, NetlinkError)


def test_writes_build_what_iproute_builds_and_errors_carry_the_kernel_message(
    both: tuple[Rtnl, IPRoute],
) -> None:
    """Links, addresses and routes written through the Rtnl socket, with
    IPRoute's keyword arguments; IPRoute reads the result back."""
    reader, ipr = both
    br0 = reader.link(name="br0")
    assert br0 is not None
    try:
        reader.write(
            "link",
            "add",
            ifname="w0",
            kind="veth",
            mtu=1280,
            peer={"ifname": "w1", "address": "02:00:c6:12:05:09", "mtu": 1280},
            master=br0.index,
            state="up",
        )
        reader.write("link", "set", ifname="w1", ifalias="netplumb:w")
        w1 = reader.link(name="w1")
        assert w1 is not None
        reader.write("link", "set", index=w1.index, state="up")
        got = ipr.link("get", ifname="w1")[0]
        assert got.get_attr("IFLA_IFALIAS") == "netplumb:w"
        assert got.get_attr("IFLA_ADDRESS") == "02:00:c6:12:05:09"
        assert got.get_attr("IFLA_MTU") == 1280 and got["flags"] & 1
        w0 = ipr.link("get", ifname="w0")[0]
        assert w0.get_attr("IFLA_MASTER") == br0.index
        # creating it again: EEXIST, as from IPRoute
        with pytest.raises(NetlinkError) as e:
            reader.write("link", "add", ifname="w0", kind="veth", peer={"ifname": "w2"})
        assert e.value.code == errno.EEXIST

        reader.write("addr", "add", index=w1.index, address="198.18.10.2", prefixlen=24)
        reader.write("addr", "add", index=w1.index, address="2001:db8:10::2", prefixlen=64)
        assert {(a.address, a.prefixlen) for a in reader.addresses(w1.index)} >= {
            ("198.18.10.2", 24),
            ("2001:db8:10::2", 64),
        }
        route = {
            "dst": "198.18.11.0",
            "dst_len": 24,
            "oif": w1.index,
            "gateway": "198.18.10.1",
            "proto": PROTO,
            "table": 254,
            "family": socket.AF_INET,
        }
        reader.write("route", "replace", **route)
        reader.write("route", "replace", **route)  # replace: idempotent
        mine = [r for r in reader.routes(254, PROTO, w1.index) if r.dst == "198.18.11.0"]
        assert [(r.gateway, r.dst_len) for r in mine] == [("198.18.10.1", 24)]
        # a next hop outside every subnet: the kernel's own words come back
        with pytest.raises(NetlinkError) as e:
            reader.write("route", "replace", **(route | {"gateway": "198.19.99.1"}))
        assert e.value.code == errno.ENETUNREACH
        assert len(e.value.args) > 1 and "gateway" in str(e.value.args[1]).lower()
        reader.write("route", "del", **route)
        assert not [r for r in reader.routes(254, PROTO, w1.index) if r.dst == "198.18.11.0"]
        reader.write("addr", "del", index=w1.index, address="198.18.10.2", prefixlen=24)
        assert ("198.18.10.2", 24) not in {(a.address, a.prefixlen) for a in reader.addresses()}
    finally:
        try:
            reader.write("link", "del", ifname="w0")
        except NetlinkError:
            pass
    assert reader.link(name="w0") is None and reader.link(name="w1") is None
    with pytest.raises(NetlinkError) as e:
        reader.write("link", "del", ifname="w0")
    assert e.value.code == errno.ENODEV


def _entries(msgs: Any, index: int) -> list[tuple[int, str, str]]:
    """(state, dst, lladdr) of one device's FDB or neighbour entries, as
    pyroute2 decodes them."""
    return sorted(
        (
            m["state"],
            str(m.get_attr("NDA_DST") or ""),
            str(m.get_attr("NDA_LLADDR") or "").lower(),
        )
        for m in msgs
        if m["ifindex"] == index
    )


def test_fdb_and_neighbours_read_as_pyroute2_decodes_them(both: tuple[Rtnl, IPRoute]) -> None:
    reader, ipr = both
    for name in ("vx0", "v0", "br0"):
        link = reader.link(name=name)
        assert link is not None
        got = sorted((e.state, e.dst, e.lladdr) for e in reader.fdb(link.index))
        assert got == _entries(ipr.fdb("dump"), link.index), name
    vx0 = reader.link(name="vx0")
    assert vx0 is not None
    entries = {(e.lladdr, e.dst) for e in reader.fdb(vx0.index)}
    assert {
        ("00:00:00:00:00:00", "198.18.5.20"),
        ("00:00:00:00:00:00", "198.18.5.21"),
        ("02:00:c6:12:05:30", "198.18.5.20"),
    } <= entries
    v0 = reader.link(name="v0")
    assert v0 is not None
    assert "02:00:c6:12:05:31" in {e.lladdr for e in reader.fdb(v0.index)}

    for name in ("br0", "v1"):
        link = reader.link(name=name)
        assert link is not None
        got = sorted((n.state, n.dst, n.lladdr) for n in reader.neighbours(link.index))
        assert got == _entries(ipr.get_neighbours(ifindex=link.index), link.index), name
    br0 = reader.link(name="br0")
    assert br0 is not None
    mine = {(n.dst, n.lladdr) for n in reader.neighbours(br0.index)}
    assert {
        ("198.18.5.40", "02:00:c6:12:05:40"),
        ("2001:db8:5::40", "02:00:c6:12:05:41"),
    } <= mine
    assert ("198.18.5.41", "02:00:c6:12:05:42") not in mine  # v1's, not the bridge's
