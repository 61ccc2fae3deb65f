"""Deterministic names, MACs and ownership tags."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netplumb.agent.core import naming, spec
from netplumb.agent.core.model import GuestKind, GuestRef
from netplumb.cli.pipework import pipework_mac

guests = st.builds(
    GuestRef,
    st.sampled_from(list(GuestKind)),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,30}", fullmatch=True),
)
ifnames = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}", fullmatch=True)


def test_endpoint_id_is_16_hex_digits_and_stable() -> None:
    g = GuestRef(GuestKind.NETNS, "blue")
    eid = naming.endpoint_id(g, "eth1")
    assert re.fullmatch(r"[0-9a-f]{16}", eid)
    assert eid == naming.endpoint_id(GuestRef(GuestKind.NETNS, "blue"), "eth1")
    assert eid == hashlib.sha256(b"netns:blue\0eth1").hexdigest()[:16]


def test_endpoint_id_follows_the_canonical_guest() -> None:
    ids = {naming.endpoint_id(spec.guest(t), "eth1") for t in ("blue", "/run/netns/blue")}
    assert len(ids) == 1


@given(guests, ifnames, guests, ifnames)
def test_endpoint_ids_are_distinct_for_distinct_endpoints(
    g1: GuestRef, i1: str, g2: GuestRef, i2: str
) -> None:
    same = naming.endpoint_id(g1, i1) == naming.endpoint_id(g2, i2)
    assert same == ((g1.key, i1) == (g2.key, i2))


def test_kind_is_part_of_the_identity() -> None:
    a = naming.endpoint_id(GuestRef(GuestKind.NETNS, "42"), "eth1")
    b = naming.endpoint_id(GuestRef(GuestKind.PID, "42"), "eth1")
    assert a != b


@given(guests, ifnames)
def test_host_ifname_is_a_valid_name_within_ifnamsiz(g: GuestRef, ifname: str) -> None:
    eid = naming.endpoint_id(g, ifname)
    name = naming.host_ifname(eid)
    assert name == "np" + eid[:12]
    assert len(name.encode()) == 14 <= spec.IFNAMSIZ
    assert spec.ifname(name, "host_ifname") == name


@given(st.from_regex(r"[0-9a-f]{16}", fullmatch=True))
def test_stable_mac_is_locally_administered_unicast(eid: str) -> None:
    mac = naming.stable_mac(eid)
    first = int(mac[:2], 16)
    assert first & 0b10  # locally administered
    assert not first & 0b01  # unicast
    assert spec.mac(mac, "mac") == mac  # valid and already canonical
    assert mac == naming.stable_mac(eid)


def test_stable_macs_differ_between_endpoints() -> None:
    macs = {naming.stable_mac(f"{i:016x}") for i in range(2000)}
    assert len(macs) == 2000


def test_pipework_mac_literal() -> None:
    # echo foo | md5sum -> d3b07384d113edec49eaa6238ad5ff00
    assert pipework_mac("foo") == "02:d3:b0:73:84:d1"


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
def test_pipework_mac_matches_pipeworks_definition(seed: str) -> None:
    digest = hashlib.md5((seed + "\n").encode("utf-8")).hexdigest()
    expected = "02:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))
    assert pipework_mac(seed) == expected
    assert spec.mac(expected, "mac") == expected


def test_aliases_carry_the_endpoint_and_the_agent() -> None:
    alias = naming.endpoint_alias("0123456789abcdef", "a9e7c0de")
    assert alias.startswith(naming.TAG + ":") and naming.is_ours(alias)
    assert naming.parse_endpoint_alias(alias) == ("0123456789abcdef", "a9e7c0de")
    assert naming.endpoint_alias("0123456789abcdef", "other") != alias
    assert naming.is_ours(naming.bridge_alias("a9e7c0de"))
    assert naming.bridge_alias("a9e7c0de") != naming.bridge_alias("other")


@pytest.mark.parametrize(
    "alias",
    [
        "",
        "netplumb",
        "netplumb:br:a9e7c0de",
        "netplumb:ep:0123:a9e7c0de",
        "netplumb:ep:0123456789abcdef",
        "other:ep:0123456789abcdef:a9e7c0de",
        "docker0",
    ],
)
def test_other_aliases_are_not_endpoint_aliases(alias: str) -> None:
    assert naming.parse_endpoint_alias(alias) is None


def test_only_our_tag_is_ours() -> None:
    assert not naming.is_ours("")
    assert not naming.is_ours("netplumber")
    assert not naming.is_ours("some bridge")


def test_agent_ids_are_random_hex() -> None:
    ids = {naming.new_agent_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)
    for i in ids:
        assert naming.parse_endpoint_alias(naming.endpoint_alias("0" * 16, i)) == ("0" * 16, i)
