"""The DNS responder's decisions (netplumb.agent.dns.answer): what a socket
serving one network says to every kind of query, built and read back with
dnslib; and the small pure helpers around it. The sockets are tested in
tests/netns/test_dns_server.py."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from dnslib import CLASS, EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from netplumb.agent import dns
from netplumb.agent.errors import InvalidSpec

TABLE = {
    "blue": {
        "web": ["198.18.0.10", "2001:db8::10"],
        "db": ["198.18.0.11"],
        "v6only": ["2001:db8::12"],
        "multi": ["198.18.0.13", "198.18.0.14"],
        "blue": ["198.18.0.15"],  # an endpoint called like its network
        "broken": ["not-an-address", "198.18.0.16"],
    },
    "red": {"web": ["198.18.1.10"]},
}


class Lookup:
    """TABLE as a lookup function that remembers how it was called."""

    def __init__(self, table: dict[str, dict[str, list[str]]] | None = None) -> None:
        self.table = TABLE if table is None else table
        self.calls: list[tuple[str, str]] = []

    def __call__(self, network: str, name: str) -> Sequence[str]:
        self.calls.append((network, name))
        return self.table.get(network, {}).get(name, [])


def ask(
    name: str,
    qtype: str = "A",
    network: str = "blue",
    *,
    lookup: Lookup | None = None,
    forward: bool = False,
    ttl: int = 5,
    udp: bool = True,
    rd: bool = True,
    edns: int | None = None,
) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    q.header.id = 4242
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    out = dns.answer(q.pack(), network, lookup or Lookup(), forward=forward, ttl=ttl, udp=udp)
    assert isinstance(out, bytes), out
    reply = DNSRecord.parse(out)
    assert reply.header.id == 4242
    assert reply.header.qr == 1
    return reply


def rdata(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


def soa_of(reply: DNSRecord, zone: str) -> None:
    """A negative answer: exactly the zone's SOA in authority, nothing else."""
    assert reply.rr == []
    assert [QTYPE[rr.rtype] for rr in reply.auth] == ["SOA"]
    assert str(reply.auth[0].rname) == zone + "."


# ------------------------------------------------------------- positive answers


def test_a_record_for_a_bare_name() -> None:
    lookup = Lookup()
    r = ask("web", lookup=lookup)
    assert r.header.rcode == RCODE.NOERROR
    assert r.header.aa == 1
    assert rdata(r) == ["198.18.0.10"]
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["A"]
    assert lookup.calls == [("blue", "web")]


def test_aaaa_record() -> None:
    r = ask("web", "AAAA")
    assert rdata(r) == ["2001:db8::10"]
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["AAAA"]


def test_any_gives_both_families() -> None:
    assert sorted(rdata(ask("web", "ANY"))) == ["198.18.0.10", "2001:db8::10"]


def test_every_address_is_answered() -> None:
    assert sorted(rdata(ask("multi"))) == ["198.18.0.13", "198.18.0.14"]


@pytest.mark.parametrize("name", ["web.blue", "web.blue.", "WEB.BLUE", "Web.Blue.", "wEb"])
def test_name_dot_network_and_any_case(name: str) -> None:
    lookup = Lookup()
    r = ask(name, lookup=lookup)
    assert rdata(r) == ["198.18.0.10"]
    assert lookup.calls == [("blue", "web")]  # lowercase, network as served
    # The name is echoed as asked (resolvers that randomise case check it).
    assert r.rr[0].rname.label == r.q.qname.label == DNSRecord.question(name).q.qname.label


def test_network_served_with_capitals_matches_any_case() -> None:
    lookup = Lookup({"Blue": {"web": ["198.18.0.10"]}})
    assert rdata(ask("web.blue", network="Blue", lookup=lookup)) == ["198.18.0.10"]
    assert lookup.calls == [("Blue", "web")]


def test_ttl_is_applied() -> None:
    assert [rr.ttl for rr in ask("multi", ttl=30).rr] == [30, 30]


def test_invalid_addresses_from_lookup_are_skipped() -> None:
    assert rdata(ask("broken")) == ["198.18.0.16"]


def test_an_endpoint_named_like_its_network_wins_over_the_apex() -> None:
    assert rdata(ask("blue")) == ["198.18.0.15"]
    assert rdata(ask("blue.blue")) == ["198.18.0.15"]


# --------------------------------------------------------- NODATA and NXDOMAIN


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("db", "AAAA"),
        ("v6only", "A"),
        ("web", "MX"),
        ("web", "TXT"),
        ("web", "SRV"),
        ("web", "PTR"),
        ("web.blue", "NS"),
        ("web", "CNAME"),
    ],
)
def test_nodata_when_the_name_exists_without_that_type(name: str, qtype: str) -> None:
    r = ask(name, qtype)
    assert r.header.rcode == RCODE.NOERROR
    assert r.header.aa == 1
    soa_of(r, "blue")


@pytest.mark.parametrize("name", ["nope", "nope.blue", "a.web.blue", "x.y.blue.", "NOPE"])
def test_nxdomain_with_the_zone_soa(name: str) -> None:
    r = ask(name, ttl=7)
    assert r.header.rcode == RCODE.NXDOMAIN
    assert r.header.aa == 1
    soa_of(r, "blue")
    soa = r.auth[0]
    assert soa.ttl == 7
    assert soa.rdata.times[-1] == 7  # the negative-caching time (RFC 2308)
    assert str(soa.rdata.mname) == "blue."


def test_nxdomain_for_every_type() -> None:
    for qtype in ("AAAA", "ANY", "MX"):
        assert ask("nope", qtype).header.rcode == RCODE.NXDOMAIN


def test_zone_apex_has_an_soa_and_nothing_else() -> None:
    r = ask("blue.", "SOA", network="blue", lookup=Lookup({}))
    assert r.header.rcode == RCODE.NOERROR
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["SOA"]
    r = ask("blue", "A", lookup=Lookup({}))
    assert r.header.rcode == RCODE.NOERROR
    soa_of(r, "blue")


def test_a_label_with_a_dot_inside_is_no_name() -> None:
    # "web.blue" as ONE wire label: must not become lookup("blue", "web.blue").
    q = DNSRecord(DNSHeader(id=1), q=DNSQuestion("x"))
    q.questions[0].qname.label = (b"web.blue",)
    lookup = Lookup()
    out = dns.answer(q.pack(), "blue", lookup)
    assert isinstance(out, bytes)
    assert DNSRecord.parse(out).header.rcode == RCODE.NXDOMAIN
    assert lookup.calls == []


def test_non_ascii_label_is_no_name() -> None:
    lookup = Lookup()
    q = DNSRecord(DNSHeader(id=1), q=DNSQuestion("x"))
    q.questions[0].qname.label = ("wéb".encode(),)
    out = dns.answer(q.pack(), "blue", lookup)
    assert isinstance(out, bytes)
    assert DNSRecord.parse(out).header.rcode == RCODE.NXDOMAIN
    # Not even UTF-8: dnslib will not parse it.
    q.questions[0].qname.label = (b"w\xe9b",)
    out = dns.answer(q.pack(), "blue", lookup)
    assert isinstance(out, bytes)
    assert DNSRecord.parse(out).header.rcode == RCODE.FORMERR
    assert lookup.calls == []


# ------------------------------------------------ other zones and forwarding


@pytest.mark.parametrize("name", ["web.red", "example.com", "www.example.com.", "blue.com", "."])
def test_outside_names_are_refused_without_forwarding(name: str) -> None:
    lookup = Lookup()
    r = ask(name, lookup=lookup)
    assert r.header.rcode == RCODE.REFUSED
    assert r.header.aa == 0
    assert r.header.ra == 0
    assert r.rr == [] and r.auth == []
    assert lookup.calls == []


def test_other_networks_zone_is_not_answered_here() -> None:
    # "web" exists on red, but a socket of blue never says so.
    assert ask("web.red").header.rcode == RCODE.REFUSED
    assert rdata(ask("web", network="red")) == ["198.18.1.10"]
    assert rdata(ask("web.red", network="red")) == ["198.18.1.10"]
    assert ask("web.blue", network="red").header.rcode == RCODE.REFUSED


@pytest.mark.parametrize("name", ["web.red", "example.com", "www.example.com."])
def test_outside_names_are_forwarded_when_forwarding(name: str) -> None:
    q = DNSRecord.question(name)
    out = dns.answer(q.pack(), "blue", Lookup(), forward=True)
    assert out == dns.Forward(q.pack())


def test_not_forwarded_without_recursion_desired() -> None:
    r = ask("example.com", forward=True, rd=False)
    assert r.header.rcode == RCODE.REFUSED
    assert r.header.ra == 1


@pytest.mark.parametrize("name", ["web", "nope", "com", "nope.blue"])
def test_our_names_are_never_forwarded(name: str) -> None:
    q = DNSRecord.question(name)
    out = dns.answer(q.pack(), "blue", Lookup(), forward=True)
    assert isinstance(out, bytes)
    reply = DNSRecord.parse(out)
    assert reply.header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN)
    assert reply.header.ra == 1  # recursion is available, for names outside


def test_failure_reply_keeps_id_and_question() -> None:
    q = DNSRecord.question("example.com", "AAAA")
    q.header.id = 777
    out = dns.failure(q.pack())
    assert out is not None
    r = DNSRecord.parse(out)
    assert (r.header.id, r.header.qr, r.header.rcode) == (777, 1, RCODE.SERVFAIL)
    assert r.q.qname == q.q.qname and r.q.qtype == QTYPE.AAAA
    assert dns.failure(b"\x01") is None


# ----------------------------------------------------------- header and EDNS


def test_header_fields_of_a_reply() -> None:
    r = ask("web", rd=False)
    assert (r.header.rd, r.header.tc, r.header.opcode) == (0, 0, 0)
    assert r.q.qtype == QTYPE.A and str(r.q.qname) == "web."
    assert r.ar == []  # no EDNS asked, none given


def test_edns_is_answered_with_edns() -> None:
    r = ask("web", edns=4096)
    opts = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
    assert len(opts) == 1
    assert opts[0].rclass == dns.UDP_EDNS


def test_unknown_edns_version_is_badvers() -> None:
    q = DNSRecord.question("web")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    out = dns.answer(q.pack(), "blue", Lookup())
    assert isinstance(out, bytes)
    r = DNSRecord.parse(out)
    opt = next(rr for rr in r.ar if rr.rtype == QTYPE.OPT)
    assert (opt.ttl >> 24) << 4 | r.header.rcode == 16  # BADVERS
    assert r.rr == []


def big_table(n: int) -> Lookup:
    return Lookup({"blue": {"big": [f"2001:db8::{i:x}" for i in range(1, n + 1)]}})


def test_a_large_udp_reply_is_truncated_so_the_client_uses_tcp() -> None:
    lookup = big_table(40)  # 40 AAAA records: about 1.1 kB
    r = ask("big", "AAAA", lookup=lookup)
    assert r.header.tc == 1
    assert r.rr == []
    assert len(ask("big", "AAAA", lookup=lookup, udp=False).rr) == 40
    assert len(ask("big", "AAAA", lookup=lookup, edns=1232).rr) == 40
    # A client's EDNS size is honoured up to what we accept.
    assert ask("big", "AAAA", lookup=big_table(60), edns=4096).header.tc == 1
    assert ask("big", "AAAA", lookup=lookup, edns=600).header.tc == 1


@given(st.integers(0, 80), st.booleans(), st.sampled_from([None, 512, 1000, 1232, 4096]))
@settings(max_examples=60, deadline=None)
def test_udp_replies_always_fit(n: int, udp: bool, edns: int | None) -> None:
    q = DNSRecord.question("big", "AAAA")
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    out = dns.answer(q.pack(), "blue", big_table(n), udp=udp)
    assert isinstance(out, bytes)
    r = DNSRecord.parse(out)
    limit = 512 if edns is None else max(512, min(edns, dns.UDP_EDNS))
    if udp:
        assert len(out) <= limit
    assert len(r.rr) == (0 if r.header.tc else n)
    assert not r.header.tc or udp


# ---------------------------------------------------------- malformed input


def header(
    qid: int = 99, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x03web\x00\x00\x01\x00\x01"


def rcode_of(out: bytes | dns.Forward | None) -> int:
    assert isinstance(out, bytes)
    r = DNSRecord.parse(out)
    assert r.header.id == 99 and r.header.qr == 1
    return int(r.header.rcode)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x12\x34\x01", bytes(11)])
def test_too_short_for_a_header_is_dropped(data: bytes) -> None:
    assert dns.answer(data, "blue", Lookup()) is None


def test_a_response_is_dropped() -> None:
    assert dns.answer(header(flags=0x8180) + QUESTION, "blue", Lookup()) is None
    assert dns.answer(header(flags=0x8180) + b"\xc0", "blue", Lookup()) is None


@pytest.mark.parametrize(
    "data",
    [
        header() + b"\x03we",  # question cut short
        header() + b"\xc0\x0c\x00\x01\x00\x01",  # a name pointing at itself
        header() + b"\x03web\x00\x00\x01",  # no class
        header(qd=2) + QUESTION,  # counts promise more than there is
        header(an=1) + QUESTION + b"\x00\x00\x01",  # a cut answer record
        header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # extended label type
    ],
)
def test_unparseable_messages_get_formerr(data: bytes) -> None:
    lookup = Lookup()
    assert rcode_of(dns.answer(data, "blue", lookup)) == RCODE.FORMERR
    assert lookup.calls == []


def test_names_longer_than_255_bytes_are_formerr() -> None:
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 bytes
    assert rcode_of(dns.answer(header() + name + b"\x00\x01\x00\x01", "blue", Lookup())) == 1
    ok = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"a" * 61 + b"\x00"
    assert rcode_of(dns.answer(header() + ok + b"\x00\x01\x00\x01", "blue", Lookup())) == 5


def test_no_question_or_two_questions_is_formerr() -> None:
    assert rcode_of(dns.answer(header(qd=0), "blue", Lookup())) == RCODE.FORMERR
    two = header(qd=2) + QUESTION + QUESTION
    assert rcode_of(dns.answer(two, "blue", Lookup())) == RCODE.FORMERR


def test_two_opt_records_is_formerr() -> None:
    q = DNSRecord.question("web")
    q.add_ar(EDNS0(udp_len=1232))
    q.add_ar(EDNS0(udp_len=1232))
    q.header.id = 99
    assert rcode_of(dns.answer(q.pack(), "blue", Lookup())) == RCODE.FORMERR


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])
def test_other_opcodes_are_notimp(opcode: int) -> None:
    data = header(flags=opcode << 11) + QUESTION
    assert rcode_of(dns.answer(data, "blue", Lookup())) == RCODE.NOTIMP


@pytest.mark.parametrize("qclass", [3, 4, 254])
def test_other_classes_are_refused(qclass: int) -> None:
    data = header() + b"\x03web\x00\x00\x01" + struct.pack("!H", qclass)
    lookup = Lookup()
    assert rcode_of(dns.answer(data, "blue", lookup, forward=True)) == RCODE.REFUSED
    assert lookup.calls == []


def test_class_any_is_answered() -> None:
    data = header() + b"\x03web\x00\x00\x01" + struct.pack("!H", 255)
    assert rcode_of(dns.answer(data, "blue", Lookup())) == RCODE.NOERROR
    assert CLASS.get(255) == "*"


def test_a_failing_lookup_is_servfail() -> None:
    def lookup(network: str, name: str) -> list[str]:
        raise RuntimeError("registry gone")

    q = DNSRecord.question("web")
    q.header.id = 99
    assert rcode_of(dns.answer(q.pack(), "blue", lookup)) == RCODE.SERVFAIL


def check_never_fails(data: bytes, forward: bool) -> None:
    # answer() turns any exception into FORMERR as a last resort; the decision
    # itself must not need that.
    out = dns._decide(data, "blue", Lookup(), forward, 5, True)
    if isinstance(out, dns.Forward):
        assert forward and out.query == data
    elif out is not None:
        r = DNSRecord.parse(out)
        assert r.header.qr == 1
        assert r.header.id == struct.unpack("!H", data[:2])[0]


@given(st.binary(max_size=600), st.booleans())
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_never_raise(data: bytes, forward: bool) -> None:
    check_never_fails(data, forward)


VALID = [
    DNSRecord.question("web").pack(),
    DNSRecord.question("web.blue", "AAAA").pack(),
    DNSRecord.question("example.com", "MX").pack(),
]


@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6),
    st.integers(0, 80),
    st.booleans(),
)
@settings(max_examples=500, deadline=None)
def test_mutated_queries_never_raise(
    base: bytes, flips: list[tuple[int, int]], cut: int, forward: bool
) -> None:
    data = bytearray(base)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    check_never_fails(bytes(data[: len(data) - cut] if cut < len(data) else data), forward)


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.1", ("198.18.0.1", 53)),
        ("198.18.0.1:5353", ("198.18.0.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
        ("2001:DB8:0::1", ("2001:db8::1", 53)),
    ],
)
def test_upstream_forms(text: str, expected: tuple[str, int]) -> None:
    assert dns.parse_upstream(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "resolver",
        "198.18.0.1:",
        "198.18.0.1:x",
        "198.18.0.1:0",
        "198.18.0.1:65536",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[198.18.0.1]:53x",
        "1.2.3.4.5",
    ],
)
def test_bad_upstreams(text: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        dns.parse_upstream(text)
    assert e.value.field == "upstreams"


@pytest.mark.parametrize(
    ("network", "labels"),
    [("blue", (b"blue",)), ("Blue", (b"blue",)), ("net-1", (b"net-1",)), ("a.b", (b"a", b"b"))],
)
def test_zone_labels(network: str, labels: tuple[bytes, ...]) -> None:
    assert dns.zone_labels(network) == labels


@pytest.mark.parametrize(
    "network", ["", ".", "a..b", "blue.", "b" * 64, "bl\u00fce", "a." * 127 + "a"]
)
def test_networks_that_cannot_be_zones(network: str) -> None:
    with pytest.raises(InvalidSpec):
        dns.zone_labels(network)


def test_server_refuses_bad_settings_before_binding() -> None:
    with pytest.raises(InvalidSpec):
        dns.DnsServer(Lookup(), forward=True)
    with pytest.raises(InvalidSpec):
        dns.DnsServer(Lookup(), upstreams=["nowhere"])
    with pytest.raises(InvalidSpec):
        dns.DnsServer(Lookup(), ttl=-1)
    with dns.DnsServer(Lookup()) as server:
        for address in ("198.18.0.300", "0.0.0.0", "::", "ff02::1", "224.0.0.1", "blue"):
            with pytest.raises(InvalidSpec):
                server.serve("blue", address)
        with pytest.raises(InvalidSpec):
            server.serve("bad..name", "198.18.0.1")
        assert server.served == {}
        server.stop("blue")  # not served: a no-op
    server.close()  # twice: a no-op
