"""Hostile input, the API: every RPC of the Agent service gets random and
malformed requests (wrong wire types, unknown fields, out-of-range enums and
integers, unicode, path tricks in guest references, oversize messages, bytes
that are no protobuf at all). The daemon must stay up, never answer UNKNOWN
or INTERNAL to a request that decodes, refuse every poisoned one, and leave
the host and its store as they were. See fixtures/fuzz.py."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from fixtures.fuzz import (
    ADDRS_OK,
    COMMAND_WORDS,
    EGROUP,
    HEALTH_CHECK,
    I32,
    IPS_OK,
    LEN,
    MAX_MESSAGE,
    METHODS,
    SEED_PEER,
    SEED_PEER_NAME,
    SEED_V4,
    SEED_V6,
    SGROUP,
    Case,
    FuzzHost,
    bad_addresses,
    bad_destinations,
    bad_guests,
    bad_ifnames,
    bad_ips,
    bad_macs,
    bad_peer_names,
    decodes,
    emit,
    enc,
    fuzz_host,
    fuzz_settings,
    i32,
    ifnames,
    junk,
    numbers_where,
    record,
    request_class,
    request_soup,
    soup,
    u32,
)
from hypothesis import given
from hypothesis import strategies as st
from netplumb.v1 import agent_pb2 as pb


@pytest.fixture(scope="module")
def fz() -> Iterator[FuzzHost]:
    with fuzz_host() as host:
        yield host


# ----------------------------------------------------------------- poisons
#
# One field that the API's documented rules make invalid, appended after the
# rest of the request: a later scalar wins and sub-messages merge, so the
# poison survives whatever the soup before it holds.

E, B, R = pb.EndpointSpec, pb.BridgeSpec, pb.Route
P, G = pb.AddPeerRequest, pb.GuestCommandRequest


def _enum_values(message: Any, name: str) -> frozenset[int]:
    """The values an enum field defines (from the descriptor, so that a value
    the API adds later is not mistaken for a bad one)."""
    return frozenset(v.number for v in message.DESCRIPTOR.fields_by_name[name].enum_type.values)


def _bad_enum(message: Any, name: str) -> st.SearchStrategy[bytes]:
    known = _enum_values(message, name)
    return numbers_where(lambda n: i32(n) not in known).map(lambda n: enc(message, **{name: n}))


def _many(n: int, template: str) -> list[str]:
    return [template.format(i // 250, i % 250 + 1) for i in range(n)]


def _bad_mtu(n: int) -> bool:
    return u32(n) != 0 and not 68 <= u32(n) <= 65535


# Words handed to `ip rule` / `tc` that must be refused: a word that is
# empty, longer than 256 or not printable, more than 64 words (proto
# GuestCommandRequest, "no shell": an argument list, bounded and printable).
BAD_WORD_LISTS = st.one_of(
    st.lists(st.sampled_from(COMMAND_WORDS), max_size=4).map(lambda w: [*w, ""]),
    st.lists(st.sampled_from(COMMAND_WORDS), max_size=4).map(lambda w: [*w, "x" * 257]),
    st.sampled_from(["a\0b", "a\nb", "\x1b[2J", "a\tb", "\u202e", "\x7f"]).map(
        lambda c: ["add", c]
    ),
    st.integers(65, 200).map(lambda n: ["from"] * n),
)

ENDPOINT_POISONS = st.one_of(
    bad_ifnames(allow_empty=True).map(lambda v: enc(E, bridge=v)),
    bad_guests().map(lambda v: enc(E, guest=v)),
    bad_ifnames().map(lambda v: enc(E, ifname=v)),
    bad_ifnames().map(lambda v: enc(E, host_ifname=v)),
    bad_macs().map(lambda v: enc(E, mac=v)),
    numbers_where(_bad_mtu).map(lambda n: enc(E, mtu=n)),
    numbers_where(lambda n: u32(n) > 4094).map(lambda n: enc(E, vlan=n)),
    bad_addresses().map(lambda v: enc(E, addresses=v)),
    st.sampled_from(ADDRS_OK).map(lambda v: enc(E, addresses=[v, v])),
    st.integers(65, 400).map(lambda n: enc(E, addresses=_many(n, "198.18.{}.{}/16"))),
    bad_ips().map(lambda v: enc(E, gateways=v)),
    st.just(enc(E, gateways=["198.18.0.1", "198.18.0.2"])),
    bad_destinations().map(lambda v: enc(E, routes=enc(R, destination=v))),
    bad_ips().filter(bool).map(lambda v: enc(E, routes=enc(R, destination="198.19.0.0/16", via=v))),
    st.just(enc(E, routes=enc(R, destination="198.19.0.0/16", via="2001:db8::1"))),
    st.integers(257, 400).map(
        lambda n: enc(E, routes=[enc(R, destination=f"198.19.{i}.0/24") for i in range(n)])
    ),
    # cluster mode is not implemented: a name is refused
    st.text(min_size=1, max_size=24).map(lambda v: enc(E, name=v)),
    # a DHCP client netplumb does not run
    st.text(max_size=16)
    .filter(lambda c: c not in ("dhcp", "udhcpc", "dhclient", "dhcpcd"))
    .map(lambda c: enc(E, dhcp=enc(pb.Dhcp, client=c))),
    BAD_WORD_LISTS.map(lambda w: enc(E, dhcp=enc(pb.Dhcp, client="udhcpc", options=w))),
    *([_bad_enum(E, "kind")] if "kind" in E.DESCRIPTOR.fields_by_name else []),
)

BRIDGE_POISONS = st.one_of(
    bad_ifnames(allow_empty=True).map(lambda v: enc(B, name=v)),
    _bad_enum(B, "kind"),
    _bad_enum(B, "tunnel"),
    numbers_where(lambda n: u32(n) > (1 << 24) - 1).map(lambda n: enc(B, vni=n)),
    numbers_where(_bad_mtu).map(lambda n: enc(B, mtu=n)),
    bad_addresses(link_local_ok=True).map(lambda v: enc(B, addresses=v)),
    st.sampled_from(ADDRS_OK).map(lambda v: enc(B, addresses=[v, v])),
    st.integers(65, 400).map(lambda n: enc(B, addresses=_many(n, "198.18.{}.{}/16"))),
    st.sampled_from([1, 2, 3]).map(lambda t: enc(B, tunnel=t, vni=0)),
)

ROUTE_POISONS = st.one_of(
    bad_guests().map(lambda v: enc(pb.AddRouteRequest, guest=v)),
    bad_ifnames().map(lambda v: enc(pb.AddRouteRequest, ifname=v)),
    bad_destinations().map(lambda v: enc(pb.AddRouteRequest, route=enc(R, destination=v))),
    bad_ips().filter(bool).map(lambda v: enc(pb.AddRouteRequest, route=enc(R, via=v))),
)

PEER_POISONS = st.one_of(
    bad_ips(peer=True).map(lambda v: enc(P, address=v)),
    bad_peer_names().map(lambda v: enc(P, name=v)),
)

# ip rule / tc words that the documented grammar refuses (proto
# GuestCommandRequest): unknown keywords, a keyword without its value, bad
# prefixes and numbers, mixed families; a tc object or verb it does not
# record, no "dev IF" after the verb.
BAD_RULES = st.one_of(
    BAD_WORD_LISTS,
    st.sampled_from(
        [
            ["add", "blackhole"],
            ["add", "nat", "198.18.0.1"],
            ["add", "from"],
            ["add", "from", "198.18.0.0/33"],
            ["add", "from", "198.18.0.0%1/24"],
            ["add", "to", "not-a-prefix"],
            ["add", "fwmark", "0x1ffffffff"],
            ["add", "fwmark", "ten"],
            ["add", "fwmark", "1/-1"],
            ["add", "priority", "-1"],
            ["add", "priority", "4294967296"],
            ["add", "table", "99999999999"],
            ["add", "table", "nosuchtable"],
            ["add", "iif", "x" * 16],
            ["add", "oif", "a/b"],
            ["add", "from", "198.18.0.0/24", "to", "2001:db8::/64"],
            ["-6", "from", "198.18.0.0/24"],
            ["-4", "to", "2001:db8::/64"],
            ["show"],
            ["flush"],
        ]
    ),
)
BAD_TC = st.one_of(
    BAD_WORD_LISTS,
    st.sampled_from(
        [
            [],
            ["qdisc"],
            ["qdisc", "add", "dev"],
            ["qdisc", "show", "dev", "eth1"],
            ["qdisc", "add", "eth1", "root"],
            ["qdisc", "add", "dev", "x" * 16, "root", "netem"],
            ["qdisc", "add", "dev", "a/b", "root"],
            ["action", "add", "dev", "eth1"],
            ["-batch", "/etc/passwd", "dev", "eth1"],
            ["monitor", "add", "dev", "eth1"],
            ["filter", "flush", "dev", "eth1"],
        ]
    ),
)


def guest_command_poisons() -> st.SearchStrategy[bytes]:
    return st.one_of(
        bad_guests().map(lambda v: enc(G, guest=v)),
        bad_ifnames().map(lambda v: enc(G, ifname=v)),
        st.text(max_size=12)
        .filter(lambda t: t not in ("rule", "tc"))
        .map(lambda t: enc(G, tool=t)),
        BAD_RULES.map(lambda w: enc(G, tool="rule", args=w)),
        BAD_TC.map(lambda w: enc(G, tool="tc", args=w)),
    )


POISONS: dict[str, st.SearchStrategy[bytes]] = {
    "Attach": ENDPOINT_POISONS.map(lambda b: enc(pb.AttachRequest, spec=b)),
    "CreateBridge": BRIDGE_POISONS.map(lambda b: enc(pb.CreateBridgeRequest, spec=b)),
    "AddRoute": ROUTE_POISONS,
    "AddPeer": PEER_POISONS,
    "AddPeers": st.one_of(
        PEER_POISONS.map(lambda b: enc(pb.AddPeersRequest, peers=b)),
        st.integers(4097, 5000).map(
            lambda n: enc(pb.AddPeersRequest, peers=[enc(P, address="198.18.0.9")] * n)
        ),
    ),
}
if "GuestCommand" in METHODS:
    POISONS["GuestCommand"] = guest_command_poisons()
# Not implemented in this version: every request must be refused.
ALWAYS_REFUSED = frozenset({"CreateNetwork", "DeleteNetwork", "ListNetworks"})


def share(method: str, total: int) -> int:
    """Examples for one method out of ``total``: requests without fields
    (ListBridges, Check, Reconcile...) have little to vary, and Check and
    Reconcile cost a full observation of the host each."""
    empty = [m for m in METHODS if not request_class(m).DESCRIPTOR.fields]
    if method in empty:
        return max(1, total // 100)
    return max(1, (total - len(empty) * (total // 100)) // (len(METHODS) - len(empty)))


@st.composite
def soup_cases(draw: Any, method: str) -> Case:
    data = draw(request_soup(method))
    poison = POISONS.get(method)
    if poison is not None:
        data += draw(poison)
        if draw(st.integers(0, 4)) == 0:
            data += draw(junk())
    return Case(method, data, must_fail=poison is not None or method in ALWAYS_REFUSED)


def test_fuzz_every_rpc_with_hostile_fields(fz: FuzzHost) -> None:
    """Every RPC, every field: values from pools of valid, near-valid and
    hostile ones; the mutating RPCs that create things always carry one
    poisoned field."""
    before = fz.mark()
    for method in METHODS:

        @fuzz_settings(max_examples=share(method, 1800))
        @given(soup_cases(method))
        def case(c: Case) -> None:
            fz.send(c)

        case()
    print(fz.summary("RPC cases with hostile fields", before))
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------------ deeper: seeded objects


def _seeded_guests(fz: FuzzHost) -> list[str]:
    g = fz.guest_ns
    return [f"netns:{g}", g, f"/run/netns/{g}", f"/var/run/netns/{g}", f"path:/run/netns/{g}"]


def _not_netns(fz: FuzzHost) -> list[str]:
    """Guest references that pass validation but are no network namespace
    (or the daemon's own): the attach gets as far as opening them. Never
    pid:1 here: the daemon runs in a namespace of its own, so init's is
    another namespace, and a valid attach into it would succeed."""
    return [
        "path:/etc/passwd",
        "/etc/passwd",
        "/dev/null",
        "path:/dev/null",
        "/proc/1/ns/mnt",
        "/proc/self/ns/uts",
        "path:/proc/1/ns/pid",
        "/proc/1/ns/user",
        "/proc/self/ns/net",
        "/proc/thread-self/ns/net",
        fz.fifo,
        "path:" + fz.fifo,
        "path:" + fz.daemon.dir,
        "/sys/kernel",
        "/proc/kcore",
        "/proc/self/fd/0",
        "/proc/self/exe",
        "/",
        "/proc/4194304/ns/net",
        "pid:4194304",
        "netns:npfz-nosuch",
        "/run/netns/npfz-nosuch",
        "npfz-nosuch",
        "docker:npfz-nosuch",
    ]


def _valid_endpoint_fields() -> st.SearchStrategy[dict[str, Any]]:
    """Valid fields of an attach to the seeded bridge (its subnet)."""
    return st.fixed_dictionaries(
        {"ifname": st.sampled_from(["eth1", "eth2", "x" * 15, "net0.1"])},
        optional={
            "addresses": st.lists(
                st.integers(20, 199).map(lambda i: f"{SEED_V4}{i}/24"), max_size=3, unique=True
            ),
            "mac": st.sampled_from(["02:00:00:00:77:01", "0a:00:00:00:00:01"]),
            "mtu": st.sampled_from([0, 1280, 1400, 1500, 9000]),
            "vlan": st.sampled_from([0, 1, 100, 4094]),
            "routes": st.just(enc(R, destination="198.19.78.0/24", via=SEED_V4 + "254")),
        },
    )


def _attach(**fields: Any) -> bytes:
    return enc(pb.AttachRequest, spec=enc(E, **fields))


def _parent_cases(
    fz: FuzzHost, valid: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[Case]:
    """Macvlan and phys endpoints (a host interface as the parent) that
    must be refused: a parent that is a bridge, netplumb's, or missing; a
    guest that is no namespace; or a real guest where the interface name is
    taken ("lo"), after the macvlan is made or the interface moved: rolled
    back, the interface back in the host under its own name."""
    kinds = {v.name: v.number for v in E.DESCRIPTOR.fields_by_name["kind"].enum_type.values}
    macvlan, phys = kinds.get("ENDPOINT_KIND_MACVLAN"), kinds.get("ENDPOINT_KIND_PHYS")
    usable = [fz.foreign_veth, f"mac:{fz.foreign_mac}"]
    refused_parents = [fz.bridge, fz.foreign_bridge, "npfz-none", "mac:02:00:00:00:fe:fe", "lo"]

    def spec(fields: dict[str, Any], kind: int, parent: str, guest: str, lo: bool) -> bytes:
        fields = {k: v for k, v in fields.items() if k != "routes"}
        if lo:
            fields["ifname"] = "lo"
        return _attach(kind=kind, parent=parent, guest=guest, **fields)

    spare = f"netns:{fz.spare_ns}"
    return st.one_of(
        # a parent the daemon must refuse, whatever the guest
        st.builds(
            spec,
            valid,
            st.sampled_from([k for k in (macvlan, phys) if k is not None]),
            st.sampled_from(refused_parents),
            st.sampled_from([spare, *_not_netns(fz)]),
            st.booleans(),
        ),
        # a usable parent, but a guest that is no namespace, or "lo" taken
        st.builds(
            spec,
            valid,
            st.sampled_from([k for k in (macvlan, phys) if k is not None]),
            st.sampled_from(usable),
            st.sampled_from(_not_netns(fz)),
            st.booleans(),
        ),
        st.builds(
            spec,
            valid,
            st.sampled_from([k for k in (macvlan, phys) if k is not None]),
            st.sampled_from(usable),
            st.just(spare),
            st.just(True),
        ),
    ).map(lambda data: Case("Attach", data, must_fail=True))


def deep_cases(fz: FuzzHost) -> st.SearchStrategy[Case]:
    """Requests that get past validation to the engine: at the seeded
    bridge, endpoint and peer, or into guests that are no namespace. Each is
    refused (must_fail) or a no-op (must_not_change)."""
    seeded = st.sampled_from(_seeded_guests(fz))
    valid = _valid_endpoint_fields()

    def refused(method: str) -> Any:
        return lambda data: Case(method, data, must_fail=True)

    def no_op(method: str) -> Any:
        return lambda data: Case(method, data, must_not_change=True)

    # attach into something that is not a network namespace
    not_netns = st.builds(
        lambda f, g: _attach(bridge=fz.bridge, guest=g, **f),
        valid,
        st.sampled_from(_not_netns(fz)),
    ).map(refused("Attach"))
    # the seeded endpoint with another spec: a conflict
    conflict = st.builds(
        lambda f, g: _attach(
            bridge=fz.bridge, guest=g, **{**f, "ifname": "eth1", "addresses": [SEED_V4 + "11/24"]}
        ),
        valid,
        seeded,
    ).map(refused("Attach"))
    # a real, empty namespace, but a name in the way: refused and rolled back
    in_the_way = st.builds(
        lambda f, which, name: _attach(
            bridge=fz.bridge,
            guest=f"netns:{fz.spare_ns}",
            **{**f, **({"ifname": "lo"} if which else {"host_ifname": name})},
        ),
        valid,
        st.booleans(),
        st.sampled_from(["lo", fz.bridge, fz.foreign_bridge]),
    ).map(refused("Attach"))
    # the seeded bridge in other spellings
    misspelt = (
        st.sampled_from([fz.bridge.upper(), fz.bridge + " ", fz.bridge + "\0"])
        .map(lambda b: _attach(bridge=b, guest=f"netns:{fz.spare_ns}", addresses=SEED_V4 + "30/24"))
        .map(refused("Attach"))
    )
    # routes on the seeded endpoint that must be refused
    bad_route = st.one_of(
        bad_destinations().map(lambda d: enc(R, destination=d)),
        bad_ips().filter(bool).map(lambda v: enc(R, destination="198.19.0.0/16", via=v)),
        st.sampled_from(
            [
                enc(R, destination="default", via=SEED_V4 + "254"),  # the gateway's
                enc(R, destination="198.19.77.0/24", via=SEED_V4 + "253"),  # the seeded one's
                enc(R, destination="198.19.0.0/16", via=SEED_V6 + "1"),
                enc(R, destination="2001:db8:1::/48", via=SEED_V4 + "1"),
            ]
        ),
    )
    add_route = st.builds(
        lambda g, i, r: enc(pb.AddRouteRequest, guest=g, ifname=i, route=r),
        seeded,
        st.sampled_from(["", "eth1"]),
        bad_route,
    ).map(refused("AddRoute"))
    # delete routes from the seeded endpoint: refused or a no-op
    del_route = st.builds(
        lambda g, d: enc(pb.DeleteRouteRequest, guest=g, destination=d),
        seeded,
        st.one_of(
            bad_destinations(),
            st.sampled_from(["198.19.0.0/16", "0.0.0.0/0", "::/0", "2001:db8:9::/48"]),
        ),
    ).map(no_op("DeleteRoute"))
    # the seeded guest with other interface names
    other_ifname = st.builds(
        lambda m, g, i: Case(m, enc(request_class(m), guest=g, ifname=i), must_not_change=True),
        st.sampled_from(
            ["Detach", "GetEndpoint", "DeleteRoute", "AddRoute"]
            + (["GuestCommand"] if "GuestCommand" in METHODS else [])
        ),
        seeded,
        ifnames().filter(lambda i: i not in ("", "eth1")),
    )
    # the seeded bridge: in use; the foreign one: not ours
    del_bridge = (
        st.sampled_from([fz.bridge, fz.foreign_bridge, fz.bridge.upper()])
        .map(lambda n: enc(pb.DeleteBridgeRequest, name=n))
        .map(no_op("DeleteBridge"))
    )
    # the seeded bridge's name with any spec: a conflict or a no-op
    re_create = (
        soup(B.DESCRIPTOR)
        .map(lambda b: enc(pb.CreateBridgeRequest, spec=b + enc(B, name=fz.bridge)))
        .map(no_op("CreateBridge"))
    )
    # near misses of the seeded peer
    remove_peer = (
        st.sampled_from(
            [
                f" {SEED_PEER}",
                f"{SEED_PEER}\0",
                f"{SEED_PEER}/32",
                f"::ffff:{SEED_PEER}",
                SEED_PEER.replace(".77.", ".077."),
                SEED_PEER_NAME.upper(),
                f"{SEED_PEER_NAME} ",
                f"{SEED_PEER_NAME}\u200b",
                SEED_PEER_NAME[:-1],
            ]
        )
        .map(lambda p: enc(pb.RemovePeerRequest, peer=p))
        .map(no_op("RemovePeer"))
    )
    # the seeded peer under another name; this host's own addresses
    bad_peer = st.sampled_from(
        [
            enc(P, address=SEED_PEER, name="other"),
            enc(P, address=SEED_V4 + "1"),
            enc(P, address=SEED_V6 + "1"),
        ]
    )
    add_peer = bad_peer.map(refused("AddPeer"))
    add_peers = st.builds(
        lambda others, bad: enc(
            pb.AddPeersRequest, peers=[*(enc(P, address=a) for a in others), bad]
        ),
        st.lists(st.sampled_from(IPS_OK), max_size=3),
        bad_peer,
    ).map(refused("AddPeers"))
    # list and get with the seeded names and hostile filters
    lists = st.one_of(
        st.builds(
            lambda b, g: enc(pb.ListEndpointsRequest, bridge=b, guest=g),
            st.one_of(st.sampled_from([fz.bridge, fz.foreign_bridge]), ifnames()),
            st.one_of(seeded, bad_guests()),
        ).map(lambda d: Case("ListEndpoints", d)),
        st.one_of(seeded, bad_guests())
        .map(lambda g: enc(pb.GetEndpointRequest, guest=g))
        .map(lambda d: Case("GetEndpoint", d)),
    )
    # detach guests that have nothing attached, by every spelling
    detach = (
        st.sampled_from([*_not_netns(fz), f"netns:{fz.spare_ns}", "pid:1"])
        .map(lambda g: enc(pb.DetachRequest, guest=g))
        .map(no_op("Detach"))
    )
    # check, reconcile and status with unknown fields: no-ops
    no_ops = st.builds(
        lambda m, parts: Case(m, b"".join(parts), must_not_change=True),
        st.sampled_from(["Check", "Reconcile", "GetStatus", "ListPeers", "ListBridges"]),
        st.lists(junk(), max_size=3),
    )
    cases = [not_netns, conflict, in_the_way, misspelt, add_route, del_route, other_ifname]
    if "parent" in E.DESCRIPTOR.fields_by_name:
        cases.append(_parent_cases(fz, valid))
    cases += [del_bridge, re_create, remove_peer, add_peer, add_peers, lists, detach, no_ops]
    if "GuestCommand" in METHODS:
        # rule and tc commands the grammar refuses, on the seeded endpoint
        cases.append(
            st.builds(
                lambda g, tool_args: enc(G, guest=g, tool=tool_args[0], args=tool_args[1]),
                seeded,
                st.one_of(
                    BAD_RULES.map(lambda w: ("rule", w)),
                    BAD_TC.map(lambda w: ("tc", w)),
                    st.sampled_from(["", "ip", "sh", "RULE", "tc "]).map(lambda t: (t, ["add"])),
                ),
            ).map(refused("GuestCommand"))
        )
    return st.one_of(cases)


def test_fuzz_requests_reaching_the_engine(fz: FuzzHost) -> None:
    """Requests at the seeded bridge, endpoint and peer, and guests that
    pass validation but are no network namespace (a FIFO, /dev/null, a mount
    namespace, /proc/kcore, the daemon's own namespace): refused or no-ops,
    and a refused attach into a real namespace is rolled back."""
    before = fz.mark()

    @fuzz_settings(max_examples=600)
    @given(deep_cases(fz))
    def case(c: Case) -> None:
        fz.send(c)

    case()
    print(fz.summary("RPC cases reaching the engine", before))
    fz.assert_healthy_and_unchanged()


# The tricks issue 5 names, every one through every RPC that takes it.
LISTED_GUESTS = (
    "netns:../../etc",
    "netns:..",
    "netns:a/b",
    "/run/netns/../x",
    "/run/netns/../../etc/passwd",
    "/proc/1/ns/net",
    "/proc/1/../1/ns/net",
    "pid:0",
    "pid:-1",
    "pid:1.5",
    "pid:\u0661",
    "docker:",
    "docker:../../x",
    "docker:a/b",
    "docker:a b",
    "docker:-x",
    "docker:%00",
    "docker:" + "f" * 300,
    "netns:a\0b",
    "netns:\u202eblue",
    "/" + "a" * 5000,
)
LISTED_IFNAMES = (
    "x" * 16,
    "\u00e9" * 8,
    "a/b",
    "a b",
    "eth%d",
    "%",
    "eth1\0",
    "\0",
    "\u202eeth1",
    "eth1\n",
    "..",
    "-x",
)


def test_fuzz_listed_path_tricks(fz: FuzzHost) -> None:
    """Path tricks in guest references and interface names (the ones the
    issue lists) through every RPC that takes one: refused, nothing changed.
    An attach into /proc/1/ns/net is left out: the daemon runs in a
    namespace of its own, so init's is a real other namespace."""
    before = fz.mark()
    spare = f"netns:{fz.spare_ns}"
    seeded = f"netns:{fz.guest_ns}"
    route = enc(R, destination="198.19.0.0/16")
    for g in LISTED_GUESTS:
        cases = [
            Case("Detach", enc(pb.DetachRequest, guest=g), must_not_change=True),
            Case("GetEndpoint", enc(pb.GetEndpointRequest, guest=g), must_fail=True),
            Case("ListEndpoints", enc(pb.ListEndpointsRequest, guest=g)),
            Case("AddRoute", enc(pb.AddRouteRequest, guest=g, route=route), must_fail=True),
            Case(
                "DeleteRoute",
                enc(pb.DeleteRouteRequest, guest=g, destination="198.19.0.0/16"),
                must_fail=True,
            ),
        ]
        if g != "/proc/1/ns/net":
            spec = _attach(bridge=fz.bridge, guest=g, addresses=SEED_V4 + "60/24")
            cases.append(Case("Attach", spec, must_fail=True))
        if "GuestCommand" in METHODS:
            req = enc(G, guest=g, tool="rule", args=["add", "from", "198.18.0.0/24"])
            cases.append(Case("GuestCommand", req, must_fail=True))
        for c in cases:
            fz.send(c)
    for name in LISTED_IFNAMES:
        for c in (
            Case("CreateBridge", enc(pb.CreateBridgeRequest, spec=enc(B, name=name)), True),
            Case("DeleteBridge", enc(pb.DeleteBridgeRequest, name=name), must_fail=True),
            Case("Attach", _attach(bridge=name, guest=spare), must_fail=True),
            Case("Attach", _attach(bridge=fz.bridge, guest=spare, ifname=name), True),
            Case("Attach", _attach(bridge=fz.bridge, guest=spare, host_ifname=name), True),
            Case("Detach", enc(pb.DetachRequest, guest=seeded, ifname=name), must_fail=True),
            Case("GetEndpoint", enc(pb.GetEndpointRequest, guest=seeded, ifname=name), True),
            Case("ListEndpoints", enc(pb.ListEndpointsRequest, bridge=name), must_fail=True),
            Case(
                "AddRoute",
                enc(pb.AddRouteRequest, guest=seeded, ifname=name, route=route),
                must_fail=True,
            ),
        ):
            fz.send(c)
    print(fz.summary("RPC cases with the listed path tricks", before))
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------------------ raw bytes


def _string_field_numbers(method: str) -> list[tuple[int, ...]]:
    """Paths (field numbers) to every string field of a request, nested
    messages included (depth 2)."""
    out: list[tuple[int, ...]] = []

    def walk(desc: Any, path: tuple[int, ...], depth: int) -> None:
        for f in desc.fields:
            if f.type == f.TYPE_STRING:
                out.append((*path, f.number))
            elif f.type == f.TYPE_MESSAGE and depth < 2:
                walk(f.message_type, (*path, f.number), depth + 1)

    walk(request_class(method).DESCRIPTOR, (), 0)
    return out


def _nest(path: tuple[int, ...], payload: bytes) -> bytes:
    for number in reversed(path):
        payload = emit(number, LEN, payload)
    return payload


# Byte strings a protobuf parser must refuse.
BREAKERS = (
    b"\x80",  # a varint cut short
    b"\x08" + b"\xff" * 10 + b"\x01",  # an 11-byte varint
    b"\x0a\x05ab",  # a length beyond the end
    b"\x0a\xff\xff\xff\xff\x0f",  # a length of 4 GiB
    b"\x00\x01",  # field number 0
    emit(1, SGROUP),  # a group never closed
    emit(1, EGROUP),  # a group closed but never opened
    emit(5, I32, b"\x01\x02"),  # fixed32 cut short
    b"\x07",  # wire type 7 does not exist
    b"\x0e\x00",  # wire type 6 does not exist
)


@st.composite
def raw_cases(draw: Any, method: str) -> Case:
    strings = _string_field_numbers(method)
    kind = draw(st.integers(0, 5))
    if kind == 0:
        data = draw(st.binary(max_size=200))
    elif kind in (1, 2):  # a soup with bytes flipped, cut, inserted or repeated
        data = bytearray(draw(request_soup(method)))
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data)))
            op = draw(st.integers(0, 3))
            if op == 0 and i < len(data):
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:
                del data[i:]
            elif op == 2:
                data[i:i] = draw(st.binary(min_size=1, max_size=4))
            else:
                data[i:i] = data[i : i + draw(st.integers(1, 8))]
        data = bytes(data)
    elif kind == 3:
        data = draw(request_soup(method)) + draw(st.sampled_from(BREAKERS))
    else:  # a string field that is no UTF-8: bad bytes, CESU-8 surrogates, overlong
        bad = draw(
            st.one_of(
                st.sampled_from(
                    [
                        b"\xff",
                        b"\xc3\x28",
                        b"\xed\xa0\x80",  # U+D800, a surrogate
                        b"\xed\xbf\xbf",  # U+DFFF
                        b"\xed\xa0\xbd\xed\xb8\x80",  # a surrogate pair spelled out
                        b"\xc0\xaf",  # an overlong '/'
                        b"\xe0\x80\xaf",
                        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
                        b"netns:\xc0\xae\xc0\xae/etc",  # overlong "../"
                    ]
                ),
                st.binary(min_size=1, max_size=16),
            )
        )
        if strings:
            path = draw(st.sampled_from(strings))
            data = draw(request_soup(method)) + _nest(path, b"eth" + bad)
        else:
            data = emit(1, LEN, bad)
    return Case(method, data)


def test_fuzz_every_rpc_with_raw_bytes(fz: FuzzHost) -> None:
    """Random bytes, mangled encodings, broken framing and strings that are
    no UTF-8. What decodes is held to the usual rules; what does not must
    still be refused and leave the daemon up (its code is counted: see
    test_undecodable_request_is_invalid_argument)."""
    before = fz.mark()

    for method in METHODS:

        @fuzz_settings(max_examples=share(method, 1000))
        @given(raw_cases(method))
        def case(c: Case) -> None:
            fz.send(c)

        case()
    print(fz.summary("RPC cases of raw bytes", before))
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------------------- oversize


def _sized(method: str, total: int) -> bytes:
    """A request of exactly ``total`` bytes: its first string field (nested
    ones included) or, for an empty message, an unknown field, filled."""
    strings = _string_field_numbers(method)
    path = strings[0] if strings else (1,)
    overhead = len(_nest(path, b"x" * (total // 2))) - total // 2
    body = total - overhead
    data = _nest(path, b"a" * body)
    for _ in range(3):  # the length prefixes can shrink or grow by a byte
        if len(data) == total:
            break
        body += total - len(data)
        data = _nest(path, b"a" * body)
    assert len(data) == total
    return data


OVERSIZE = (MAX_MESSAGE - 1, MAX_MESSAGE, MAX_MESSAGE + 1)
# Far over the limit, for a few: each costs ~0.1 s of transfer.
FAR_OVER = {"Attach": 6 << 20, "CreateBridge": MAX_MESSAGE + 4096, "AddPeers": 16 << 20}


def test_fuzz_oversize_every_rpc(fz: FuzzHost) -> None:
    """Every RPC with a request just under, at and over the 4 MiB limit:
    over is RESOURCE_EXHAUSTED, under is decoded and refused or a no-op.
    Then requests under the limit with enormous repeated fields."""
    before = fz.mark()
    over: list[tuple[str, bytes]] = []
    for method in METHODS:
        for total in (*OVERSIZE, *([FAR_OVER[method]] if method in FAR_OVER else [])):
            data = _sized(method, total)
            if total > MAX_MESSAGE:
                over.append((method, data))
            else:
                fz.send(Case(method, data, must_not_change=True))
    for (method, data), reply in zip(over, fz.call_many(over), strict=True):
        fz.codes[(method, reply.code.name)] += 1
        assert reply.code is grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method} {len(data)}: {reply}"
    many = 200_000
    spare = f"netns:{fz.spare_ns}"
    endpoint = {"bridge": fz.bridge, "guest": spare}
    bulky = [
        ("AddPeers", enc(pb.AddPeersRequest, peers=[enc(P, address="198.18.0.9")] * many)),
        (
            "AddPeers",
            enc(pb.AddPeersRequest, peers=[enc(P, address=a) for a in _many(4097, "198.18.{}.{}")]),
        ),
        ("Attach", _attach(**endpoint, addresses=["198.18.0.1/15"] * many)),
        ("Attach", _attach(**endpoint, addresses=_many(65, SEED_V4[:-3] + "{}.{}/16"))),
        ("Attach", _attach(**endpoint, routes=[enc(R, destination="default")] * many)),
        (
            "Attach",
            _attach(**endpoint, addresses=SEED_V4 + "9/24", gateways=[SEED_V4 + "1"] * many),
        ),
        ("Attach", _attach(**endpoint, dhcp=enc(pb.Dhcp, client="udhcpc", options=["-x"] * many))),
        (
            "CreateBridge",
            enc(
                pb.CreateBridgeRequest,
                spec=enc(B, name="npfzbig", addresses=["198.18.0.1/15"] * many),
            ),
        ),
        ("DeleteBridge", enc(pb.DeleteBridgeRequest, name="b" * (MAX_MESSAGE - 16))),
    ]
    for method, data in bulky:
        assert len(data) <= MAX_MESSAGE, (method, len(data))
        fz.send(Case(method, data, must_fail=True))
    print(fz.summary("oversize RPC cases", before))
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------------------ health


def test_fuzz_health_service(fz: FuzzHost) -> None:
    """The standard health service gets hostile service names and bytes:
    SERVING, NOT_FOUND or a refusal, and it keeps answering."""
    from grpc_health.v1 import health_pb2

    n = 0
    codes: Counter[str] = Counter()

    @fuzz_settings(max_examples=100)
    @given(
        st.one_of(
            st.text(max_size=64).map(
                lambda s: health_pb2.HealthCheckRequest(service=s).SerializeToString()
            ),
            st.binary(max_size=64),
            st.just(b"\x0a\x01\xff"),
        )
    )
    def case(data: bytes) -> None:
        nonlocal n
        n += 1
        reply = fz.call(HEALTH_CHECK, data)
        codes[reply.code.name] += 1
        assert reply.code in (
            grpc.StatusCode.OK,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.INTERNAL,  # grpcio's own answer to bytes that do not decode
        ), reply
        if reply.code is grpc.StatusCode.INTERNAL:
            try:
                health_pb2.HealthCheckRequest.FromString(data)
            except Exception:
                return
            raise AssertionError(f"INTERNAL to a request that decodes: {data!r} {reply}")

    case()
    print(f"fuzz: {n} Health cases; codes {dict(codes)}")
    record("Health cases", n, {"codes": dict(codes)})
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------ bugs the fuzz found (fixed)


def _undecodable(method: str, rng: random.Random) -> list[bytes]:
    strings = _string_field_numbers(method)
    out = [b + rng.randbytes(3) for b in BREAKERS]
    if strings:
        out += [_nest(strings[0], b"\xff"), _nest(strings[0], b"\xed\xa0\x80")]
    return [d for d in out if not decodes(method, d)]


def test_undecodable_request_is_invalid_argument(fz: FuzzHost) -> None:
    rng = random.Random(5)
    wrong: list[str] = []
    for method in METHODS:
        for data in _undecodable(method, rng):
            reply = fz.call(method, data)
            if reply.code is not grpc.StatusCode.INVALID_ARGUMENT:
                wrong.append(f"{method} {data[:40].hex()} -> {reply}")
    fz.assert_healthy_and_unchanged()
    assert not wrong, "\n".join(wrong[:10]) + f"\n({len(wrong)} in all)"


def test_refused_attach_adopts_no_bridge(fz: FuzzHost) -> None:
    spec = enc(E, bridge=fz.foreign_bridge, guest="netns:npfz-nosuch", addresses=SEED_V4 + "40/24")
    try:
        reply = fz.call("Attach", enc(pb.AttachRequest, spec=spec))
        assert reply.code is grpc.StatusCode.NOT_FOUND, reply
        assert fz.store() == fz.baseline_store(), (
            f"Attach to {fz.foreign_bridge} refused ({reply}), and the store now records it"
        )
    finally:
        if fz.store() != fz.baseline_store():
            fz.restore()
    fz.assert_healthy_and_unchanged()
