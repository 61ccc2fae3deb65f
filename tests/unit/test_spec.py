"""Request validation: every field, its limits, the field named in the
error, and properties over arbitrary text (valid or InvalidSpec, never
another exception)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netplumb.agent.core import spec
from netplumb.agent.core.model import BridgeKind, GuestKind, GuestRef
from netplumb.agent.errors import InvalidSpec
from unit_helpers import GUEST

ip = ipaddress.ip_interface


def refused(call: Callable[[], Any]) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        call()
    return e.value


def ep(**kw: Any) -> Any:
    kw.setdefault("bridge", "br0")
    kw.setdefault("guest_ref", GUEST)
    return spec.endpoint_spec(**kw)


# ----------------------------------------------------------------- ifname


@pytest.mark.parametrize(
    "name", ["eth0", "a", "a" * 15, "br-0.1_x", "0eth", "Eth9", "np0123456789ab"]
)
def test_valid_interface_names(name: str) -> None:
    assert spec.ifname(name, "spec.ifname") == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("a" * 16, "longer than 15 bytes"),
        ("a" * 14 + "é", "longer than 15 bytes"),  # 14 characters, 16 bytes
        ("é", "not a valid interface name"),
        ("ethé", "not a valid interface name"),
        ("-eth0", "not a valid interface name"),
        (".eth0", "not a valid interface name"),
        ("_eth0", "not a valid interface name"),
        ("..", "not a valid interface name"),
        ("eth 0", "not a valid interface name"),
        ("eth/0", "not a valid interface name"),
        ("eth:0", "not a valid interface name"),
        ("eth0\n", "not a valid interface name"),
        ("eth\x000", "not a valid interface name"),
    ],
)
def test_invalid_interface_names(name: str, words: str) -> None:
    e = refused(lambda: spec.ifname(name, "spec.host_ifname"))
    assert e.field == "spec.host_ifname"
    assert words in e.message


@given(st.text())
def test_any_text_is_an_ifname_or_invalid_spec(text: str) -> None:
    try:
        out = spec.ifname(text, "f")
    except InvalidSpec as e:
        assert e.field == "f"
        return
    assert out == text
    assert 1 <= len(out.encode()) <= spec.IFNAMSIZ and out.isascii()


# ------------------------------------------------------------------ guest


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("netns:blue", GuestKind.NETNS, "blue"),
        ("blue", GuestKind.NETNS, "blue"),
        ("n" * 64, GuestKind.NETNS, "n" * 64),
        ("netns:_x.y-z", GuestKind.NETNS, "_x.y-z"),
        ("pid:42", GuestKind.PID, "42"),
        ("pid:0042", GuestKind.PID, "42"),
        (f"pid:{spec.PID_MAX}", GuestKind.PID, str(spec.PID_MAX)),
        ("/proc/42/ns/net", GuestKind.PID, "42"),
        ("/proc/0042/ns/net", GuestKind.PID, "42"),
        ("/run/netns/blue", GuestKind.NETNS, "blue"),
        ("/var/run/netns/blue", GuestKind.NETNS, "blue"),
        ("/var/lib/ns/blue", GuestKind.PATH, "/var/lib/ns/blue"),
        ("/run/netns/blue/net", GuestKind.PATH, "/run/netns/blue/net"),
        ("docker:web", GuestKind.DOCKER, "web"),
        ("docker:0123abcd", GuestKind.DOCKER, "0123abcd"),
        ("path:/var/lib/ns/blue", GuestKind.PATH, "/var/lib/ns/blue"),
        ("path:/run/netns/blue", GuestKind.NETNS, "blue"),
        ("path:/var/run/netns/blue", GuestKind.NETNS, "blue"),
        ("path:/proc/5/ns/net", GuestKind.PID, "5"),
        ("path:/proc/005/ns/net", GuestKind.PID, "5"),
        ("path:/run/netns/blue/net", GuestKind.PATH, "/run/netns/blue/net"),
    ],
)
def test_guest_references_are_canonical(text: str, kind: GuestKind, value: str) -> None:
    assert spec.guest(text) == GuestRef(kind, value)


def test_one_guest_has_one_key_whatever_its_spelling() -> None:
    assert len({spec.guest(t).key for t in ("blue", "netns:blue", "/run/netns/blue")}) == 1
    assert spec.guest("/var/run/netns/blue").key == "netns:blue"
    assert len({spec.guest(t).key for t in ("pid:7", "pid:007", "/proc/7/ns/net")}) == 1
    assert spec.guest("path:/run/netns/blue").key == "netns:blue"
    assert spec.guest("path:/proc/7/ns/net").key == "pid:7"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "netns:",
        "netns:.",
        "netns:..",
        "netns:-x",
        "netns:.hidden",
        "netns:a/b",
        "netns:a:b",
        "n" * 65,
        "pid:",
        "pid:0",
        f"pid:{spec.PID_MAX + 1}",
        "pid:-1",
        "pid:+1",
        "pid:1.0",
        "pid:abc",
        "pid:\u0663",  # ARABIC-INDIC DIGIT THREE: isdigit() but not a PID
        "/proc/0/ns/net",
        "docker:",
        "docker:-x",
        "docker:a/b",
        "netns:a\0b",
        "/run/netns/a\0",
        "/" + "a" * spec.MAX_PATH,
        "path:",
        "path:x",
        "path:run/netns/blue",
        "path:path:/x",
        "path:/run/netns/",
        "path:/run/netns/../x",
        "path://x",
        "path:/proc/0/ns/net",
        "path:/run/netns/-x",
        "path:/x\0",
        "path:/" + "a" * spec.MAX_PATH,
    ],
)
def test_invalid_guests(text: str) -> None:
    assert refused(lambda: spec.guest(text, "spec.guest")).field == "spec.guest"


@pytest.mark.parametrize(
    "path",
    [
        "/run/netns/../x",
        "/run/netns/./blue",
        "/run/netns/blue/",
        "/run//netns/blue",
        "//run/netns/blue",  # POSIX keeps a leading '//': normpath alone misses it
        "//x",
        "/proc/42/ns/../ns/net",
        "/run/netns/",
    ],
)
def test_path_tricks_are_refused(path: str) -> None:
    e = refused(lambda: spec.guest(path, "guest"))
    assert e.field == "guest"


def test_dot_dot_path_gets_a_hint() -> None:
    assert "'..'" in refused(lambda: spec.guest("/run/netns/../x")).hint
    assert "'..'" in refused(lambda: spec.guest("path:/run/netns/../x")).hint


def test_relative_path_guest_gets_a_hint() -> None:
    e = refused(lambda: spec.guest("path:var/lib/ns/blue", "spec.guest"))
    assert e.field == "spec.guest" and "absolute path" in e.message
    assert "path:/" in e.hint


@pytest.mark.parametrize("text", ["foo:bar", "DOCKER:x", "Netns:blue", "container:x", "ns:blue"])
def test_unknown_guest_kinds_are_refused_with_a_hint(text: str) -> None:
    e = refused(lambda: spec.guest(text, "spec.guest"))
    assert "unknown kind" in e.message and e.field == "spec.guest"
    assert "netns:NAME" in e.hint and "pid:PID" in e.hint


@given(st.text())
def test_any_text_is_a_guest_or_invalid_spec(text: str) -> None:
    try:
        ref = spec.guest(text, "g")
    except InvalidSpec as e:
        assert e.field == "g"
        return
    assert isinstance(ref, GuestRef) and "\0" not in ref.value


guest_texts = st.one_of(
    st.from_regex(r"(netns:)?[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
    st.integers(1, spec.PID_MAX).map(lambda p: f"pid:{p}"),
    st.integers(1, spec.PID_MAX).map(lambda p: f"/proc/{p}/ns/net"),
    st.from_regex(r"/(var/)?run/netns/[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
    st.from_regex(r"docker:[A-Za-z0-9][A-Za-z0-9_.\-]{0,30}", fullmatch=True),
    st.from_regex(r"(path:)?(/[A-Za-z0-9_][A-Za-z0-9_.\-]{0,10}){1,4}", fullmatch=True),
    st.integers(1, spec.PID_MAX).map(lambda p: f"path:/proc/{p}/ns/net"),
    st.from_regex(r"path:/(var/)?run/netns/[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
)


@given(guest_texts)
def test_canonical_key_parses_back_to_the_same_guest(text: str) -> None:
    ref = spec.guest(text)
    assert spec.guest(ref.key) == ref


def test_path_guest_key_parses_back() -> None:
    ref = spec.guest("/var/lib/ns/blue")
    assert spec.guest(ref.key) == ref


@given(
    st.text(max_size=40)
    | st.from_regex(r"(/[A-Za-z0-9_.\-]{0,8}){1,4}/?", fullmatch=True)
    | st.sampled_from(["/run/netns/blue", "/var/run/netns/x", "/proc/7/ns/net", "/proc/0/ns/net"])
)
def test_path_kind_is_the_same_as_a_bare_path(rest: str) -> None:
    """'path:X' and 'X' name the same guest, or both are refused (a bare X
    that is not absolute is a netns name, so only absolute X is compared)."""
    try:
        ref = spec.guest("path:" + rest, "g")
    except InvalidSpec as e:
        assert e.field == "g"
        if rest.startswith("/"):
            with pytest.raises(InvalidSpec):
                spec.guest(rest, "g")
        return
    assert rest.startswith("/") and spec.guest(rest, "g") == ref
    assert spec.guest(ref.key, "g") == ref


# -------------------------------------------------------------------- mac


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("02:aa:bb:cc:dd:ee", "02:aa:bb:cc:dd:ee"),
        ("02:AA:Bb:cC:DD:EE", "02:aa:bb:cc:dd:ee"),
        ("00:16:3e:00:00:01", "00:16:3e:00:00:01"),
    ],
)
def test_valid_macs_are_lower_case(text: str, out: str) -> None:
    assert spec.mac(text, "spec.mac") == out


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("01:00:5e:00:00:01", "multicast"),
        ("03:aa:bb:cc:dd:ee", "multicast"),
        ("FF:FF:FF:FF:FF:FF", "multicast"),
        ("00:00:00:00:00:00", "all-zero"),
        ("02:aa:bb:cc:dd", "not a MAC"),
        ("02:aa:bb:cc:dd:ee:ff", "not a MAC"),
        ("02-aa-bb-cc-dd-ee", "not a MAC"),
        ("02aabbccddee", "not a MAC"),
        ("0g:aa:bb:cc:dd:ee", "not a MAC"),
        ("02:aa:bb:cc:dd:ee\n", "not a MAC"),
        ("", "not a MAC"),
    ],
)
def test_invalid_macs(text: str, words: str) -> None:
    e = refused(lambda: spec.mac(text, "spec.mac"))
    assert e.field == "spec.mac" and words in e.message


@given(st.text(max_size=20) | st.from_regex(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", fullmatch=True))
def test_any_text_is_a_unicast_mac_or_invalid_spec(text: str) -> None:
    try:
        out = spec.mac(text, "m")
    except InvalidSpec as e:
        assert e.field == "m"
        return
    assert out == text.lower() and not int(out[:2], 16) & 1
    assert spec.mac(out, "m") == out


# ------------------------------------------------------------ mtu and vlan


@pytest.mark.parametrize("value", [0, 68, 1280, 1500, 9000, 65535])
def test_valid_mtus(value: int) -> None:
    assert spec.mtu(value, "spec.mtu") == value


@pytest.mark.parametrize("value", [-1, 1, 67, 65536, 1 << 32])
def test_invalid_mtus(value: int) -> None:
    e = refused(lambda: spec.mtu(value, "spec.mtu"))
    assert e.field == "spec.mtu" and "68..65535" in e.message


def test_ipv6_addresses_need_an_mtu_of_at_least_1280() -> None:
    e = refused(lambda: ep(mtu_value=1279, addresses=["198.18.0.2/24", "2001:db8::2/64"]))
    assert e.field == "spec.mtu" and "1280" in e.message
    assert ep(mtu_value=1280, addresses=["2001:db8::2/64"]).mtu == 1280
    assert ep(mtu_value=576, addresses=["198.18.0.2/24"]).mtu == 576
    assert ep(mtu_value=0, addresses=["2001:db8::2/64"]).mtu == 0  # default: resolved later


def test_ipv6_routes_need_an_mtu_of_at_least_1280() -> None:
    e = refused(lambda: ep(mtu_value=1000, routes=[("2001:db8:9::/48", "fe80::1", 0)]))
    assert e.field == "spec.mtu"


@pytest.mark.parametrize(
    "route",
    [
        ("2001:db8:9::/48", "fe80::1", 0),
        ("2001:db8:9::/48", "", 0),  # on-link: the destination is IPv6
        ("default", "2001:db8::1", 0),  # "default" takes the next hop's family
        ("::/0", "", 100),
    ],
)
def test_every_ipv6_route_needs_an_mtu_of_at_least_1280(route: tuple[str, str, int]) -> None:
    routes = [("198.19.0.0/16", "", 0), route]
    e = refused(lambda: ep(mtu_value=1279, routes=routes))
    assert e.field == "spec.mtu" and "1280" in e.message and "spec.routes[1]" in e.message
    assert len(ep(mtu_value=1280, routes=routes).routes) == 2
    assert len(ep(mtu_value=0, routes=routes).routes) == 2  # default: resolved later


def test_ipv4_routes_take_any_mtu() -> None:
    routes = [("198.19.0.0/16", "198.18.0.1", 0), ("default", "", 0)]
    assert ep(mtu_value=576, routes=routes).mtu == 576


@pytest.mark.parametrize("value", [0, 1, 100, 4094])
def test_valid_vlans(value: int) -> None:
    assert spec.vlan(value, "spec.vlan") == value
    assert ep(vlan_value=value).vlan == value


@pytest.mark.parametrize("value", [-1, 4095, 4096, 65536])
def test_invalid_vlans(value: int) -> None:
    e = refused(lambda: ep(vlan_value=value))
    assert e.field == "spec.vlan" and "1..4094" in e.message


# -------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    "text",
    [
        "198.18.0.10/24",
        "198.18.0.0/31",
        "198.18.0.1/31",
        "198.18.0.5/32",
        "198.18.255.254/17",
        "2001:db8::10/64",
        "2001:db8::1/128",
        "2001:db8::/127",
    ],
)
def test_valid_interface_addresses(text: str) -> None:
    assert spec.interface_address(text, "a") == ip(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("198.18.0.10", "no prefix length"),
        ("2001:db8::10", "no prefix length"),
        ("", "no prefix length"),
        ("198.18.0.0/24", "network address"),
        ("198.18.0.255/24", "broadcast address"),
        ("198.18.255.255/17", "broadcast address"),
        ("224.0.0.1/24", "not a usable"),
        ("ff02::1/64", "not a usable"),
        ("127.0.0.1/8", "not a usable"),
        ("::1/128", "not a usable"),
        ("0.0.0.0/0", "not a usable"),
        ("::/64", "not a usable"),
        ("198.18.0.10/33", "not an IP address/prefix"),
        ("198.18.0.10/-1", "not an IP address/prefix"),
        ("198.18.0.10/24/1", "not an IP address/prefix"),
        ("198.018.0.10/24", "not an IP address/prefix"),
        ("blue/24", "not an IP address/prefix"),
    ],
)
def test_invalid_interface_addresses(text: str, words: str) -> None:
    e = refused(lambda: spec.interface_address(text, "spec.addresses[0]"))
    assert e.field == "spec.addresses[0]" and words in e.message


def test_missing_prefix_hint_shows_the_fix() -> None:
    assert "198.18.0.10/24" in refused(lambda: spec.interface_address("198.18.0.10", "a")).hint


@given(st.text(max_size=60) | st.from_regex(r"[0-9.:a-f]{1,40}/[0-9]{1,3}", fullmatch=True))
def test_any_text_is_an_interface_address_or_invalid_spec(text: str) -> None:
    try:
        out = spec.interface_address(text, "a")
    except InvalidSpec as e:
        assert e.field == "a"
        return
    assert isinstance(out, ipaddress.IPv4Interface | ipaddress.IPv6Interface)
    assert not (out.ip.is_multicast or out.ip.is_loopback or out.ip.is_unspecified)
    assert not (out.version == 6 and out.ip.is_link_local) and "%" not in str(out)


@pytest.mark.parametrize(
    "call",
    [
        lambda: spec.interface_address("2001:db8::1%eth0/64", "a"),
        lambda: spec.ip_address("fe80::1%eth0", "a"),
        lambda: spec.destination("fe80::%eth0/64", "a"),
    ],
    ids=["interface_address", "ip_address", "destination"],
)
def test_ipv6_scope_ids_are_refused(call: Callable[[], Any]) -> None:
    e = refused(call)
    assert e.field == "a" and "scope id" in e.message


scoped = st.builds(
    lambda a, b: f"{a}%{b}",
    st.text(max_size=30) | st.sampled_from(["fe80::1", "2001:db8::1", "198.18.0.1", "default"]),
    st.text(max_size=30) | st.sampled_from(["eth0", "1", "", "eth0/64", "/64"]),
)


@given(scoped)
def test_any_text_with_a_percent_sign_is_refused_by_every_address_parser(text: str) -> None:
    parsers: list[Callable[[str, str], object]] = [
        spec.interface_address,
        spec.ip_address,
        spec.destination,
        lambda v, f: spec.destination(v, f, 6),
    ]
    for parse in parsers:
        with pytest.raises(InvalidSpec) as e:
            parse(text, "f")
        assert e.value.field == "f" and "scope id" in e.value.message


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"addresses": ["198.18.0.2/24", "2001:db8::2%eth1/64"]}, "spec.addresses[1]"),
        ({"addresses": ["2001:db8::2/64"], "gateways": ["fe80::1%eth1"]}, "spec.gateways[0]"),
        ({"routes": [("default", "fe80::1%eth1", 0)]}, "spec.routes[0].via"),
        ({"routes": [("2001:db8:9::%eth1/48", "", 0)]}, "spec.routes[0].destination"),
    ],
)
def test_scope_ids_are_refused_in_each_endpoint_field(kw: dict[str, Any], field: str) -> None:
    e = refused(lambda: ep(**kw))
    assert e.field == field and "scope id" in e.message


def test_scope_ids_are_refused_in_bridge_addresses() -> None:
    e = refused(lambda: spec.bridge_spec("br0", addresses=["2001:db8::1%br0/64"]))
    assert e.field == "spec.addresses[0]" and "scope id" in e.message


# ---------------------------------------------- link-local addresses (IPv6)


@pytest.mark.parametrize(
    "text", ["fe80::5/64", "fe80::1/128", "FE80::aa:bbff:fecc:ddee/64", "febf:ffff::1/10"]
)
def test_ipv6_link_local_interface_addresses_are_refused(text: str) -> None:
    e = refused(lambda: spec.interface_address(text, "spec.addresses[0]"))
    assert e.field == "spec.addresses[0]" and "link-local" in e.message
    assert "kernel" in e.message


def test_link_local_address_names_its_index_in_an_endpoint() -> None:
    e = refused(lambda: ep(addresses=["198.18.0.10/24", "fe80::5/64"]))
    assert e.field == "spec.addresses[1]" and "link-local" in e.message


@pytest.mark.parametrize("text", ["fec0::1/64", "fc00::1/64", "169.254.0.5/16"])
def test_neighbours_of_ipv6_link_local_are_still_accepted(text: str) -> None:
    # site-local (deprecated), unique-local and IPv4 link-local are not
    # addresses the kernel assigns by itself
    assert spec.interface_address(text, "a") == ip(text)


def test_link_local_next_hops_are_still_accepted() -> None:
    out = ep(
        addresses=["2001:db8::2/64"],
        gateways=["fe80::1"],
        routes=[("2001:db8:9::/48", "fe80::2", 0)],
    )
    assert out.gateways == (ipaddress.ip_address("fe80::1"),)
    assert out.routes[0].via == ipaddress.ip_address("fe80::2")


def test_duplicate_addresses_are_refused_by_ip() -> None:
    e = refused(lambda: ep(addresses=["198.18.0.2/24", "2001:db8::2/64", "198.18.0.2/16"]))
    assert e.field == "spec.addresses[2]"


def test_addresses_are_sorted_ipv4_first() -> None:
    out = ep(addresses=["2001:db8::2/64", "198.18.0.9/24", "198.18.0.2/24"]).addresses
    assert out == (ip("198.18.0.2/24"), ip("198.18.0.9/24"), ip("2001:db8::2/64"))


def test_address_limit() -> None:
    many = [f"10.0.{i // 250}.{i % 250 + 1}/16" for i in range(spec.MAX_ADDRESSES + 1)]
    assert len(ep(addresses=many[: spec.MAX_ADDRESSES]).addresses) == spec.MAX_ADDRESSES
    e = refused(lambda: ep(addresses=many))
    assert e.field == "spec.addresses" and str(spec.MAX_ADDRESSES) in e.message
    e = refused(lambda: spec.bridge_spec("br0", addresses=many))
    assert e.field == "spec.addresses"


def test_bad_address_names_its_index() -> None:
    assert refused(lambda: ep(addresses=["198.18.0.2/24", "x"])).field == "spec.addresses[1]"


# --------------------------------------------------------------- gateways


def test_one_gateway_per_family() -> None:
    out = ep(addresses=["198.18.0.2/24", "2001:db8::2/64"], gateways=["2001:db8::1", "198.18.0.1"])
    assert out.gateways == (ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("2001:db8::1"))
    e = refused(lambda: ep(addresses=["198.18.0.2/24"], gateways=["198.18.0.1", "198.18.0.3"]))
    assert e.field == "spec.gateways[1]" and "more than one IPv4" in e.message


def test_gateway_family_needs_an_address() -> None:
    e = refused(lambda: ep(addresses=["198.18.0.2/24"], gateways=["2001:db8::1"]))
    assert e.field == "spec.gateways[0]" and "no IPv6 address" in e.message
    assert "ADDRESS/PREFIX@GATEWAY" in e.hint
    assert refused(lambda: ep(gateways=["198.18.0.1"])).field == "spec.gateways[0]"


def test_gateway_is_not_an_own_address() -> None:
    e = refused(lambda: ep(addresses=["198.18.0.2/24"], gateways=["198.18.0.2"]))
    assert e.field == "spec.gateways[0]" and "own addresses" in e.message


@pytest.mark.parametrize(
    "gw", ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "gateway", "198.18.0.1/24"]
)
def test_unusable_gateways(gw: str) -> None:
    e = refused(lambda: ep(addresses=["198.18.0.2/24", "2001:db8::2/64"], gateways=[gw]))
    assert e.field == "spec.gateways[0]"


def test_gateway_outside_the_subnets_is_allowed() -> None:
    out = ep(addresses=["198.18.0.2/24"], gateways=["198.19.250.1"])
    assert out.gateways == (ipaddress.ip_address("198.19.250.1"),)


# ----------------------------------------------------------------- routes


def test_route_with_host_bits_set_gets_a_hint() -> None:
    e = refused(lambda: ep(routes=[("198.19.0.1/16", "", 0)]))
    assert e.field == "spec.routes[0].destination"
    assert "host bits" in e.message and e.hint == "did you mean 198.19.0.0/16?"


def test_route_families_must_match() -> None:
    e = refused(lambda: ep(routes=[("198.19.0.0/16", "2001:db8::1", 0)]))
    assert e.field == "spec.routes[0].via" and "different IP families" in e.message
    e = refused(lambda: ep(routes=[("2001:db8:9::/48", "198.18.0.1", 0)]))
    assert e.field == "spec.routes[0].via"


def test_default_route_takes_the_family_of_its_next_hop() -> None:
    (r,) = ep(routes=[("default", "2001:db8::1", 0)]).routes
    assert str(r.destination) == "::/0"
    (r,) = ep(routes=[("default", "", 0)]).routes
    assert str(r.destination) == "0.0.0.0/0" and r.via is None


def test_duplicate_routes_are_refused() -> None:
    e = refused(lambda: ep(routes=[("198.19.0.0/16", "", 0), ("198.19.0.0/16", "198.18.0.1", 0)]))
    assert e.field == "spec.routes[1]" and "repeats" in e.message
    # the same destination with another metric is another route
    assert len(ep(routes=[("198.19.0.0/16", "", 0), ("198.19.0.0/16", "", 10)]).routes) == 2
    # IPv6 metric 1024 is the kernel default, stored as 0: the same route
    e = refused(lambda: ep(routes=[("2001:db8:9::/48", "", 0), ("2001:db8:9::/48", "", 1024)]))
    assert e.field == "spec.routes[1]"


def test_default_route_and_gateway_of_one_family_conflict() -> None:
    addrs = ["198.18.0.2/24", "2001:db8::2/64"]
    e = refused(
        lambda: ep(addresses=addrs, gateways=["198.18.0.1"], routes=[("default", "198.18.0.9", 0)])
    )
    assert e.field == "spec.routes[0]" and "gateway" in e.message
    e = refused(lambda: ep(addresses=addrs, gateways=["198.18.0.1"], routes=[("0.0.0.0/0", "", 5)]))
    assert e.field == "spec.routes[0]"
    ok = ep(addresses=addrs, gateways=["198.18.0.1"], routes=[("default", "2001:db8::1", 0)])
    assert len(ok.routes) == 1


@pytest.mark.parametrize(
    ("addresses", "gateway", "dest"),
    [
        ("198.18.0.2/24", "198.19.250.1", "198.19.250.1/32"),
        ("2001:db8::2/64", "2001:db8:ffff::1", "2001:db8:ffff::1/128"),
        ("2001:db8::2/64", "fe80::1", "fe80::1/128"),  # link-local: off every subnet
    ],
)
@pytest.mark.parametrize("via", ["", "other"])
@pytest.mark.parametrize("metric", [0, 100, 1024])
def test_host_route_of_an_off_subnet_gateway_is_refused(
    addresses: str, gateway: str, dest: str, via: str, metric: int
) -> None:
    if via:
        via = "198.18.0.254" if "." in gateway else "2001:db8::fe"
    routes = [("198.19.192.0/24", "", 0), (dest, via, metric)]
    e = refused(lambda: ep(addresses=[addresses], gateways=[gateway], routes=routes))
    assert e.field == "spec.routes[1].destination"
    assert gateway in e.message and "netplumb adds" in e.message and "on-link" in e.message


def test_host_route_of_an_on_subnet_gateway_is_allowed() -> None:
    # no on-link route is added for a gateway inside an address's subnet
    out = ep(
        addresses=["198.18.0.2/24"],
        gateways=["198.18.0.1"],
        routes=[("198.18.0.1/32", "", 0)],
    )
    assert [str(r.destination) for r in out.routes] == ["198.18.0.1/32"]


def test_routes_near_an_off_subnet_gateway_are_allowed() -> None:
    routes = [("198.19.250.0/24", "198.18.0.254", 0), ("198.19.250.2/32", "", 0)]
    out = ep(addresses=["198.18.0.2/24"], gateways=["198.19.250.1"], routes=routes)
    assert len(out.routes) == 2
    # without the gateway, its host route is an ordinary route
    assert len(ep(addresses=["198.18.0.2/24"], routes=[("198.19.250.1/32", "", 0)]).routes) == 1


@pytest.mark.parametrize(
    ("route", "field"),
    [
        (("198.19.0.0/16", "::", 0), "spec.routes[0].via"),
        (("198.19.0.0/16", "224.0.0.1", 0), "spec.routes[0].via"),
        (("198.19.0.0/16", "x", 0), "spec.routes[0].via"),
        (("nowhere", "", 0), "spec.routes[0].destination"),
        (("198.19.0.0/16", "", 1 << 32), "spec.routes[0].metric"),
        (("198.19.0.0/16", "", -1), "spec.routes[0].metric"),
    ],
)
def test_route_fields(route: tuple[str, str, int], field: str) -> None:
    assert refused(lambda: ep(routes=[route])).field == field


def test_route_limit() -> None:
    routes = [(f"10.{i // 256}.{i % 256}.0/24", "", 0) for i in range(spec.MAX_ROUTES + 1)]
    assert len(ep(routes=routes[: spec.MAX_ROUTES]).routes) == spec.MAX_ROUTES
    assert refused(lambda: ep(routes=routes)).field == "spec.routes"


# ----------------------------------------------------- whole specs, bridges


def test_endpoint_defaults() -> None:
    out = ep()
    assert (out.ifname, out.host_ifname, out.mac, out.mtu, out.vlan) == ("eth1", None, None, 0, 0)
    assert out.addresses == out.gateways == out.routes == ()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"bridge": ""}, "spec.bridge"),
        ({"bridge": "a" * 16}, "spec.bridge"),
        ({"ifname_value": "eth 1"}, "spec.ifname"),
        ({"host_ifname": "np/1"}, "spec.host_ifname"),
        ({"mac_value": "01:00:00:00:00:01"}, "spec.mac"),
        ({"mtu_value": 20}, "spec.mtu"),
        ({"vlan_value": 5000}, "spec.vlan"),
    ],
)
def test_each_endpoint_field_is_named_in_its_error(kw: dict[str, Any], field: str) -> None:
    assert refused(lambda: ep(**kw)).field == field


def test_bridge_spec() -> None:
    out = spec.bridge_spec("br0", addresses=["2001:db8::1/64", "198.18.0.1/24"], mtu_value=9000)
    assert out.kind is BridgeKind.LINUX and out.mtu == 9000
    assert out.addresses == (ip("198.18.0.1/24"), ip("2001:db8::1/64"))
    assert spec.bridge_spec("br0", vni=42).tunnel == "vxlan"
    assert spec.bridge_spec("br0", kind="ovs", vni=42, tunnel="geneve").tunnel == "geneve"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": ""}, "spec.name"),
        ({"name": "bridge-number-one"}, "spec.name"),
        ({"name": "br0", "kind": "vde"}, "spec.kind"),
        ({"name": "br0", "mtu_value": 65536}, "spec.mtu"),
        ({"name": "br0", "vni": 1 << 24}, "spec.vni"),
        ({"name": "br0", "vni": -1}, "spec.vni"),
        ({"name": "br0", "tunnel": "vxlan"}, "spec.tunnel"),
        ({"name": "br0", "vni": 5, "tunnel": "ipip"}, "spec.tunnel"),
        ({"name": "br0", "addresses": ["198.18.0.0/24"]}, "spec.addresses[0]"),
        ({"name": "br0", "addresses": ["198.18.0.1/24", "198.18.0.1/16"]}, "spec.addresses[1]"),
    ],
)
def test_each_bridge_field_is_named_in_its_error(kw: dict[str, Any], field: str) -> None:
    assert refused(lambda: spec.bridge_spec(**kw)).field == field


maybe_text = st.text(max_size=12) | st.sampled_from(["", "br0", "eth1", "198.18.0.1", "default"])


@settings(max_examples=150)
@given(
    bridge=maybe_text,
    ifname=maybe_text,
    mac=maybe_text,
    mtu=st.integers(-5, 70000),
    vlan=st.integers(-5, 5000),
    addresses=st.lists(
        maybe_text | st.sampled_from(["198.18.0.2/24", "2001:db8::2/64"]), max_size=3
    ),
    gateways=st.lists(maybe_text, max_size=2),
    routes=st.lists(st.tuples(maybe_text, maybe_text, st.integers(-1, 2**33)), max_size=2),
)
def test_endpoint_spec_only_ever_raises_invalid_spec(
    bridge: str,
    ifname: str,
    mac: str,
    mtu: int,
    vlan: int,
    addresses: list[str],
    gateways: list[str],
    routes: list[tuple[str, str, int]],
) -> None:
    try:
        out = ep(
            bridge=bridge,
            ifname_value=ifname,
            mac_value=mac,
            mtu_value=mtu,
            vlan_value=vlan,
            addresses=addresses,
            gateways=gateways,
            routes=routes,
        )
    except InvalidSpec as e:
        assert e.field.startswith("spec.")
        return
    # What validates is canonical: validating it again changes nothing.
    again = ep(
        bridge=out.bridge,
        ifname_value=out.ifname,
        mac_value=out.mac or "",
        mtu_value=out.mtu,
        vlan_value=out.vlan,
        addresses=[str(a) for a in out.addresses],
        gateways=[str(g) for g in out.gateways],
        routes=[(str(r.destination), str(r.via or ""), r.metric) for r in out.routes],
    )
    assert again == out


def test_link_local_is_allowed_on_bridges_but_not_in_guests() -> None:
    """A bridge may carry a fixed fe80::1 as the guests' IPv6 gateway; a
    guest's link-local address is the kernel's business."""
    b = spec.bridge_spec("br0", addresses=["fe80::1/64", "2001:db8::1/64"])
    assert ipaddress.ip_interface("fe80::1/64") in b.addresses
    with pytest.raises(InvalidSpec) as e:
        spec.endpoint_spec(
            bridge="br0", guest_ref=spec.guest("netns:blue"), addresses=["fe80::5/64"]
        )
    assert e.value.field == "spec.addresses[0]"
