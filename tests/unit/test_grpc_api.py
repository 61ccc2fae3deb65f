"""The real gRPC server in-process, on a unix socket, with an Engine whose
netlink driver and namespace functions are the fake host's."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from netplumb.agent import engine as engine_module
from netplumb.agent.api.server import SERVICE_NAME, Server
from netplumb.agent.core import naming
from netplumb.agent.core.model import HostFeatures
from netplumb.agent.drivers.fake import HOST, FakeHost, FakeNetlink
from netplumb.agent.engine import Engine
from netplumb.agent.store import FileStore
from netplumb.v1 import agent_pb2 as pb
from netplumb.v1 import agent_pb2_grpc as pb_grpc

Code = grpc.StatusCode
BLUE = "/run/netns/blue"
RED = "/run/netns/red"


@dataclass
class Agent:
    stub: pb_grpc.AgentStub
    channel: grpc.Channel
    host: FakeHost
    driver: FakeNetlink
    store: FileStore
    state_dir: str


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    # A short directory: unix socket paths are limited to 108 bytes.
    tmp = tempfile.mkdtemp(prefix="npunit")
    host = FakeHost()
    host.add_netns(BLUE)
    host.add_netns(RED)
    monkeypatch.setattr(engine_module, "open_netns", host.open_netns)
    monkeypatch.setattr(engine_module, "netns_ident", host.netns_ident)
    driver = FakeNetlink(host, HostFeatures(bridge_vlan_filtering=True, extras={"veth": True}))
    store = FileStore(f"{tmp}/state")
    server = Server(Engine(store, driver), f"{tmp}/agent.sock", f"{tmp}/state", workers=4)
    server.start()
    server.set_serving()
    channel = grpc.insecure_channel(f"unix:{tmp}/agent.sock")
    try:
        yield Agent(pb_grpc.AgentStub(channel), channel, host, driver, store, f"{tmp}/state")
    finally:
        channel.close()
        server.stop(0)
        shutil.rmtree(tmp, ignore_errors=True)


def fails(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=10)
    return e.value


def trailers(e: grpc.RpcError) -> dict[str, str]:
    return {k: v for k, v in (e.trailing_metadata() or ())}  # type: ignore[attr-defined]


def attach_request(guest: str = "netns:blue", **kw: Any) -> pb.AttachRequest:
    kw.setdefault("bridge", "br0")
    kw.setdefault("addresses", ["198.18.0.10/24", "2001:db8::10/64"])
    kw.setdefault("gateways", ["198.18.0.1"])
    return pb.AttachRequest(spec=pb.EndpointSpec(guest=guest, **kw))


def create_bridge(a: Agent, name: str = "br0", **kw: Any) -> pb.Bridge:
    return a.stub.CreateBridge(
        pb.CreateBridgeRequest(spec=pb.BridgeSpec(name=name, **kw)), timeout=10
    )


# ------------------------------------------------------------ invalid input


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("CreateBridge", pb.CreateBridgeRequest(spec=pb.BridgeSpec(name="")), "spec.name"),
        (
            "CreateBridge",
            pb.CreateBridgeRequest(spec=pb.BridgeSpec(name="br0", mtu=10)),
            "spec.mtu",
        ),
        ("Attach", attach_request(addresses=["198.18.0.10"]), "spec.addresses[0]"),
        ("Attach", attach_request(guest="netns:../x"), "spec.guest"),
        ("Attach", attach_request(guest="/run/netns/../x"), "spec.guest"),
        ("Attach", attach_request(mtu=1000), "spec.mtu"),
        ("Attach", attach_request(bridge="a-very-long-bridge"), "spec.bridge"),
        ("Attach", attach_request(gateways=["198.18.0.1", "198.18.0.2"]), "spec.gateways[1]"),
        (
            "Attach",
            attach_request(routes=[pb.Route(destination="198.19.0.1/16")]),
            "spec.routes[0].destination",
        ),
        ("Detach", pb.DetachRequest(guest=""), "guest"),
        ("Detach", pb.DetachRequest(guest="netns:blue", ifname="eth 1"), "ifname"),
        ("GetEndpoint", pb.GetEndpointRequest(guest="pid:0"), "guest"),
        ("ListEndpoints", pb.ListEndpointsRequest(bridge="bad bridge"), "bridge"),
        (
            "AddRoute",
            pb.AddRouteRequest(
                guest="netns:blue", route=pb.Route(destination="198.18.128.0/17", via="::1")
            ),
            "route.via",
        ),
        (
            "DeleteRoute",
            pb.DeleteRouteRequest(guest="netns:blue", destination="198.18.128.1/17"),
            "destination",
        ),
        ("DeleteBridge", pb.DeleteBridgeRequest(name=""), "name"),
    ],
)
def test_invalid_requests_are_invalid_argument_with_the_field(
    agent: Agent, method: str, request_: Any, field: str
) -> None:
    e = fails(getattr(agent.stub, method), request_)
    assert e.code() is Code.INVALID_ARGUMENT
    md = trailers(e)
    assert md["netplumb-reason"] == "invalid-spec"
    assert md["netplumb-field"] == field
    assert e.details()
    assert agent.driver.applied == []  # refused before anything was touched


def test_host_bits_hint_travels_in_the_metadata(agent: Agent) -> None:
    e = fails(agent.stub.Attach, attach_request(routes=[pb.Route(destination="198.19.0.1/16")]))
    assert trailers(e)["netplumb-hint"] == "did you mean 198.19.0.0/16?"


def test_dhcp_with_a_static_ipv4_address_is_refused(agent: Agent) -> None:
    e = fails(agent.stub.Attach, attach_request(dhcp=pb.Dhcp(client="udhcpc")))
    assert e.code() is Code.INVALID_ARGUMENT
    assert "from the lease" in e.details()


def test_unknown_dhcp_client_is_refused(agent: Agent) -> None:
    e = fails(agent.stub.Attach, attach_request(addresses=[], dhcp=pb.Dhcp(client="pump")))
    assert e.code() is Code.INVALID_ARGUMENT
    assert trailers(e)["netplumb-field"] == "spec.dhcp.client"


# ------------------------------------------------------------ unimplemented


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        (
            "CreateNetwork",
            pb.CreateNetworkRequest(spec=pb.NetworkSpec(name="n", subnet="198.19.0.0/24", vni=5)),
        ),
        ("DeleteNetwork", pb.DeleteNetworkRequest(name="n")),
        ("ListNetworks", pb.ListNetworksRequest()),
        ("Attach", attach_request(name="web")),
    ],
)
def test_cluster_parts_in_standalone_mode_say_so(agent: Agent, method: str, request_: Any) -> None:
    create_bridge(agent)
    e = fails(getattr(agent.stub, method), request_)
    assert e.code() is Code.FAILED_PRECONDITION
    assert "cluster" in e.details()


def test_docker_guests_without_docker_are_unavailable(agent: Agent) -> None:
    create_bridge(agent)
    e = fails(agent.stub.Attach, attach_request(guest="docker:web"))
    assert e.code() is Code.UNAVAILABLE and trailers(e)["netplumb-field"] == "spec.guest"
    # a bare name is a named namespace when Docker is not there
    agent.stub.Attach(attach_request(guest="blue"), timeout=10)


# ---------------------------------------------------- unexpected: INTERNAL


def test_unexpected_exception_in_the_engine_is_internal_never_unknown(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, **kw: object) -> None:
        raise RuntimeError("netlink exploded")

    monkeypatch.setattr(agent.driver, "observe_bridge", broken)
    e = fails(agent.stub.CreateBridge, pb.CreateBridgeRequest(spec=pb.BridgeSpec(name="br0")))
    assert e.code() is Code.INTERNAL
    assert "RuntimeError" in e.details() and "netlink exploded" in e.details()
    md = trailers(e)
    assert md["netplumb-reason"] == "internal" and "bug" in md["netplumb-hint"]


def test_failed_attach_is_rolled_back(agent: Agent) -> None:
    create_bridge(agent)
    agent.driver.fail_at = "AddRoute"
    e = fails(agent.stub.Attach, attach_request())
    assert e.code() is Code.INTERNAL and "fault injected" in e.details()
    assert agent.host.tagged_host_links() == [
        ("br0", "bridge", f"netplumb:br:{agent.store.agent_id}")
    ]
    assert agent.host.link(BLUE, "eth1") is None
    assert not agent.store.endpoints()
    agent.driver.fail_at = ""
    assert agent.stub.Attach(attach_request(), timeout=10).ifname == "eth1"


# ------------------------------------------------- health and reflection


def test_health_service_reports_serving(agent: Agent) -> None:
    health = health_pb2_grpc.HealthStub(agent.channel)
    for service in ("", SERVICE_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE_NAME == "netplumb.v1.Agent"


def test_reflection_lists_the_services(agent: Agent) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(agent.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "netplumb.v1.Agent",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


# ------------------------------------------------------- the verbs, end to end


def test_bridge_create_is_idempotent_and_owned(agent: Agent) -> None:
    first = create_bridge(agent, addresses=["198.18.0.1/24"])
    second = create_bridge(agent, addresses=["198.18.0.1/24"])
    assert first.owned and first.present and first.created
    assert not second.created  # the second call made nothing
    second.created = True
    assert first == second
    br = agent.host.link(HOST, "br0")
    assert (
        br is not None
        and br.kind == "bridge"
        and [str(a) for a in br.addresses] == ["198.18.0.1/24"]
    )
    e = fails(
        agent.stub.CreateBridge, pb.CreateBridgeRequest(spec=pb.BridgeSpec(name="br0", mtu=9000))
    )
    assert e.code() is Code.ALREADY_EXISTS and trailers(e)["netplumb-field"] == "spec"


def test_existing_foreign_bridge_is_adopted_and_never_deleted(agent: Agent) -> None:
    agent.host.add_link(HOST, "bri0", "bridge", up=True)
    adopted = create_bridge(agent, "bri0")
    assert not adopted.owned and not adopted.created
    reply = agent.stub.DeleteBridge(pb.DeleteBridgeRequest(name="bri0"), timeout=10)
    assert reply.existed and not reply.deleted_link
    assert agent.host.link(HOST, "bri0") is not None


def test_attach_check_reconcile_detach(agent: Agent) -> None:
    create_bridge(agent, addresses=["198.18.0.1/24"])
    ep = agent.stub.Attach(attach_request(), timeout=10)
    assert (ep.guest, ep.ifname, ep.bridge, ep.mtu) == ("netns:blue", "eth1", "br0", 1500)
    assert ep.host_ifname.startswith("np") and len(ep.host_ifname) == 14
    assert [(r.destination, r.via) for r in ep.routes] == [("default", "198.18.0.1")]
    assert ep.state == pb.ENDPOINT_STATE_READY
    guest = agent.host.link(BLUE, "eth1")
    assert guest is not None and guest.mac == ep.mac and guest.up
    assert {str(a) for a in guest.addresses if not a.ip.is_link_local} == set(ep.addresses)

    applied = len(agent.driver.applied)
    assert agent.stub.Attach(attach_request(), timeout=10) == ep  # idempotent
    assert len(agent.driver.applied) == applied  # and nothing was done
    e = fails(agent.stub.Attach, attach_request(addresses=["198.18.0.11/24"]))
    assert e.code() is Code.ALREADY_EXISTS and "different spec" in e.details()

    assert list(agent.stub.Check(pb.CheckRequest(), timeout=10).drift) == []
    agent.host.set_mtu(BLUE, "eth1", 1400)
    (drift,) = agent.stub.Check(pb.CheckRequest(), timeout=10).drift
    assert drift.object == "endpoint" and list(drift.repair) == ["set mtu 1500 on eth1 (guest)"]
    assert guest.mtu == 1400  # check changes nothing
    repaired = agent.stub.Reconcile(pb.ReconcileRequest(), timeout=10)
    assert len(repaired.repaired) == 1 and not repaired.failed and guest.mtu == 1500
    assert list(agent.stub.Check(pb.CheckRequest(), timeout=10).drift) == []

    (gone,) = agent.stub.Detach(pb.DetachRequest(guest="/run/netns/blue"), timeout=10).detached
    assert gone.id == ep.id
    assert agent.host.link(BLUE, "eth1") is None and agent.host.link(HOST, ep.host_ifname) is None
    assert list(agent.stub.Detach(pb.DetachRequest(guest="netns:blue"), timeout=10).detached) == []
    reply = agent.stub.DeleteBridge(pb.DeleteBridgeRequest(name="br0"), timeout=10)
    assert reply.existed and reply.deleted_link and agent.host.link(HOST, "br0") is None


def test_missing_bridge_and_missing_guest_are_not_found(agent: Agent) -> None:
    e = fails(agent.stub.Attach, attach_request())
    assert e.code() is Code.NOT_FOUND and trailers(e)["netplumb-field"] == "spec.bridge"
    assert "bridge add br0" in trailers(e)["netplumb-hint"]
    create_bridge(agent)
    e = fails(agent.stub.Attach, attach_request(guest="netns:green"))
    assert e.code() is Code.NOT_FOUND and trailers(e)["netplumb-field"] == "spec.guest"
    e = fails(agent.stub.GetEndpoint, pb.GetEndpointRequest(guest="netns:blue"))
    assert e.code() is Code.NOT_FOUND


def test_foreign_link_in_the_way_is_already_exists(agent: Agent) -> None:
    create_bridge(agent)
    agent.host.add_link(BLUE, "eth1", "dummy")
    e = fails(agent.stub.Attach, attach_request())
    assert e.code() is Code.ALREADY_EXISTS and trailers(e)["netplumb-field"] == "spec.ifname"
    assert agent.host.link(BLUE, "eth1").kind == "dummy"  # type: ignore[union-attr]


def test_vlan_without_kernel_support_is_failed_precondition(agent: Agent) -> None:
    create_bridge(agent)
    agent.driver._features = HostFeatures(bridge_vlan_filtering=False)
    e = fails(agent.stub.Attach, attach_request(vlan=10))
    assert e.code() is Code.FAILED_PRECONDITION
    md = trailers(e)
    assert md["netplumb-reason"] == "kernel-feature-missing" and md["netplumb-field"] == "spec.vlan"


def test_a_guest_that_went_away_is_reported(agent: Agent) -> None:
    create_bridge(agent)
    agent.stub.Attach(attach_request(guest="netns:red"), timeout=10)
    agent.host.delete_netns(RED)
    (ep,) = agent.stub.ListEndpoints(pb.ListEndpointsRequest(), timeout=10).endpoints
    assert ep.state == pb.ENDPOINT_STATE_GUEST_MISSING and ep.state_detail
    status = agent.stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    assert (status.bridges, status.endpoints, status.endpoints_not_ready) == (1, 1, 1)
    assert [(f.name, f.available) for f in status.kernel_features] == [("veth", True)]
    assert status.state_dir == agent.state_dir


def test_routes_added_and_deleted_through_the_api(agent: Agent) -> None:
    create_bridge(agent)
    agent.stub.Attach(attach_request(), timeout=10)
    route = pb.Route(destination="198.19.0.0/16", via="198.18.0.254")
    ep = agent.stub.AddRoute(pb.AddRouteRequest(guest="netns:blue", route=route), timeout=10)
    assert route in ep.routes
    assert (
        agent.stub.AddRoute(pb.AddRouteRequest(guest="netns:blue", route=route), timeout=10) == ep
    )
    other = pb.Route(destination="198.19.0.0/16", via="198.18.0.253")
    e = fails(agent.stub.AddRoute, pb.AddRouteRequest(guest="netns:blue", route=other))
    assert e.code() is Code.ALREADY_EXISTS
    ep = agent.stub.DeleteRoute(
        pb.DeleteRouteRequest(guest="netns:blue", destination="default"), timeout=10
    )
    assert [r.destination for r in ep.routes] == ["198.19.0.0/16"]
    guest = agent.host.link(BLUE, "eth1")
    assert guest is not None and [str(r.destination) for r in guest.routes] == ["198.19.0.0/16"]
    assert list(agent.stub.Check(pb.CheckRequest(), timeout=10).drift) == []


def test_bridge_mtu_below_1280_with_ipv6_is_invalid_argument(agent: Agent) -> None:
    create_bridge(agent, mtu=1000)
    e = fails(agent.stub.Attach, attach_request())
    assert e.code() is Code.INVALID_ARGUMENT and trailers(e)["netplumb-field"] == "spec.mtu"


def test_two_default_routes_in_one_guest_are_refused(agent: Agent) -> None:
    create_bridge(agent)
    create_bridge(agent, "br1")
    agent.stub.Attach(attach_request(), timeout=10)
    second = attach_request(
        bridge="br1", ifname="eth2", addresses=["198.18.1.10/24"], gateways=["198.18.1.1"]
    )
    e = fails(agent.stub.Attach, second)
    assert e.code() is Code.ALREADY_EXISTS
    assert trailers(e)["netplumb-field"] == "spec.gateways"
    assert "default route" in (e.details() or "")
    assert list(agent.stub.Check(pb.CheckRequest(), timeout=10).drift) == []


def test_reconcile_collects_only_this_agents_orphans(agent: Agent) -> None:
    mine = naming.endpoint_alias("00000000deadbeef", agent.store.agent_id)
    theirs = naming.endpoint_alias("00000000deadbeef", "0ther0ne")
    agent.host.add_veth(HOST, "nporphan1", BLUE, "orphan1", alias=mine)
    agent.host.add_veth(HOST, "nporphan2", BLUE, "orphan2", alias=theirs)
    agent.host.add_link(HOST, "br9", "bridge", alias=naming.bridge_alias(agent.store.agent_id))

    drift = agent.stub.Check(pb.CheckRequest(), timeout=10).drift
    assert sorted((d.object, d.name) for d in drift) == [("orphan", "br9"), ("orphan", "nporphan1")]
    veth = next(d for d in drift if d.name == "nporphan1")
    assert list(veth.repair) == ["delete link nporphan1 (host)"]
    assert agent.host.link(HOST, "nporphan1") is not None  # check changes nothing

    reply = agent.stub.Reconcile(pb.ReconcileRequest(), timeout=10)
    assert sorted(d.name for d in reply.collected) == ["br9", "nporphan1"]
    assert agent.host.link(HOST, "nporphan1") is None and agent.host.link(BLUE, "orphan1") is None
    assert agent.host.link(HOST, "nporphan2") is not None  # another agent's
    # a bridge tagged as this agent's with no record (a crash between
    # creating and recording it) is collected too
    assert agent.host.link(HOST, "br9") is None


@pytest.mark.parametrize(
    "method,streaming_request",
    [
        ("/grpc.health.v1.Health/Watch", False),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True),
    ],
)
def test_undecodable_bytes_to_streaming_methods_are_invalid_argument(
    agent: Agent, method: str, streaming_request: bool
) -> None:
    raw = b"\x0a\xff\xff\xff"  # field 1, length-delimited, a length running past the end
    if streaming_request:
        call = agent.channel.stream_stream(method)
        replies = call(iter([raw]), timeout=10)
    else:
        call = agent.channel.unary_stream(method)  # type: ignore[assignment]
        replies = call(raw, timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        list(replies)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value  # type: ignore[attr-defined]
    assert method in (e.value.details() or "")  # type: ignore[attr-defined]
    # and the same methods still serve good requests
    stub = reflection_pb2_grpc.ServerReflectionStub(agent.channel)
    good = reflection_pb2.ServerReflectionRequest(list_services="")
    assert next(iter(stub.ServerReflectionInfo(iter([good]), timeout=10))).list_services_response
