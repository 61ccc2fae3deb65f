"""The CLI's light gRPC transport against a real grpcio server.

A stub Agent service (grpc generic handlers) answers with canned replies,
large replies, errors with metadata, slow replies and non-ASCII messages;
every case goes through both transports of ``Client`` and must come out the
same.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from netplumb.cli.client import Client, NetplumbError
from netplumb.cli.codes import Code
from netplumb.cli.wire import WireChannel, WireError, _literal
from netplumb.v1 import agent_pb2 as pb


def _endpoint(i: int) -> pb.Endpoint:
    return pb.Endpoint(
        id=f"{i:016x}",
        guest=f"netns:guest-{i}",
        ifname="eth1",
        host_ifname=f"np{i:012x}",
        mac="02:00:00:00:00:01",
        mtu=1500,
        addresses=[f"198.18.{i // 250}.{i % 250 + 1}/16", f"2001:db8::{i:x}/64"],
        state=pb.ENDPOINT_STATE_READY,
    )


class StubAgent:
    """Replies chosen per test through attributes."""

    def __init__(self) -> None:
        self.list_count = 3
        self.delay = 0.0
        self.seen: list[Any] = []

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> pb.Endpoint:
        self.seen.append(request)
        if request.spec.guest == "netns:bad":
            context.set_trailing_metadata(
                [
                    ("netplumb-reason", "invalid-spec"),
                    ("netplumb-field", "spec.mtu"),
                    ("netplumb-hint", "give 68..65535"),
                ]
            )
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "spec.mtu 70000 is out of range: ÿ ✓ 100%"
            )
        if request.spec.guest == "netns:boom":
            raise RuntimeError("unexpected")
        if self.delay:
            time.sleep(self.delay)
        ep = _endpoint(7)
        ep.spec.CopyFrom(request.spec)
        return ep

    def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListEndpointsResponse:
        return pb.ListEndpointsResponse(endpoints=[_endpoint(i) for i in range(self.list_count)])

    def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext
    ) -> pb.HostStatus:
        return pb.HostStatus(version="9.9", hostname="h", mode="standalone")


@pytest.fixture
def stub() -> Iterator[tuple[StubAgent, str]]:
    tmp = tempfile.mkdtemp(prefix="npwire")
    path = f"{tmp}/agent.sock"
    agent = StubAgent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(agent, name),
            request_deserializer=getattr(pb, req).FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )
        for name, req in (
            ("Attach", "AttachRequest"),
            ("ListEndpoints", "ListEndpointsRequest"),
            ("GetStatus", "GetStatusRequest"),
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("netplumb.v1.Agent", handlers),)
    )
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield agent, path
    finally:
        server.stop(0)
        shutil.rmtree(tmp, ignore_errors=True)


TRANSPORTS = ("grpc", "wire")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_replies_are_identical_on_both_transports(
    stub: tuple[StubAgent, str], transport: str
) -> None:
    agent, path = stub
    with Client(path, timeout=5, transport=transport) as c:
        ep = c.attach("br0", "netns:blue", addresses=["198.18.0.10/24"], gateways=["198.18.0.1"])
        assert ep.spec.guest == "netns:blue" and list(ep.spec.gateways) == ["198.18.0.1"]
        assert ep.host_ifname == _endpoint(7).host_ifname
        # several calls on one connection (new stream ids)
        for _ in range(5):
            assert c.status().version == "9.9"
        assert [e.id for e in c.list_endpoints()] == [_endpoint(i).id for i in range(3)]
    assert agent.seen[0].spec.addresses == ["198.18.0.10/24"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_reply_larger_than_the_default_window_arrives_whole(
    stub: tuple[StubAgent, str], transport: str
) -> None:
    agent, path = stub
    agent.list_count = 3000  # several hundred kB: beyond the 64 KiB default HTTP/2 window
    with Client(path, timeout=10, transport=transport) as c:
        eps = c.list_endpoints()
    assert len(eps) == 3000 and eps[-1] == _endpoint(2999)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_errors_carry_code_message_and_metadata(
    stub: tuple[StubAgent, str], transport: str
) -> None:
    _, path = stub
    with Client(path, timeout=5, transport=transport) as c:
        with pytest.raises(NetplumbError) as e:
            c.attach("br0", "netns:bad")
        assert e.value.code is Code.INVALID_ARGUMENT
        assert e.value.message == "spec.mtu 70000 is out of range: ÿ ✓ 100%"
        assert (e.value.reason, e.value.field, e.value.hint) == (
            "invalid-spec",
            "spec.mtu",
            "give 68..65535",
        )
        with pytest.raises(NetplumbError) as e2:
            c.attach("br0", "netns:boom")
        assert e2.value.code is Code.UNKNOWN  # a raw grpcio server; netplumbd answers INTERNAL
        # the connection is still usable after errors
        assert c.status().version == "9.9"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unimplemented_method(stub: tuple[StubAgent, str], transport: str) -> None:
    _, path = stub
    with Client(path, timeout=5, transport=transport) as c:
        with pytest.raises(NetplumbError) as e:
            c.check()
    assert e.value.code is Code.UNIMPLEMENTED


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deadline(stub: tuple[StubAgent, str], transport: str) -> None:
    agent, path = stub
    agent.delay = 1.0
    with Client(path, timeout=0.2, transport=transport) as c:
        with pytest.raises(NetplumbError) as e:
            c.attach("br0", "netns:blue")
    assert e.value.code is Code.DEADLINE_EXCEEDED
    assert "--timeout" in e.value.hint


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_daemon_is_unavailable_with_a_hint(transport: str) -> None:
    path = tempfile.mktemp(prefix="npwire-none")
    with Client(path, timeout=2, transport=transport) as c:
        with pytest.raises(NetplumbError) as e:
            c.status()
    assert e.value.code is Code.UNAVAILABLE
    assert path in e.value.message and "netplumbd running" in e.value.hint


def test_a_server_that_is_not_grpc_is_an_error_not_a_hang() -> None:
    tmp = tempfile.mkdtemp(prefix="npwire")
    path = f"{tmp}/junk.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def junk() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    t = threading.Thread(target=junk, daemon=True)
    t.start()
    try:
        ch = WireChannel(path, timeout=2)
        with pytest.raises(WireError) as e:
            ch.unary("/netplumb.v1.Agent/GetStatus", b"")
        assert e.value.code in (Code.UNAVAILABLE, Code.INTERNAL)
        ch.close()
    finally:
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_cli_never_imports_grpcio(stub: tuple[StubAgent, str]) -> None:
    """The point of the wire transport: the command's start-up stays small."""
    _, path = stub
    code = (
        "import sys, io\n"
        "from netplumb.cli.main import main\n"
        f"rc = main(['--socket', {path!r}, 'status'], env={{}}, stdout=io.StringIO())\n"
        "assert rc == 0, rc\n"
        "assert 'grpc' not in sys.modules, 'grpc was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("length", [0, 1, 126, 127, 128, 254, 255, 300, 16383, 16384, 70000])
def test_request_headers_are_hpack_literals_any_decoder_reads(length: int) -> None:
    """Request headers are encoded without hpack (literals, RFC 7541 6.2.2):
    hpack's own decoder must read them back exactly, across the 7-bit length
    prefix's boundaries, and they must not touch its table."""
    from hpack import Decoder

    fields = [(":path", "/p/" + "x" * length), ("x-" + "n" * length, "v" * (length // 2))]
    decoder = Decoder()
    decoder.max_header_list_size = 1 << 20
    block = b"".join(_literal(k, v) for k, v in fields)
    assert [(str(k), str(v)) for k, v in decoder.decode(block)] == fields
    assert len(decoder.header_table.dynamic_entries) == 0


def test_a_long_header_block_reaches_the_server(stub: tuple[StubAgent, str]) -> None:
    """grpcio decodes the literal block, also split over frames
    (CONTINUATION)."""
    _, path = stub
    ch = WireChannel(path, timeout=5, authority="a" * 5000)
    try:
        ch._connect()
        ch._max_frame = 1024  # smaller frames than the server allows: always legal
        reply = ch.unary("/netplumb.v1.Agent/GetStatus", pb.GetStatusRequest().SerializeToString())
        assert pb.HostStatus.FromString(reply).version == "9.9"
        # a second call on the same connection
        reply = ch.unary("/netplumb.v1.Agent/GetStatus", b"")
        assert pb.HostStatus.FromString(reply).version == "9.9"
    finally:
        ch.close()


def test_a_channel_closed_before_any_call_sends_nothing() -> None:
    """The preface goes out with the first request; closing a channel that
    never called sends no GOAWAY without it."""
    tmp = tempfile.mkdtemp(prefix="npwire")
    path = f"{tmp}/quiet.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        ch = WireChannel(path, timeout=2)
        ch._connect()
        conn, _ = srv.accept()
        ch.close()
        conn.settimeout(2)
        assert conn.recv(4096) == b""  # closed, nothing sent
        conn.close()
    finally:
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)
