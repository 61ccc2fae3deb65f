"""netplumb.agent.dns.DnsServer on real sockets: the servers run in a
subprocess inside a throwaway namespace (as the agent runs in the host's),
and a guest namespace, joined to it by a veth pair, asks them with busybox
nslookup and with dnslib over UDP and TCP, IPv4 and IPv6.

Layout (everything removed after the module, also on failure):

    npdns-s-*  dnss  198.18.53.x/24, 2001:db8:53::x/64   the servers
      │ veth
    npdns-c-*  dnsc  198.18.53.100/24, 2001:db8:53::100/64   the guest
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from fixtures.host import Namespaces, addresses, require_root, run
from netplumb.agent.drivers.netns import NetnsHandle, open_netns, socket_in

SERVER_SCRIPT = r"""
import json, logging, sys
from netplumb.agent.dns import DnsServer

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(asctime)s %(threadName)s %(name)s: %(message)s")
servers = {}


def table_lookup(table):
    return lambda network, name: table.get(network, {}).get(name, [])


for line in sys.stdin:
    cmd = json.loads(line)
    try:
        op, sid = cmd["op"], cmd["id"]
        result = None
        if op == "new":
            s = DnsServer(table_lookup(cmd["table"]), upstreams=cmd["upstreams"],
                          forward=cmd["forward"], port=cmd["port"])
            s.tcp_idle = cmd["tcp_idle"]
            servers[sid] = s
        elif op == "serve":
            servers[sid].serve(cmd["network"], cmd["address"])
        elif op == "stop":
            servers[sid].stop(cmd["network"])
        elif op == "follow":
            result = {n: type(e).__name__ for n, e in servers[sid].follow(cmd["wanted"]).items()}
        elif op == "served":
            result = servers[sid].served
        elif op == "close":
            servers.pop(sid).close()
        print(json.dumps({"ok": result}), flush=True)
    except Exception as e:
        print(json.dumps({"error": type(e).__name__ + ": " + str(e)}), flush=True)
for s in servers.values():
    s.close()
"""

NET = "198.18.53"
NET6 = "2001:db8:53"
GUEST4, GUEST6 = f"{NET}.100", f"{NET6}::100"
TABLE = {
    "blue": {
        "web": [f"{NET}.10", f"{NET6}::10"],
        "db": [f"{NET}.11"],
    },
    "red": {"web": [f"{NET}.30"]},
    "corp": {"db": [f"{NET}.20"]},
}


class Lab:
    """Two namespaces and a veth pair; a subprocess in the first one holds
    DnsServer instances, driven one JSON line at a time."""

    def __init__(self) -> None:
        self.ns = Namespaces()
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = ""
        self.client_ns: NetnsHandle | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.srv, self.cli = self.ns.new("npdns-s"), self.ns.new("npdns-c")
        run("ip", "-n", self.srv, "link", "add", "dnss", "type", "veth", "peer", "name", "dnsc",
            "netns", self.cli)  # fmt: skip
        run("ip", "-n", self.srv, "link", "set", "dnss", "up")
        run("ip", "-n", self.cli, "link", "set", "dnsc", "up")
        run("ip", "-n", self.cli, "addr", "add", f"{GUEST4}/24", "dev", "dnsc")
        run("ip", "-n", self.cli, "addr", "add", f"{GUEST6}/64", "dev", "dnsc", "nodad")
        self.client_ns = open_netns(f"/run/netns/{self.cli}")
        fd, self.log_path = tempfile.mkstemp(prefix="netplumb-dns-", suffix=".log")
        with os.fdopen(fd, "w") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.srv, sys.executable, "-c", SERVER_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.client_ns is not None:
            self.client_ns.close()
        self.ns.cleanup()
        if self.log_path:
            os.unlink(self.log_path)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()[-6000:]

    def call(self, op: str, sid: str, **kw: Any) -> Any:
        """Run one DnsServer call in the server process; its result, or
        RuntimeError carrying the exception's type and message."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, "id": sid, **kw}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"DNS server process did not answer {op}:\n{self.log()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["ok"]

    @contextmanager
    def server(
        self,
        upstreams: list[str] | None = None,
        forward: bool = False,
        port: int = 53,
        tcp_idle: float = 5.0,
    ) -> Iterator[str]:
        """A DnsServer in the server namespace, closed after the block."""
        sid = secrets.token_hex(4)
        self.call("new", sid, table=TABLE, upstreams=upstreams or [], forward=forward,
                  port=port, tcp_idle=tcp_idle)  # fmt: skip
        try:
            yield sid
        finally:
            self.call("close", sid)

    def add_address(self, address: str) -> None:
        """Put ``address`` on the server side (already there: fine)."""
        if ":" in address:
            run("ip", "-n", self.srv, "addr", "replace", f"{address}/64", "dev", "dnss", "nodad")
        else:
            run("ip", "-n", self.srv, "addr", "replace", f"{address}/24", "dev", "dnss")

    def socket(self, server: str, tcp: bool, port: int = 53, timeout: float = 3) -> socket.socket:
        """A socket in the guest namespace, connected to server:port."""
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        s = socket_in(self.client_ns, family, kind, 0)
        s.settimeout(timeout)
        try:
            s.connect((server, port))
        except BaseException:
            s.close()
            raise
        return s

    def query(
        self, server: str, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 3
    ) -> DNSRecord:
        """One query from the guest; the reply (its id checked)."""
        q = DNSRecord.question(name, qtype)
        with self.socket(server, tcp, timeout=timeout) as s:
            if tcp:
                send_frame(s, q.pack())
                data = recv_frame(s)
            else:
                s.send(q.pack())
                data = s.recv(65535)
        reply = DNSRecord.parse(data)
        assert reply.header.id == q.header.id
        assert reply.q.qname == q.q.qname
        return reply

    def unreachable(self, server: str) -> bool:
        """True when nothing listens on server:53 (UDP and TCP both refuse)."""
        with self.socket(server, tcp=False) as s:
            s.send(DNSRecord.question("web").pack())
            try:
                s.recv(65535)
                return False
            except ConnectionRefusedError:
                pass
        try:
            self.socket(server, tcp=True).close()
            return False
        except ConnectionRefusedError:
            return True


def send_frame(s: socket.socket, data: bytes) -> None:
    s.sendall(struct.pack("!H", len(data)) + data)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def recv_frame(s: socket.socket) -> bytes:
    (length,) = struct.unpack("!H", recv_exactly(s, 2))
    return recv_exactly(s, length)


def addrs(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()


# ---------------------------------------------------------------------------


def test_serves_before_its_address_exists_then_answers(lab: Lab) -> None:
    four, six = f"{NET}.1", f"{NET6}::1"
    with lab.server() as sid:
        # IP_FREEBIND / IPV6_FREEBIND: bound while the address is nowhere.
        lab.call("serve", sid, network="blue", address=four)
        lab.call("serve", sid, network="red", address=six)
        assert not {a for a in addresses("dnss", lab.srv) if a.startswith((four + "/", six + "/"))}
        assert lab.call("served", sid) == {"blue": four, "red": six}
        lab.add_address(four)
        lab.add_address(six)
        for tcp in (False, True):
            assert addrs(lab.query(four, "web", tcp=tcp)) == [f"{NET}.10"]
            assert addrs(lab.query(four, "web.blue", "AAAA", tcp=tcp)) == [f"{NET6}::10"]
            # The same name on red's socket, over IPv6: red's address.
            assert addrs(lab.query(six, "WEB", tcp=tcp)) == [f"{NET}.30"]


def test_answers_busybox_nslookup(lab: Lab) -> None:
    if shutil.which("busybox") is None:
        pytest.skip("busybox not installed")
    server = f"{NET}.4"
    lab.add_address(server)

    def nslookup(*args: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", lab.cli, "busybox", "nslookup", *args, server,
                   check=False)  # fmt: skip

    with lab.server() as sid:
        lab.call("serve", sid, network="blue", address=server)
        for name in ("web", "web.blue", "Web.Blue."):
            res = nslookup(name)
            assert res.returncode == 0, res.stdout + res.stderr
            assert f"Address: {NET}.10" in res.stdout
            assert f"Address: {NET6}::10" in res.stdout
        res = nslookup("nope")
        assert res.returncode != 0
        assert "NXDOMAIN" in res.stdout + res.stderr
        res = nslookup("-type=soa", "blue")
        assert res.returncode == 0 and "hostmaster.blue" in res.stdout, res.stdout
        res = nslookup("web.red")  # another network's zone: not from this socket
        assert res.returncode != 0
        assert "REFUSED" in res.stdout + res.stderr


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_answers_over_udp_and_tcp(lab: Lab, tcp: bool) -> None:
    server = f"{NET}.5"
    lab.add_address(server)
    with lab.server() as sid:
        lab.call("serve", sid, network="blue", address=server)
        r = lab.query(server, "web", tcp=tcp)
        assert (r.header.rcode, r.header.aa, addrs(r)) == (RCODE.NOERROR, 1, [f"{NET}.10"])
        r = lab.query(server, "db", "AAAA", tcp=tcp)  # NODATA
        assert (r.header.rcode, r.rr, [QTYPE[a.rtype] for a in r.auth]) == (0, [], ["SOA"])
        r = lab.query(server, "nope.blue", tcp=tcp)
        assert r.header.rcode == RCODE.NXDOMAIN
        assert [str(a.rname) for a in r.auth] == ["blue."]
        assert lab.query(server, "example.com", tcp=tcp).header.rcode == RCODE.REFUSED


def test_tcp_carries_several_queries_and_closes_when_idle(lab: Lab) -> None:
    server = f"{NET}.6"
    lab.add_address(server)
    with lab.server(tcp_idle=1.0) as sid:
        lab.call("serve", sid, network="blue", address=server)
        with lab.socket(server, tcp=True) as s:
            queries = [
                DNSRecord.question(n, t) for n, t in [("web", "A"), ("web", "AAAA"), ("x", "A")]
            ]
            s.sendall(b"".join(struct.pack("!H", len(q.pack())) + q.pack() for q in queries))
            replies = {r.header.id: r for r in (DNSRecord.parse(recv_frame(s)) for _ in queries)}
            assert addrs(replies[queries[0].header.id]) == [f"{NET}.10"]
            assert addrs(replies[queries[1].header.id]) == [f"{NET6}::10"]
            assert replies[queries[2].header.id].header.rcode == RCODE.NXDOMAIN
            # A message split across writes is reassembled.
            q = DNSRecord.question("db").pack()
            framed = struct.pack("!H", len(q)) + q
            s.sendall(framed[:1])
            time.sleep(0.1)
            s.sendall(framed[1:9])
            time.sleep(0.1)
            s.sendall(framed[9:])
            assert addrs(DNSRecord.parse(recv_frame(s))) == [f"{NET}.11"]
            # Then quiet: the server closes after its idle time.
            start = time.monotonic()
            s.settimeout(5)
            assert s.recv(1) == b""
            assert 0.5 < time.monotonic() - start < 3
        # A client that half-closes still gets its answer.
        with lab.socket(server, tcp=True) as s:
            send_frame(s, DNSRecord.question("web").pack())
            s.shutdown(socket.SHUT_WR)
            assert addrs(DNSRecord.parse(recv_frame(s))) == [f"{NET}.10"]
            assert s.recv(1) == b""


def test_forwards_outside_names_only_when_asked(lab: Lab) -> None:
    upstream, dead, forwarding, refusing = (f"{NET}.{i}" for i in (2, 7, 8, 9))
    for a in (upstream, dead, forwarding, refusing):
        lab.add_address(a)
    with (
        lab.server(port=5300) as up,
        lab.server(upstreams=[dead, f"{upstream}:5300"], forward=True) as fw,
        lab.server(forward=False) as nf,
        lab.server(upstreams=[dead], forward=True) as broken,
    ):
        lab.call("serve", up, network="corp", address=upstream)
        lab.call("serve", fw, network="blue", address=forwarding)
        lab.call("serve", nf, network="blue", address=refusing)
        lab.call("serve", broken, network="blue", address=f"{NET6}::9")
        lab.add_address(f"{NET6}::9")
        for tcp in (False, True):
            # Nothing answers on the dead upstream (refused at once); the next one does.
            r = lab.query(forwarding, "db.corp", tcp=tcp)
            assert (r.header.rcode, addrs(r)) == (RCODE.NOERROR, [f"{NET}.20"])
            assert r.header.ra == 1
            # Our own names never leave: "db" is blue's, and unknown "nope" is NXDOMAIN.
            assert addrs(lab.query(forwarding, "db", tcp=tcp)) == [f"{NET}.11"]
            assert lab.query(forwarding, "nope", tcp=tcp).header.rcode == RCODE.NXDOMAIN
            # Another network's zone is an outside name: the upstream refuses it.
            assert lab.query(forwarding, "web.red", tcp=tcp).header.rcode == RCODE.REFUSED
            # Forwarding off: refused here.
            r = lab.query(refusing, "db.corp", tcp=tcp)
            assert (r.header.rcode, r.rr) == (RCODE.REFUSED, [])
            # Every upstream failing: SERVFAIL.
            r = lab.query(f"{NET6}::9", "db.corp", tcp=tcp)
            assert r.header.rcode == RCODE.SERVFAIL


def test_moves_and_stops(lab: Lab) -> None:
    first, second = f"{NET}.14", f"{NET}.15"
    lab.add_address(first)
    lab.add_address(second)
    with lab.server() as sid, lab.server() as other:
        lab.call("serve", sid, network="blue", address=first)
        assert addrs(lab.query(first, "db")) == [f"{NET}.11"]
        with lab.socket(first, tcp=True) as held:  # an open connection goes with the move
            lab.call("serve", sid, network="blue", address=second)
            assert lab.call("served", sid) == {"blue": second}
            assert addrs(lab.query(second, "db", tcp=True)) == [f"{NET}.11"]
            assert lab.unreachable(first)
            assert held.recv(1) == b""
        lab.call("serve", sid, network="blue", address=second)  # the same again: nothing changes
        assert addrs(lab.query(second, "db")) == [f"{NET}.11"]
        with pytest.raises(RuntimeError, match="Conflict"):
            lab.call("serve", sid, network="red", address=second)
        # Another server (another agent) cannot take the port either.
        with pytest.raises(RuntimeError, match="PreconditionFailed"):
            lab.call("serve", other, network="red", address=second)
        assert addrs(lab.query(second, "db")) == [f"{NET}.11"]
        lab.call("stop", sid, network="blue")
        lab.call("stop", sid, network="blue")  # stopping what is stopped: a no-op
        assert lab.call("served", sid) == {}
        assert lab.unreachable(second)
        lab.call("serve", other, network="red", address=second)  # the port is free again
        assert addrs(lab.query(second, "web")) == [f"{NET}.30"]


def test_follow_hands_an_address_from_a_deleted_network_to_a_new_one(lab: Lab) -> None:
    """One change (a watch snapshot) deletes a network and creates another
    with the same DNS address; then two networks swap addresses."""
    first, second = f"{NET}.17", f"{NET}.18"
    lab.add_address(first)
    lab.add_address(second)
    with lab.server() as sid:
        assert lab.call("follow", sid, wanted={"blue": first}) == {}
        assert lab.call("follow", sid, wanted={"red": first}) == {}
        assert lab.call("served", sid) == {"red": first}
        assert addrs(lab.query(first, "web")) == [f"{NET}.30"]  # red's table
        assert lab.call("follow", sid, wanted={"red": first, "blue": second}) == {}
        assert lab.call("follow", sid, wanted={"red": second, "blue": first}) == {}
        assert lab.call("served", sid) == {"red": second, "blue": first}
        assert addrs(lab.query(first, "db")) == [f"{NET}.11"]
        assert addrs(lab.query(second, "web")) == [f"{NET}.30"]
        assert lab.call("follow", sid, wanted={}) == {}
        assert lab.call("served", sid) == {}
        assert lab.unreachable(first) and lab.unreachable(second)


def test_malformed_packets_do_not_stop_it(lab: Lab) -> None:
    server = f"{NET}.16"
    lab.add_address(server)
    with lab.server() as sid:
        lab.call("serve", sid, network="blue", address=server)
        with lab.socket(server, tcp=False, timeout=0.3) as s:
            for junk in (b"", b"\x00", os.urandom(11), b"\x12\x34\x81\x80" + bytes(8)):
                s.send(junk)  # too short, or a response: dropped, no reply
                with pytest.raises(TimeoutError):
                    s.recv(65535)
            s.send(b"\x12\x34\x01\x00\x00\x01" + bytes(6) + b"\x03we")
            assert DNSRecord.parse(s.recv(65535)).header.rcode == RCODE.FORMERR
        with lab.socket(server, tcp=True) as s:
            send_frame(s, b"\x43\x21\x01\x00\x00\x01" + bytes(6) + b"\xc0\x0c\x00\x01\x00\x01")
            r = DNSRecord.parse(recv_frame(s))
            assert (r.header.id, r.header.rcode) == (0x4321, RCODE.FORMERR)
            s.sendall(b"\x00\x00")  # a zero-length message: the connection is closed
            assert s.recv(1) == b""
        for tcp in (False, True):
            assert addrs(lab.query(server, "web", tcp=tcp)) == [f"{NET}.10"]
