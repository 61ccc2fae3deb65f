"""The agent's DNS responder for cluster networks: ``NAME`` and
``NAME.NETWORK`` resolve to the endpoints published on that network.

Two halves, as everywhere in netplumb:

- ``answer()`` decides. Given the bytes of one query, the network whose
  socket it arrived on and a lookup function, it returns the reply's bytes,
  a ``Forward`` (ask an upstream), or None (drop). Packets are parsed and
  built with dnslib only.
- ``DnsServer`` acts: UDP and TCP sockets on ``ADDRESS:53`` per network, one
  selector thread for all of them, and a few worker threads for queries
  forwarded upstream (so a slow upstream never delays local answers).

What a socket serving network N answers (names compared case-insensitively,
echoed as asked):

    NAME, NAME.N            lookup(N, name): A / AAAA records; the other
                            type, and any other type, is NODATA (NOERROR,
                            empty answer, SOA in authority)
    unknown NAME, a.b.N     NXDOMAIN with N's SOA (negative caching = ttl)
    N (the zone apex)       SOA for SOA/ANY, otherwise NODATA; but a bare
                            single label is an endpoint name first
    anything else           forwarded (forward=True and RD set) or REFUSED

"Anything else" includes ``X.OTHER`` for another network OTHER, served by
this agent or not: a socket knows only its own network, so a guest sees only
its own network's names, and a query for another network's zone is treated
like any outside name (forwarded to the upstreams, which do not know it, or
REFUSED). Single-label names are never forwarded: they are ours or NXDOMAIN.
Classes other than IN and ANY are REFUSED; opcodes other than QUERY are
NOTIMP; a response, or a packet too short for a header, is dropped; anything
else dnslib cannot parse (or with other than one question) is FORMERR.
EDNS is answered with EDNS (1232 bytes, BADVERS for versions above 0); a UDP
reply larger than the client takes is truncated (TC) so it retries over TCP.
A forwarded reply is relayed under the client's id with RA set; when every
upstream fails the client gets SERVFAIL. PTR queries are outside names.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import queue
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CLASS, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSRecord
from dnslib.label import DNSBuffer

from .errors import Conflict, InvalidSpec, NetplumbError, PreconditionFailed

log = logging.getLogger("netplumb.dns")

Lookup = Callable[[str, str], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DNS_PORT = 53
UDP_PLAIN = 512  # a reply to a query without EDNS fits here (RFC 1035)
UDP_EDNS = 1232  # what we accept and send at most with EDNS: no IP fragments (DNS flag day 2020)
TCP_IDLE = 5.0  # seconds a TCP connection may sit idle (RFC 7766 suggests a few)
TCP_MAX_CONNECTIONS = 128  # across all networks; more are closed at accept
TCP_MAX_OUTPUT = 1 << 20  # a client that pipelines but never reads is closed
UPSTREAM_TIMEOUT = 2.0  # per upstream, per try
FORWARD_WORKERS = 4
FORWARD_MAX_PENDING = 64  # forwarded queries in flight; more are dropped (clients retry)
SOA_TIMES = (1, 3600, 600, 86400)  # serial, refresh, retry, expire; minimum is the ttl

IP_FREEBIND = 15  # <linux/in.h>; socket.IP_FREEBIND only from Python 3.12
IPV6_FREEBIND = 78  # <linux/in6.h>, Linux 4.15


@dataclass(frozen=True, slots=True)
class Forward:
    """The query is for a name outside the network's zone and forwarding is on:
    send ``query`` (as received) to the upstreams and relay what they say."""

    query: bytes


# --- the pure half ------------------------------------------------------------


def zone_labels(network: str) -> tuple[bytes, ...]:
    """The network's zone as lowercase DNS labels; InvalidSpec if the network's
    name cannot be a DNS name (1-63 bytes of ASCII per label, no empty label,
    253 in all)."""
    try:
        raw = network.encode("ascii").lower()
    except UnicodeEncodeError:
        raise InvalidSpec(f"network {network!r}: not an ASCII DNS name", field="network") from None
    labels = tuple(raw.split(b"."))
    if len(raw) > 253 or any(not 0 < len(lab) <= 63 for lab in labels):
        raise InvalidSpec(f"network {network!r}: not a valid DNS name", field="network")
    return labels


def answer(
    query: bytes,
    network: str,
    lookup: Lookup,
    *,
    forward: bool = False,
    ttl: int = 5,
    udp: bool = True,
) -> bytes | Forward | None:
    """The reply to one DNS message received on the socket of ``network``.

    Returns the reply's bytes, ``Forward`` when the name is outside the zone
    and ``forward`` is on (and the client asked for recursion), or None when
    the message must be dropped (too short to carry a header, or a response).
    Never raises on any input; ``lookup`` is called at most once, with the
    name in lowercase, and an exception from it becomes SERVFAIL. Over
    ``udp`` a reply larger than the client can take (512 bytes, or its EDNS
    size up to 1232) is truncated (TC set, no records) so that it retries
    over TCP.
    """
    try:
        return _decide(query, network, lookup, forward, ttl, udp)
    except InvalidSpec:
        raise
    except Exception:  # a dnslib corner no test found: the client gets FORMERR
        log.debug("cannot answer a DNS message on %s", network, exc_info=True)
        return _formerr(query)


def _decide(
    query: bytes, network: str, lookup: Lookup, forward: bool, ttl: int, udp: bool
) -> bytes | Forward | None:
    try:
        msg = DNSRecord.parse(query)
    except Exception as e:  # dnslib raises DNSError, but hostile input finds others
        log.debug("malformed DNS message on %s (%d bytes): %s", network, len(query), e)
        return _formerr(query)
    h = msg.header
    if h.qr:
        log.debug("dropped a DNS response sent to %s's server", network)
        return None
    if h.opcode != 0:
        return _error(msg, RCODE.NOTIMP, forward)
    if len(msg.questions) != 1:
        return _error(msg, RCODE.FORMERR, forward)
    opts = [rr for rr in msg.ar if rr.rtype == QTYPE.OPT]
    if len(opts) > 1:
        return _error(msg, RCODE.FORMERR, forward)
    edns = opts[0] if opts else None
    if edns is not None and (edns.ttl >> 16) & 0xFF != 0:
        reply = _reply(msg, forward, aa=False)
        reply.add_ar(EDNS0(udp_len=UDP_EDNS, ext_rcode=1))  # BADVERS (16) = 1 << 4 | 0
        return bytes(reply.pack())
    q = msg.questions[0]
    wire = q.qname.label
    if any(len(lab) > 63 for lab in wire) or sum(len(lab) + 1 for lab in wire) >= 255:
        return _error(msg, RCODE.FORMERR, forward)  # dnslib reads what it cannot write
    if q.qclass not in (CLASS.IN, 255):  # 255: ANY ("*" in dnslib)
        return _finish(_reply(msg, forward, aa=False, rcode=RCODE.REFUSED), edns, udp)

    zone = zone_labels(network)
    labels = tuple(lab.lower() for lab in q.qname.label)
    if len(labels) == 1:  # a bare name is an endpoint's first, the apex second
        label, apex = labels[0], labels == zone
    elif len(labels) > len(zone) and labels[-len(zone) :] == zone:
        label, apex = (labels[0] if len(labels) == len(zone) + 1 else None), False
    elif labels == zone:
        label, apex = None, True
    else:
        if forward and h.rd:
            return Forward(bytes(query))
        return _finish(_reply(msg, forward, aa=False, rcode=RCODE.REFUSED), edns, udp)

    reply = _reply(msg, forward, aa=True)
    soa = RR(
        ".".join(lab.decode("ascii") for lab in zone) + ".",
        QTYPE.SOA,
        ttl=ttl,
        rdata=SOA(network + ".", "hostmaster." + network + ".", (*SOA_TIMES, ttl)),
    )
    name = _name(label) if label is not None else None
    addresses: list[IPAddress] = []
    if name is not None:
        try:
            found = list(lookup(network, name))
        except Exception:
            log.exception("DNS lookup of %r on %s failed", name, network)
            return _finish(_reply(msg, forward, aa=False, rcode=RCODE.SERVFAIL), edns, udp)
        addresses = _addresses(found, network, name)
    if addresses:
        for addr in addresses:
            if addr.version == 4 and q.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.A, ttl=ttl, rdata=A(str(addr))))
            elif addr.version == 6 and q.qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.AAAA, ttl=ttl, rdata=AAAA(str(addr))))
        if not reply.rr:  # the name exists, not with this type: NODATA
            reply.add_auth(soa)
    elif apex:
        if q.qtype in (QTYPE.SOA, QTYPE.ANY):
            reply.add_answer(soa)
        else:
            reply.add_auth(soa)
    else:  # unknown, or a name no endpoint can have (a.b.N, a dot inside a label)
        reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(soa)
    return _finish(reply, edns, udp)


def failure(query: bytes, rcode: int = RCODE.SERVFAIL) -> bytes | None:
    """A reply carrying only ``rcode`` (SERVFAIL when every upstream failed),
    or None if ``query`` cannot be answered at all."""
    try:
        msg = DNSRecord.parse(query)
    except Exception:
        return _formerr(query)
    return bytes(_reply(msg, True, aa=False, rcode=rcode).pack())


def _name(label: bytes) -> str | None:
    """A label as the lowercase name lookup() is asked for, or None if no
    endpoint can be called that (a dot inside the label, not ASCII)."""
    if b"." in label:
        return None
    try:
        return label.decode("ascii")
    except UnicodeDecodeError:
        return None


def _addresses(found: Iterable[str], network: str, name: str) -> list[IPAddress]:
    out: list[IPAddress] = []
    for text in found:
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            log.warning("DNS: %s on %s has an invalid address %r; skipped", name, network, text)
    return out


def _reply(msg: DNSRecord, ra: bool, *, aa: bool, rcode: int = RCODE.NOERROR) -> DNSRecord:
    h = msg.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=int(aa), rd=h.rd, ra=int(ra), rcode=rcode)
    return DNSRecord(header, questions=list(msg.questions[:1]))


def _error(msg: DNSRecord, rcode: int, ra: bool) -> bytes:
    reply = _reply(msg, ra, aa=False, rcode=rcode)
    reply.questions = []
    return bytes(reply.pack())


def _finish(reply: DNSRecord, edns: RR | None, udp: bool) -> bytes:
    limit = UDP_PLAIN
    if edns is not None:
        reply.add_ar(EDNS0(udp_len=UDP_EDNS))
        limit = max(UDP_PLAIN, min(edns.rclass, UDP_EDNS))
    data = bytes(reply.pack())
    if udp and len(data) > limit:
        reply.rr, reply.auth = [], []
        reply.header.tc = 1
        data = bytes(reply.pack())
    return data


def _formerr(query: bytes) -> bytes | None:
    """FORMERR for a message whose header at least is readable (and is a
    query); None (drop) otherwise."""
    if len(query) < 12:
        return None
    try:
        h = DNSHeader.parse(DNSBuffer(query[:12]))
    except Exception:
        return None
    if h.qr:
        return None
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, rcode=RCODE.FORMERR)
    return bytes(DNSRecord(header).pack())


# --- talking to upstreams ----------------------------------------------------


def parse_upstream(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``IPV6`` or ``[IPV6]:PORT`` as (ip, port);
    InvalidSpec otherwise."""
    host, port = text, str(DNS_PORT)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidSpec(f"upstream {text!r}: expected [IPV6]:PORT", field="upstreams")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ip = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise InvalidSpec(f"upstream {text!r}: expected IP or IP:PORT", field="upstreams") from None
    if not 0 < number < 65536:
        raise InvalidSpec(f"upstream {text!r}: port out of range", field="upstreams")
    return str(ip), number


def _same_question(a: DNSRecord, b: DNSRecord) -> bool:
    if len(a.questions) != 1 or len(b.questions) != 1:
        return False
    qa, qb = a.questions[0], b.questions[0]
    return bool(
        tuple(x.lower() for x in qa.qname.label) == tuple(x.lower() for x in qb.qname.label)
        and qa.qtype == qb.qtype
        and qa.qclass == qb.qclass
    )


def exchange(query: bytes, upstream: tuple[str, int], *, tcp: bool, timeout: float) -> DNSRecord:
    """Ask one upstream. ``query`` goes out under a fresh random id; the
    reply, once its id and question match (a stray or spoofed datagram is
    ignored), comes back parsed and under the query's own id. Raises OSError
    (timeouts included), DNSError, or ValueError for a TCP reply that does
    not match."""
    msg = DNSRecord.parse(query)
    qid, out_id = msg.header.id, secrets.randbits(16)
    msg.header.id = out_id
    packet = bytes(msg.pack())
    host, port = upstream
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))  # a connected UDP socket takes datagrams from there only
        if tcp:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            (length,) = struct.unpack("!H", _recv_exactly(s, 2))
            replies = [_recv_exactly(s, length)]
        else:
            s.send(packet)
            replies = []
        while True:
            data = replies.pop() if replies else s.recv(65535)
            try:
                reply = DNSRecord.parse(data)
            except Exception:
                reply = None
            if (
                reply is not None
                and reply.header.id == out_id
                and reply.header.qr
                and _same_question(msg, reply)
            ):
                reply.header.id = qid
                return reply
            if tcp:
                raise ValueError(f"upstream {host}:{port} answered another question")
            log.debug("ignored a stray datagram from upstream %s:%d", host, port)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching reply from {host}:{port}")
            s.settimeout(remaining)


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("upstream closed the connection")
        data += chunk
    return data


# --- the server ----------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Endpoint:
    network: str
    address: IPAddress
    udp: socket.socket
    tcp: socket.socket


@dataclass(eq=False, slots=True)
class _Conn:
    sock: socket.socket
    endpoint: _Endpoint
    last: float
    buf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    pending: int = 0  # forwarded queries whose reply is still to come
    events: int = selectors.EVENT_READ  # what the selector watches for; 0: not registered
    eof: bool = False
    closed: bool = False


class DnsServer:
    """Answers DNS for networks, each on its own ``ADDRESS:53`` (UDP and TCP),
    from ``lookup(network, name)``: the addresses (IPv4 and/or IPv6 strings)
    of the endpoint called ``name`` (lowercase) on ``network``, [] if none.
    ``lookup`` runs on the server's thread and must not block: answer from
    memory, not from etcd.

    ``upstreams`` ("IP", "IP:PORT", "[IPV6]:PORT") are asked, in order, UDP
    with a timeout (and TCP for a TCP client when the UDP reply is
    truncated), for names outside the networks' zones when ``forward`` is
    true; SERVFAIL when none answers. With ``forward`` false such queries
    are REFUSED. ``forward`` without upstreams is InvalidSpec.

    Sockets are created in the calling thread's network namespace (the
    agent's: the host's) with SO_REUSEADDR and IP_FREEBIND/IPV6_FREEBIND, so
    ``serve`` works before the address is on an interface.
    """

    def __init__(
        self,
        lookup: Lookup,
        upstreams: Sequence[str] = (),
        forward: bool = False,
        ttl: int = 5,
        *,
        port: int = DNS_PORT,
    ) -> None:
        if not 0 <= ttl < 2**31:
            raise InvalidSpec(f"DNS ttl {ttl} out of range", field="ttl")
        self._upstreams = tuple(parse_upstream(u) for u in upstreams)
        if forward and not self._upstreams:
            raise InvalidSpec("DNS forwarding needs at least one upstream", field="upstreams")
        self._lookup = lookup
        self._forward = forward
        self._ttl = ttl
        self._port = port  # 53; another port only for tests without privileges
        self.tcp_idle = TCP_IDLE
        self._lock = threading.Lock()  # serialises serve/stop/close
        self._endpoints: dict[str, _Endpoint] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        self._sel = selectors.DefaultSelector()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._conns: set[_Conn] = set()
        self._stopping = False
        self._workers = ThreadPoolExecutor(FORWARD_WORKERS, thread_name_prefix="dns-forward")
        self._in_flight = threading.BoundedSemaphore(FORWARD_MAX_PENDING)

    @property
    def served(self) -> dict[str, str]:
        """network -> the address its DNS is answered on (a copy)."""
        with self._lock:
            return {n: str(ep.address) for n, ep in self._endpoints.items()}

    def serve(self, network: str, address: str) -> None:
        """Answer DNS for ``network`` on ``address``:53, UDP and TCP.

        Idempotent; another address moves it (the new sockets are bound
        before the old ones close, and if binding fails the old address keeps
        serving). InvalidSpec for a bad network name or address, Conflict if
        another network is served on that address, PreconditionFailed if the
        port cannot be bound (something else holds it)."""
        zone_labels(network)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise InvalidSpec(
                f"DNS address {address!r} is not an IP address", field="address"
            ) from None
        if ip.is_unspecified or ip.is_multicast:
            raise InvalidSpec(f"DNS address {address} must be a unicast address", field="address")
        with self._lock:
            if self._closed:
                raise RuntimeError("DnsServer is closed")
            old = self._endpoints.get(network)
            if old is not None and old.address == ip:
                return
            for other, ep in self._endpoints.items():
                if other != network and ep.address == ip:
                    raise Conflict(
                        f"DNS address {ip} already answers for network {other}", field="address"
                    )
            udp, tcp = self._open(ip)
            new = _Endpoint(network, ip, udp, tcp)
            self._ensure_thread()
            self._in_loop(lambda: self._swap(old, new))
            self._endpoints[network] = new
            log.info("DNS for %s on %s:%d", network, ip, self._port)

    def follow(self, wanted: Mapping[str, str]) -> dict[str, NetplumbError]:
        """Answer for exactly the networks of ``wanted`` (network -> DNS
        address): the others are stopped first, so a network that takes the
        address of one deleted in the same change gets it; an address that
        moves between two networks is tried again once the rest is done.
        Returns the networks that could not be served, with why."""
        for network in list(self.served):
            if network not in wanted:
                self.stop(network)

        def serve(networks: Iterable[str]) -> dict[str, NetplumbError]:
            failed: dict[str, NetplumbError] = {}
            for network in networks:
                try:
                    self.serve(network, wanted[network])
                except NetplumbError as e:
                    failed[network] = e
            return failed

        failed = serve(sorted(wanted))
        # Addresses that move between networks: those that found theirs taken
        # let go of what they held (another wants it), then try again.
        moved = sorted(n for n, e in failed.items() if isinstance(e, Conflict))
        for network in moved:
            self.stop(network)
            del failed[network]
        failed.update(serve(moved))
        return failed

    def stop(self, network: str) -> None:
        """Stop answering for ``network`` (its sockets and TCP connections
        close). Idempotent: a network not served is a no-op."""
        with self._lock:
            old = self._endpoints.pop(network, None)
            if old is not None:
                self._in_loop(lambda: self._swap(old, None))
                log.info("DNS for %s on %s stopped", network, old.address)

    def close(self) -> None:
        """Stop everything and the thread. Idempotent; serve() afterwards is an error."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            olds = list(self._endpoints.values())
            self._endpoints.clear()

            def shut() -> None:
                for old in olds:
                    self._swap(old, None)
                self._stopping = True

            self._in_loop(shut)
            if self._thread is not None:
                self._thread.join()
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sockets, in the caller's thread

    def _open(self, ip: IPAddress) -> tuple[socket.socket, socket.socket]:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        made: list[socket.socket] = []
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(family, kind | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
                made.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                s.bind((str(ip), self._port))
                if kind == socket.SOCK_STREAM:
                    s.listen(64)
            return made[0], made[1]
        except OSError as e:
            for s in made:
                s.close()
            raise PreconditionFailed(
                f"cannot answer DNS on {ip} port {self._port}: {e.strerror}",
                field="address",
                hint="another DNS server (dnsmasq?) may hold the port on this address"
                " or on all addresses",
            ) from e

    # -- the loop thread

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dns", daemon=True)
            self._thread.start()

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread and wait for it (directly when the
        loop is not running)."""
        if self._thread is None or not self._thread.is_alive():
            fn()
            return
        done = threading.Event()
        errors: list[BaseException] = []

        def call() -> None:
            try:
                fn()
            except BaseException as e:  # handed to the caller
                errors.append(e)
            finally:
                done.set()

        self._post(call)
        done.wait()
        if errors:
            raise errors[0]

    def _post(self, fn: Callable[[], None]) -> None:
        self._calls.put(fn)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the loop is awake already
        except OSError:
            pass  # closed: the server is gone, and so is the work

    def _run(self) -> None:
        while not self._stopping:
            idle = [c.last for c in self._conns if c.pending == 0]
            timeout = max(0.05, min(idle) + self.tcp_idle - time.monotonic()) if idle else None
            for key, events in self._sel.select(timeout):
                try:
                    key.data(events)
                except Exception:
                    log.exception("DNS server: unexpected error")
            self._close_idle()
        for conn in list(self._conns):
            self._drop(conn)

    def _on_wake(self, events: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def _swap(self, old: _Endpoint | None, new: _Endpoint | None) -> None:
        if new is not None:
            self._sel.register(new.udp, selectors.EVENT_READ, lambda _ev: self._on_udp(new))
            self._sel.register(new.tcp, selectors.EVENT_READ, lambda _ev: self._on_accept(new))
        if old is not None:
            for conn in [c for c in self._conns if c.endpoint is old]:
                self._drop(conn)
            for s in (old.udp, old.tcp):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()

    def _answer(self, data: bytes, ep: _Endpoint, udp: bool) -> bytes | Forward | None:
        return answer(data, ep.network, self._lookup, forward=self._forward, ttl=self._ttl, udp=udp)

    def _on_udp(self, ep: _Endpoint) -> None:
        for _ in range(64):  # then let the other sockets have a turn
            if ep.udp.fileno() == -1:
                return  # stopped by an earlier event of the same round
            try:
                data, peer = ep.udp.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error from an earlier reply, say
                log.debug("DNS %s: recvfrom: %s", ep.network, e)
                continue
            result = self._answer(data, ep, udp=True)
            if isinstance(result, Forward):
                self._forward_query(result, functools.partial(self._send_udp, ep, peer), False)
            elif result is not None:
                self._send_udp(ep, peer, result)

    def _send_udp(self, ep: _Endpoint, peer: Any, reply: bytes | None) -> None:
        if reply is None or ep.udp.fileno() == -1:
            return  # nothing to say, or stopped meanwhile
        try:
            ep.udp.sendto(reply, peer)
        except OSError as e:
            log.debug("DNS %s: reply to %s lost: %s", ep.network, peer, e)

    def _on_accept(self, ep: _Endpoint) -> None:
        while True:
            try:
                sock, _ = ep.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("DNS %s: accept: %s", ep.network, e)
                return
            if len(self._conns) >= TCP_MAX_CONNECTIONS:
                log.debug("DNS %s: too many TCP connections; one refused", ep.network)
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, ep, time.monotonic())
            self._conns.add(conn)
            self._sel.register(sock, selectors.EVENT_READ, functools.partial(self._on_conn, conn))

    def _on_conn(self, conn: _Conn, events: int) -> None:
        if events & selectors.EVENT_READ and not conn.eof:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(conn)
                return
            if data == b"":
                conn.eof = True
            elif data:
                conn.last = time.monotonic()
                conn.buf += data
                if not self._take_queries(conn):
                    self._drop(conn)
                    return
        if events & selectors.EVENT_WRITE and conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return
            del conn.out[:sent]
            conn.last = time.monotonic()
        self._settle(conn)

    def _take_queries(self, conn: _Conn) -> bool:
        """Answer each complete length-prefixed message in the buffer; False
        if the connection must close (an empty message, a flood)."""
        while len(conn.buf) >= 2:
            (length,) = struct.unpack_from("!H", conn.buf)
            if length == 0:
                return False
            if len(conn.buf) < 2 + length:
                break
            data = bytes(conn.buf[2 : 2 + length])
            del conn.buf[: 2 + length]
            result = self._answer(data, conn.endpoint, udp=False)
            if isinstance(result, Forward):
                conn.pending += 1
                self._forward_query(result, functools.partial(self._send_tcp, conn), True)
            elif result is not None:
                self._send_tcp(conn, result, settle=False)
        return len(conn.out) <= TCP_MAX_OUTPUT

    def _send_tcp(self, conn: _Conn, reply: bytes | None, settle: bool = True) -> None:
        if conn.closed:
            return
        if settle:  # a forwarded reply, back from a worker
            conn.pending -= 1
        if reply is not None:
            conn.out += struct.pack("!H", len(reply)) + reply
        if settle:
            self._settle(conn)

    def _settle(self, conn: _Conn) -> None:
        """Close a connection that has nothing more to do; otherwise watch it
        for what it waits for."""
        if conn.closed:
            return
        if conn.eof and not conn.out and conn.pending == 0:
            self._drop(conn)
            return
        events = (0 if conn.eof else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn.out else 0
        )
        if events == conn.events:
            return
        # After EOF, with forwarded replies still to come, nothing is watched:
        # a readable EOF would wake the loop over and over.
        if conn.events == 0:
            self._sel.register(conn.sock, events, functools.partial(self._on_conn, conn))
        elif events == 0:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, events, functools.partial(self._on_conn, conn))
        conn.events = events

    def _close_idle(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns if c.pending == 0 and now - c.last > self.tcp_idle]:
            log.debug("DNS %s: idle TCP connection closed", conn.endpoint.network)
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        if conn.events:
            self._sel.unregister(conn.sock)
        conn.sock.close()

    # -- forwarding, on worker threads

    def _forward_query(
        self, fwd: Forward, deliver: Callable[[bytes | None], None], tcp: bool
    ) -> None:
        if not self._in_flight.acquire(blocking=False):
            log.debug("DNS: too many forwarded queries in flight; one dropped")
            deliver(None)
            return

        def work() -> None:
            try:
                reply = self._ask_upstreams(fwd.query, tcp)
            finally:
                self._in_flight.release()
            self._post(lambda: deliver(reply))

        try:
            self._workers.submit(work)
        except RuntimeError:  # shut down: closing
            self._in_flight.release()
            deliver(None)

    def _ask_upstreams(self, query: bytes, tcp: bool) -> bytes | None:
        for upstream in self._upstreams:
            try:
                reply = exchange(query, upstream, tcp=False, timeout=UPSTREAM_TIMEOUT)
                if tcp and reply.header.tc:  # truncated, and the client can take more
                    reply = exchange(query, upstream, tcp=True, timeout=UPSTREAM_TIMEOUT)
                reply.header.ra = 1  # we recursed for the client, whatever the upstream is
                return bytes(reply.pack())
            except Exception as e:
                log.debug("DNS upstream %s:%d: %s", upstream[0], upstream[1], e)
        return failure(query)
