"""Metric plumbing: the RPC interceptor (in-process gRPC server, fake host),
convergence counts, gauges read at scrape time from cached state, the
sampler, and the exposition itself (every name netplumb_*)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import grpc
import pytest
from netplumb.agent import engine as engine_module
from netplumb.agent.api.server import SERVICE_NAME, Server
from netplumb.agent.core.model import HostFeatures, PeerRecord
from netplumb.agent.drivers.fake import FakeHost, FakeNetlink
from netplumb.agent.engine import Engine, PeerView, TunnelView
from netplumb.agent.metrics import Metrics, dependencies
from netplumb.agent.store import FileStore
from netplumb.v1 import agent_pb2 as pb
from netplumb.v1 import agent_pb2_grpc as pb_grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

BLUE = "/run/netns/blue"


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def exposition(m: Metrics) -> dict[str, list[Any]]:
    """The scrape as Prometheus parses it: family name -> samples."""
    text = generate_latest(m.registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


# ----------------------------------------------------- RPCs, in-process gRPC


@dataclass
class Agent:
    stub: pb_grpc.AgentStub
    channel: grpc.Channel
    host: FakeHost
    metrics: Metrics


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    tmp = tempfile.mkdtemp(prefix="npmetrics")
    host = FakeHost()
    host.add_netns(BLUE)
    monkeypatch.setattr(engine_module, "open_netns", host.open_netns)
    monkeypatch.setattr(engine_module, "netns_ident", host.netns_ident)
    driver = FakeNetlink(host, HostFeatures(bridge_vlan_filtering=True, extras={"veth": True}))
    engine = Engine(FileStore(f"{tmp}/state"), driver)
    metrics = Metrics(sample_interval=60, min_sample_gap=0)
    metrics.watch(engine)
    server = Server(engine, f"{tmp}/agent.sock", f"{tmp}/state", workers=4, metrics=metrics)
    server.start()
    channel = grpc.insecure_channel(f"unix:{tmp}/agent.sock")
    try:
        yield Agent(pb_grpc.AgentStub(channel), channel, host, metrics)
    finally:
        channel.close()
        server.stop(0)
        metrics.close()
        shutil.rmtree(tmp, ignore_errors=True)


def attach(guest: str = "netns:blue", address: str = "198.18.0.10/24") -> pb.AttachRequest:
    return pb.AttachRequest(spec=pb.EndpointSpec(guest=guest, bridge="br0", addresses=[address]))


def test_rpcs_are_counted_and_timed_by_code_and_reason(agent: Agent) -> None:
    m, stub = agent.metrics, agent.stub
    stub.CreateBridge(pb.CreateBridgeRequest(spec=pb.BridgeSpec(name="br0")), timeout=10)
    stub.Attach(attach(), timeout=10)
    assert value(m, "netplumb_endpoints") == 1
    for bad in (attach(address="198.18.0.300/24"), attach(address="198.18.0.11/24")):
        with pytest.raises(grpc.RpcError):
            stub.Attach(bad, timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Detach(pb.DetachRequest(guest=""), timeout=10)
    stub.Detach(pb.DetachRequest(guest="netns:blue"), timeout=10)
    stub.ListEndpoints(pb.ListEndpointsRequest(), timeout=10)

    assert value(m, "netplumb_rpc_requests_total", method="CreateBridge", code="OK") == 1
    assert value(m, "netplumb_rpc_requests_total", method="Attach", code="OK") == 1
    assert value(m, "netplumb_rpc_requests_total", method="Attach", code="INVALID_ARGUMENT") == 1
    assert value(m, "netplumb_rpc_requests_total", method="Attach", code="ALREADY_EXISTS") == 1
    assert value(m, "netplumb_rpc_requests_total", method="ListEndpoints", code="OK") == 1
    # reasons as status.py chose them (the trailing metadata), by method
    assert value(m, "netplumb_rpc_errors_total", method="Attach", reason="invalid-spec") == 1
    assert value(m, "netplumb_rpc_errors_total", method="Attach", reason="conflict") == 1
    assert value(m, "netplumb_rpc_errors_total", method="Detach", reason="invalid-spec") == 1
    assert value(m, "netplumb_rpc_errors_total", method="Attach", reason="not-found") is None
    # latency: one observation per call, by code
    assert value(m, "netplumb_attach_duration_seconds_count", code="OK") == 1
    assert value(m, "netplumb_attach_duration_seconds_count", code="INVALID_ARGUMENT") == 1
    assert value(m, "netplumb_attach_duration_seconds_bucket", code="OK", le="+Inf") == 1
    assert 0 < (value(m, "netplumb_attach_duration_seconds_sum", code="OK") or 0) < 10
    assert value(m, "netplumb_detach_duration_seconds_count", code="OK") == 1
    assert value(m, "netplumb_detach_duration_seconds_count", code="INVALID_ARGUMENT") == 1
    assert value(m, "netplumb_endpoints") == 0


def test_undecodable_requests_count_as_invalid_message(agent: Agent) -> None:
    call = agent.channel.unary_unary(f"/{SERVICE_NAME}/Attach")
    with pytest.raises(grpc.RpcError) as e:
        call(b"\xff\xff\xff", timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    md = dict(e.value.trailing_metadata() or ())  # type: ignore[attr-defined]
    assert md["netplumb-reason"] == "invalid-message"
    m = agent.metrics
    assert value(m, "netplumb_rpc_errors_total", method="Attach", reason="invalid-message") == 1
    assert value(m, "netplumb_attach_duration_seconds_count", code="INVALID_ARGUMENT") == 1


def test_reconcile_counts_what_it_repaired(agent: Agent) -> None:
    m, stub = agent.metrics, agent.stub
    stub.CreateBridge(pb.CreateBridgeRequest(spec=pb.BridgeSpec(name="br0")), timeout=10)
    stub.Attach(attach(), timeout=10)
    before = value(m, "netplumb_reconciliations_total", cause="reconcile") or 0
    agent.host.set_mtu(BLUE, "eth1", 1400)
    reply = stub.Reconcile(pb.ReconcileRequest(), timeout=10)
    assert len(reply.repaired) == 1
    assert value(m, "netplumb_reconciliations_total", cause="reconcile") == before + 1
    assert value(m, "netplumb_repairs_total", cause="reconcile") == 1
    assert value(m, "netplumb_repair_failures_total", cause="reconcile") == 0
    assert value(m, "netplumb_orphans_collected_total", cause="reconcile") == 0


# ------------------------------------------------- gauges, sampler, exposition


@dataclass
class FakeOvs:
    connected: bool = False
    vswitchd: bool | None = None

    def vswitchd_up(self) -> bool | None:
        return self.vswitchd


@dataclass
class FakeUp:
    up: bool = False


@dataclass
class FakeStore:
    endpoints_: dict[str, Any] = field(default_factory=dict)

    def endpoints(self) -> dict[str, Any]:
        return self.endpoints_

    def bridges(self) -> dict[str, Any]:
        return {"br0": object(), "br1": object()}

    def peers(self) -> dict[str, Any]:
        return {"198.18.0.12": object()}


class FakeEngine:
    """What Metrics reads of an Engine; status_counts and list_peers can be
    made to hang, as they would on a Docker that does not answer."""

    def __init__(self) -> None:
        self.store = FakeStore({"a": object(), "b": object(), "c": object()})
        self.ovs: FakeOvs | None = FakeOvs()
        self.docker: FakeUp | None = FakeUp(up=True)
        self.cluster: Any = None
        self.on_converged: list[Any] = []
        self.release = threading.Event()
        self.release.set()
        self.not_ready = 1
        self.tunnel_state = "up"

    def status_counts(self) -> dict[str, int]:
        self.release.wait()
        return {"endpoints_not_ready": self.not_ready}

    def list_peers(self) -> list[PeerView]:
        record = PeerRecord(ip_address("198.18.0.12"))
        tunnel = TunnelView("br0", 100, "vxlan", "vxlan100", self.tunnel_state)
        return [PeerView(record, (tunnel,))]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def start_up(engine: Any) -> None:
    """What the daemon's start-up reconcile ends with: a convergence."""
    for observer in engine.on_converged:
        observer("reconcile", 0, 0, 0)


def test_the_first_sample_waits_for_the_start_up_reconcile() -> None:
    """Sampling (a dump of every host link, a look at every guest) while the
    start-up reconcile runs would compete with it."""
    engine = FakeEngine()
    m = Metrics(sample_interval=60, min_sample_gap=0)
    m.watch(engine)  # type: ignore[arg-type]
    try:
        time.sleep(0.3)
        assert not m.sample.at
        start_up(engine)
        wait_for(lambda: m.sample.at)
    finally:
        m.close()


def test_gauges_and_dependencies_from_cached_state() -> None:
    engine = FakeEngine()
    m = Metrics(sample_interval=60, min_sample_gap=0)
    # Before the engine exists (metrics are bound first): only build info.
    assert value(m, "netplumb_endpoints") is None
    assert value(m, "netplumb_build_info", version=__import__("netplumb.agent").agent.__version__)
    m.watch(engine)  # type: ignore[arg-type]
    try:
        assert (value(m, "netplumb_endpoints"), value(m, "netplumb_bridges")) == (3, 2)
        assert value(m, "netplumb_peers") == 1
        assert value(m, "netplumb_dependency_up", dependency="ovsdb") == 0
        assert value(m, "netplumb_dependency_up", dependency="ovs-vswitchd") is None  # unknown
        assert value(m, "netplumb_dependency_up", dependency="docker") == 1
        assert value(m, "netplumb_dependency_up", dependency="etcd") is None  # standalone
        assert engine.ovs is not None and engine.docker is not None
        engine.ovs.connected, engine.ovs.vswitchd = True, False
        engine.docker.up = False
        engine.cluster = FakeUp(up=True)
        assert value(m, "netplumb_dependency_up", dependency="ovsdb") == 1
        assert value(m, "netplumb_dependency_up", dependency="ovs-vswitchd") == 0
        assert value(m, "netplumb_dependency_up", dependency="docker") == 0
        assert value(m, "netplumb_dependency_up", dependency="etcd") == 1
        engine.ovs = None
        engine.docker = None
        assert [name for name, _ in dependencies(engine)] == ["etcd"]  # type: ignore[arg-type]

        start_up(engine)
        wait_for(lambda: m.sample.at)
        assert value(m, "netplumb_endpoints_not_ready") == 1
        labels = {"bridge": "br0", "peer": "198.18.0.12", "type": "vxlan"}
        assert value(m, "netplumb_tunnel_up", **labels) == 1
        assert 0 <= (value(m, "netplumb_sample_age_seconds") or -1) < 5
        # A convergence both counts and makes a new sample.
        engine.tunnel_state, engine.not_ready = "missing", 0
        for observer in engine.on_converged:
            observer("container-start", 2, 1, 0)
        assert value(m, "netplumb_reconciliations_total", cause="container-start") == 1
        assert value(m, "netplumb_repairs_total", cause="container-start") == 2
        assert value(m, "netplumb_repair_failures_total", cause="container-start") == 1
        wait_for(lambda: value(m, "netplumb_tunnel_up", **labels) == 0)
        assert value(m, "netplumb_endpoints_not_ready") == 0
    finally:
        m.close()


def test_a_scrape_does_not_wait_for_a_hanging_sample() -> None:
    """Docker (status_counts) hangs: the scrape answers at once from the
    store and the last sample, and the sample's age grows."""
    engine = FakeEngine()
    m = Metrics(sample_interval=60, min_sample_gap=0)
    m.watch(engine)  # type: ignore[arg-type]
    try:
        start_up(engine)
        wait_for(lambda: m.sample.at)
        engine.release.clear()
        m.observe_rpc("Attach", "OK", "", 0.01)  # wakes the sampler, which now hangs
        time.sleep(0.05)
        started = time.monotonic()
        families = exposition(m)
        assert time.monotonic() - started < 1
        assert families["netplumb_endpoints"][0].value == 3
        assert families["netplumb_endpoints_not_ready"][0].value == 1  # the last sample
    finally:
        engine.release.set()
        m.close()


def test_every_metric_is_named_netplumb_and_documented() -> None:
    engine = FakeEngine()
    m = Metrics(sample_interval=60, min_sample_gap=0)
    m.watch(engine)  # type: ignore[arg-type]
    try:
        m.observe_rpc("Attach", "OK", "", 0.02)
        m.observe_rpc("Detach", "NOT_FOUND", "not-found", 0.01)
        wait_for(lambda: m.sample.at)
        text = generate_latest(m.registry).decode()
    finally:
        m.close()
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    assert all(n.startswith("netplumb_") for n in names), sorted(names)
    assert all(f.documentation for f in families)
    for expected in (
        "netplumb_rpc_requests",
        "netplumb_rpc_errors",
        "netplumb_attach_duration_seconds",
        "netplumb_detach_duration_seconds",
        "netplumb_reconciliations",
        "netplumb_repairs",
        "netplumb_repair_failures",
        "netplumb_orphans_collected",
        "netplumb_endpoints",
        "netplumb_endpoints_not_ready",
        "netplumb_bridges",
        "netplumb_peers",
        "netplumb_tunnel_up",
        "netplumb_dependency_up",
        "netplumb_build_info",
        "netplumb_sample_age_seconds",
        "netplumb_process_resident_memory_bytes",
    ):
        assert expected in names, expected


def test_an_error_without_a_reason_is_named_after_its_code() -> None:
    m = Metrics()
    m.observe_rpc("GetStatus", "DEADLINE_EXCEEDED", "", 1.0)
    assert value(m, "netplumb_rpc_errors_total", method="GetStatus", reason="deadline-exceeded")


def test_the_http_server_serves_a_bounded_number_of_connections_at_once(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Any local user can connect to the metrics port: idle connections take
    at most MAX_CONNECTIONS threads; more are closed unanswered, and no
    traceback reaches the log for clients that go away."""
    import socket

    from netplumb.agent.metrics import MAX_CONNECTIONS, MetricsServer

    server = MetricsServer(Metrics(), "127.0.0.1", 0)
    server.start()
    idle: list[socket.socket] = []
    try:
        assert server._httpd is not None
        port = server._httpd.server_address[1]
        for _ in range(MAX_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert extra.recv(100) == b""  # closed, unanswered
        extra.close()
        for s in idle[:2]:
            s.close()  # hung up without a request
        idle = idle[2:]
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                reply = c.recv(100)
            if reply or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply.startswith(b"HTTP/1.0 200"), reply
    finally:
        for s in idle:
            s.close()
        server.close()
    assert "Traceback" not in capfd.readouterr().err
