"""The netlink driver's one translation: kernel errno -> netplumb error. Pure:
NetlinkError values are built by hand (the errno each case uses was checked
against a real kernel)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from netplumb.agent.core.model import RouteSpec
from netplumb.agent.core.ops import (
    AddAddress,
    AddRoute,
    CreateBridge,
    CreateVeth,
    DeleteLink,
    Op,
    SetBridgeVlanFiltering,
    SetMtu,
    SetPortVlan,
    SetUp,
    Where,
)
from netplumb.agent.drivers import netlink
from netplumb.agent.errors import (
    Conflict,
    InternalError,
    InvalidSpec,
    KernelFeatureMissing,
    NetplumbError,
    NotFound,
)
from pyroute2.netlink.exceptions import NetlinkError

V4_ROUTE = AddRoute(
    "eth1", RouteSpec(ipaddress.ip_network("198.18.190.0/24"), ipaddress.ip_address("198.18.128.1"))
)
V6_ROUTE = AddRoute(
    "eth1",
    RouteSpec(ipaddress.ip_network("2001:db8:9::/48"), ipaddress.ip_address("2001:db8:1::1")),
)
VETH = CreateVeth("np1", "eth1", "02:00:00:00:00:01", 1500, "t")


def nl(code: int) -> NetlinkError:
    return NetlinkError(code, errno.errorcode.get(code, "?"))


@pytest.mark.parametrize(
    ("op", "code", "cls"),
    [
        (VETH, errno.EEXIST, Conflict),
        (V4_ROUTE, errno.EEXIST, Conflict),
        (V4_ROUTE, errno.ENETUNREACH, InvalidSpec),
        (SetPortVlan("np1", 10), errno.EOPNOTSUPP, KernelFeatureMissing),
        (SetBridgeVlanFiltering("br0"), errno.EOPNOTSUPP, KernelFeatureMissing),
        (SetMtu(Where.HOST, "np1", 70000), errno.EINVAL, InvalidSpec),
        (VETH, errno.ERANGE, InvalidSpec),
        (CreateBridge("br0", 10, "t"), errno.EINVAL, InvalidSpec),
        (
            AddAddress(Where.GUEST, "eth1", ipaddress.ip_interface("198.18.128.1/17")),
            errno.EADDRNOTAVAIL,
            InvalidSpec,
        ),
        (SetUp(Where.HOST, "np1"), errno.ENODEV, NotFound),
        (DeleteLink(Where.HOST, "np1"), errno.EPERM, InternalError),
        (SetUp(Where.HOST, "np1"), errno.EBUSY, InternalError),
    ],
)
def test_translate(op: Op, code: int, cls: type[NetplumbError]) -> None:
    out = netlink.translate(op, nl(code))
    assert type(out) is cls
    assert str(op) in out.message


def test_unreachable_ipv4_next_hop_names_the_routes() -> None:
    out = netlink.translate(V4_ROUTE, nl(errno.ENETUNREACH))
    assert out.field == "spec.routes" and "198.18.128.1" in out.message and out.hint


def test_unreachable_ipv6_next_hop_is_invalid_spec() -> None:
    out = netlink.translate(V6_ROUTE, nl(errno.EHOSTUNREACH))
    assert isinstance(out, InvalidSpec) and out.field == "spec.routes"


class _NoLinks:
    """Lookups by name are an ioctl on the connection's socket: a plain UDP
    socket stands in for it (no interface np1 exists)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


class _Session(netlink.Session):
    """The real session's index cache over a netlink stand-in with no links."""

    def __init__(self, guest: Any = None) -> None:
        self.guest_ns = guest
        self._links = _NoLinks()
        self._guest_ipr = None
        self._guest_rtnl = None
        self._index = {}
        self.filtering = {}

    @property
    def host(self) -> Any:
        return self._links

    @property
    def guest(self) -> Any:
        return self._links

    def at(self, where: Where) -> Any:
        return self._links

    def close(self) -> None:
        self._links.close()


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[netlink.NetlinkDriver]:
    monkeypatch.setattr(netlink, "Session", _Session)
    d = netlink.NetlinkDriver()
    yield d
    d.close()


def test_missing_link_is_not_found_with_the_completed_ops(driver: netlink.NetlinkDriver) -> None:
    with pytest.raises(NotFound) as e:
        driver.apply(
            [AddAddress(Where.HOST, "np1", ipaddress.ip_interface("198.18.128.1/17"))], None
        )
    assert e.value.completed == []  # type: ignore[attr-defined]


def test_set_port_vlan_on_a_missing_link_is_not_found(driver: netlink.NetlinkDriver) -> None:
    with pytest.raises(NetplumbError) as e:
        driver.apply([SetPortVlan("np1", 10)], None)
    assert isinstance(e.value, NotFound)


def test_fault_injection_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netlink, "Session", _Session)
    d = netlink.NetlinkDriver(fault_inject="SetUp")
    try:
        with pytest.raises(InternalError) as e:
            d.apply([SetUp(Where.HOST, "np1")], None)
        assert "fault injected" in e.value.message
    finally:
        d.close()
