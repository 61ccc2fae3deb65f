"""The gRPC servicer: decode, call the engine, encode. No logic of its own."""

from __future__ import annotations

import os
import time
from typing import Any

import grpc
from netplumb.v1 import agent_pb2 as pb
from netplumb.v1 import agent_pb2_grpc as pb_grpc

from .. import __version__
from ..core import spec
from ..engine import Engine
from ..errors import InvalidSpec, Unimplemented
from . import convert
from .status import guarded


class AgentServicer(pb_grpc.AgentServicer):  # type: ignore[misc]
    def __init__(self, engine: Engine, state_dir: str) -> None:
        self.engine = engine
        self.state_dir = state_dir

    # bridges

    def CreateBridge(
        self, request: pb.CreateBridgeRequest, context: grpc.ServicerContext
    ) -> pb.Bridge:
        def call() -> pb.Bridge:
            return convert.bridge_out(
                self.engine.create_bridge(convert.bridge_spec_in(request.spec))
            )

        return guarded("CreateBridge", call, context)

    def DeleteBridge(
        self, request: pb.DeleteBridgeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteBridgeResponse:
        def call() -> pb.DeleteBridgeResponse:
            existed, deleted = self.engine.delete_bridge(request.name)
            return pb.DeleteBridgeResponse(existed=existed, deleted_link=deleted)

        return guarded("DeleteBridge", call, context)

    def ListBridges(
        self, request: pb.ListBridgesRequest, context: grpc.ServicerContext
    ) -> pb.ListBridgesResponse:
        def call() -> pb.ListBridgesResponse:
            return pb.ListBridgesResponse(
                bridges=[convert.bridge_out(b) for b in self.engine.list_bridges()]
            )

        return guarded("ListBridges", call, context)

    # endpoints

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> pb.Endpoint:
        def call() -> pb.Endpoint:
            guest = self.engine.resolve_guest(request.spec.guest, "spec.guest")
            return convert.endpoint_out(
                self.engine.attach(convert.endpoint_spec_in(request.spec, guest))
            )

        return guarded("Attach", call, context)

    def Detach(self, request: pb.DetachRequest, context: grpc.ServicerContext) -> pb.DetachResponse:
        def call() -> pb.DetachResponse:
            guest = self.engine.resolve_guest(request.guest)
            ifname = spec.ifname(request.ifname, "ifname") if request.ifname else ""
            views = self.engine.detach(guest, ifname)
            return pb.DetachResponse(detached=[convert.endpoint_out(v) for v in views])

        return guarded("Detach", call, context)

    def GetEndpoint(
        self, request: pb.GetEndpointRequest, context: grpc.ServicerContext
    ) -> pb.Endpoint:
        def call() -> pb.Endpoint:
            guest = self.engine.resolve_guest(request.guest)
            ifname = spec.ifname(request.ifname, "ifname") if request.ifname else ""
            return convert.endpoint_out(self.engine.get_endpoint(guest, ifname))

        return guarded("GetEndpoint", call, context)

    def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListEndpointsResponse:
        def call() -> pb.ListEndpointsResponse:
            bridge = spec.ifname(request.bridge, "bridge") if request.bridge else ""
            guest = self.engine.resolve_guest(request.guest) if request.guest else None
            views = self.engine.list_endpoints(bridge, guest)
            return pb.ListEndpointsResponse(endpoints=[convert.endpoint_out(v) for v in views])

        return guarded("ListEndpoints", call, context)

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        def call() -> pb.CheckResponse:
            return pb.CheckResponse(drift=[convert.drift_out(d) for d in self.engine.check()])

        return guarded("Check", call, context)

    def Reconcile(
        self, request: pb.ReconcileRequest, context: grpc.ServicerContext
    ) -> pb.ReconcileResponse:
        def call() -> pb.ReconcileResponse:
            repaired, failed, collected = self.engine.reconcile()
            return pb.ReconcileResponse(
                repaired=[convert.drift_out(d) for d in repaired],
                failed=[convert.drift_out(d) for d in failed],
                collected=[convert.drift_out(d) for d in collected],
            )

        return guarded("Reconcile", call, context)

    def AddRoute(self, request: pb.AddRouteRequest, context: grpc.ServicerContext) -> pb.Endpoint:
        def call() -> pb.Endpoint:
            guest = self.engine.resolve_guest(request.guest)
            ifname = spec.ifname(request.ifname, "ifname") if request.ifname else ""
            route = convert.route_in(request.route)
            return convert.endpoint_out(self.engine.add_route(guest, ifname, route))

        return guarded("AddRoute", call, context)

    def DeleteRoute(
        self, request: pb.DeleteRouteRequest, context: grpc.ServicerContext
    ) -> pb.Endpoint:
        def call() -> pb.Endpoint:
            guest = self.engine.resolve_guest(request.guest)
            ifname = spec.ifname(request.ifname, "ifname") if request.ifname else ""
            spec.destination(request.destination, "destination")
            return convert.endpoint_out(
                self.engine.delete_route(guest, ifname, request.destination)
            )

        return guarded("DeleteRoute", call, context)

    def GuestCommand(
        self, request: pb.GuestCommandRequest, context: grpc.ServicerContext
    ) -> pb.Endpoint:
        def call() -> pb.Endpoint:
            guest = self.engine.resolve_guest(request.guest)
            ifname = spec.ifname(request.ifname, "ifname") if request.ifname else ""
            if request.tool not in ("rule", "tc"):
                raise InvalidSpec(f"tool {request.tool[:32]!r} is not rule or tc", field="tool")
            args = spec.command_args(list(request.args), "args")
            return convert.endpoint_out(
                self.engine.guest_command(guest, ifname, request.tool, args)
            )

        return guarded("GuestCommand", call, context)

    # not yet implemented: say so, never pretend

    def _later(self, what: str, context: grpc.ServicerContext) -> Any:
        def call() -> Any:
            raise Unimplemented(f"{what} is not implemented in this version of netplumbd")

        return guarded(what, call, context)

    def AddPeer(self, request: pb.AddPeerRequest, context: grpc.ServicerContext) -> pb.Peer:
        def call() -> pb.Peer:
            address = convert.peer_address_in(request.address)
            name = convert.peer_name_in(request.name)
            return convert.peer_out(self.engine.add_peer(address, name))

        return guarded("AddPeer", call, context)

    def AddPeers(
        self, request: pb.AddPeersRequest, context: grpc.ServicerContext
    ) -> pb.ListPeersResponse:
        def call() -> pb.ListPeersResponse:
            if len(request.peers) > 4096:
                raise InvalidSpec("peers has more than 4096 entries", field="peers")
            wanted = [
                (
                    convert.peer_address_in(p.address, f"peers[{i}].address"),
                    convert.peer_name_in(p.name, f"peers[{i}].name"),
                )
                for i, p in enumerate(request.peers)
            ]
            views = self.engine.add_peers(wanted)
            return pb.ListPeersResponse(peers=[convert.peer_out(v) for v in views])

        return guarded("AddPeers", call, context)

    def RemovePeer(
        self, request: pb.RemovePeerRequest, context: grpc.ServicerContext
    ) -> pb.RemovePeerResponse:
        def call() -> pb.RemovePeerResponse:
            if not request.peer:
                raise InvalidSpec("peer is empty; give an address or a name", field="peer")
            if len(request.peer) > 255:
                raise InvalidSpec("peer is too long", field="peer")
            return pb.RemovePeerResponse(existed=self.engine.remove_peer(request.peer))

        return guarded("RemovePeer", call, context)

    def ListPeers(
        self, request: pb.ListPeersRequest, context: grpc.ServicerContext
    ) -> pb.ListPeersResponse:
        def call() -> pb.ListPeersResponse:
            return pb.ListPeersResponse(
                peers=[convert.peer_out(p) for p in self.engine.list_peers()]
            )

        return guarded("ListPeers", call, context)

    def CreateNetwork(
        self, request: pb.CreateNetworkRequest, context: grpc.ServicerContext
    ) -> pb.Network:
        def call() -> pb.Network:
            net, allocated = self.engine.create_network(convert.network_spec_in(request.spec))
            return convert.network_out(net, allocated)

        return guarded("CreateNetwork", call, context)

    def DeleteNetwork(
        self, request: pb.DeleteNetworkRequest, context: grpc.ServicerContext
    ) -> pb.DeleteNetworkResponse:
        def call() -> pb.DeleteNetworkResponse:
            name = spec.ifname(request.name, "name")
            return pb.DeleteNetworkResponse(existed=self.engine.delete_network(name))

        return guarded("DeleteNetwork", call, context)

    def ListNetworks(
        self, request: pb.ListNetworksRequest, context: grpc.ServicerContext
    ) -> pb.ListNetworksResponse:
        def call() -> pb.ListNetworksResponse:
            nets = self.engine.list_networks()
            return pb.ListNetworksResponse(networks=[convert.network_out(n, a) for n, a in nets])

        return guarded("ListNetworks", call, context)

    # status

    def _etcd_dependency(self) -> pb.Dependency:
        c = self.engine.cluster
        if c is None:
            return pb.Dependency(name="etcd", up=False, enabled=False, detail="standalone mode")
        return pb.Dependency(name="etcd", up=c.up, enabled=True, detail=c.etcd.detail)

    def _vswitchd_dependency(self) -> list[pb.Dependency]:
        ovs = self.engine.ovs
        up = ovs.vswitchd_up() if ovs is not None and ovs.connected else None
        if up is None:
            return []
        detail = "running" if up else "not running: OVS bridges forward nothing"
        return [pb.Dependency(name="ovs-vswitchd", up=up, enabled=True, detail=detail)]

    def _ovs_dependency(self) -> pb.Dependency:
        ovs = self.engine.ovs
        if ovs is None:
            return pb.Dependency(name="ovsdb", up=False, enabled=False, detail="disabled")
        return pb.Dependency(name="ovsdb", up=ovs.connected, enabled=True, detail=ovs.detail)

    def _docker_dependency(self) -> pb.Dependency:
        d = self.engine.docker
        if d is None:
            return pb.Dependency(name="docker", up=False, enabled=False, detail="disabled")
        return pb.Dependency(name="docker", up=d.up, enabled=True, detail=d.detail)

    def _ovs_datapath(self) -> str:
        ovs = self.engine.ovs
        return ovs.datapath_type() if ovs is not None else ""

    def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext
    ) -> pb.HostStatus:
        def call() -> pb.HostStatus:
            counts = self.engine.status_counts()
            feats = self.engine.features.extras
            return pb.HostStatus(
                version=__version__,
                hostname=os.uname().nodename,
                uptime_seconds=int(time.time() - self.engine.started),
                bridges=counts["bridges"],
                endpoints=counts["endpoints"],
                peers=counts["peers"],
                endpoints_not_ready=counts["endpoints_not_ready"],
                dependencies=[
                    pb.Dependency(name="netlink", up=True, enabled=True, detail="pyroute2"),
                    self._ovs_dependency(),
                    *self._vswitchd_dependency(),
                    self._docker_dependency(),
                    self._etcd_dependency(),
                ],
                kernel_features=[
                    pb.KernelFeature(name=k, available=v) for k, v in sorted(feats.items())
                ],
                state_dir=self.state_dir,
                mode="cluster" if self.engine.cluster is not None else "standalone",
                ovs_datapath_type=self._ovs_datapath(),
            )

        return guarded("GetStatus", call, context)
