"""A small typed client for netplumbd, for orchestration scripts.

    from netplumb.cli.client import Client, NetplumbError

    with Client() as np:                       # NETPLUMB_SOCKET or the default socket
        np.create_bridge("bri0", addresses=["198.18.0.1/24"])
        ep = np.attach("bri0", "netns:blue", addresses=["198.18.0.10/24"],
                       gateways=["198.18.0.1"])
        print(ep.host_ifname, ep.mac, list(ep.addresses))
        np.detach("netns:blue")

Every method returns the protobuf message of the reply (``netplumb.v1``
types, see proto/netplumb/v1/agent.proto) and raises ``NetplumbError`` on
failure, with ``code`` (a ``netplumb.cli.codes.Code``, numbered and named as
grpc.StatusCode), ``reason``, ``field`` and ``hint`` taken from the daemon's
reply.

Two transports: ``"grpc"`` (grpcio; the default, best for long-lived
scripts) and ``"wire"`` (``wire.py``: a minimal HTTP/2 client that starts in
a few milliseconds, used by the ``netplumb`` command). Both keep one
connection open for the client's life.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from netplumb.v1 import agent_pb2 as pb

from .codes import Code

DEFAULT_SOCKET = "/run/netplumb/netplumbd.sock"
DEFAULT_TIMEOUT = 30.0
SERVICE = "/netplumb.v1.Agent/"

KINDS = {"linux": pb.BRIDGE_KIND_LINUX, "ovs": pb.BRIDGE_KIND_OVS}
TUNNELS = {
    "vxlan": pb.TUNNEL_TYPE_VXLAN,
    "geneve": pb.TUNNEL_TYPE_GENEVE,
    "gre": pb.TUNNEL_TYPE_GRE,
}
UNAVAILABLE_HINT = (
    "is netplumbd running? (systemctl status netplumbd; or give --socket / NETPLUMB_SOCKET)"
)


class NetplumbError(Exception):
    """A failed call: ``code`` is the gRPC status; ``reason``, ``field`` and
    ``hint`` come from the daemon (empty when the daemon was not reached)."""

    def __init__(self, code: Code, message: str, reason: str = "", field: str = "", hint: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field
        self.hint = hint


def socket_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--socket, else $NETPLUMB_SOCKET, else the default."""
    env = os.environ if env is None else env
    return explicit or env.get("NETPLUMB_SOCKET") or DEFAULT_SOCKET


def _response_type(method: str) -> Any:
    desc = pb.DESCRIPTOR.services_by_name["Agent"].methods_by_name[method]
    return getattr(pb, desc.output_type.name)


class Client:
    def __init__(
        self, socket: str | None = None, timeout: float = DEFAULT_TIMEOUT, transport: str = "grpc"
    ) -> None:
        self.socket = socket_path(socket)
        self.timeout = timeout
        if transport == "wire":
            from .wire import WireChannel

            self._wire: Any = WireChannel(self.socket, timeout)
            self._channel: Any = None
        elif transport == "grpc":
            import grpc
            from netplumb.v1 import agent_pb2_grpc as pb_grpc

            self._wire = None
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
            self._stub = pb_grpc.AgentStub(self._channel)
        else:
            raise ValueError(f"unknown transport {transport!r}: use 'grpc' or 'wire'")

    def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        if self._wire is not None:
            from .wire import WireError

            try:
                raw = self._wire.unary(SERVICE + method, request.SerializeToString())
            except WireError as e:
                raise _failure(e.code, e.message, e.metadata, self.socket) from None
            return _response_type(method).FromString(raw)
        import grpc

        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = Code(e.code().value[0]) if hasattr(e, "code") else Code.UNKNOWN
            details = (e.details() if hasattr(e, "details") else "") or ""
            md = dict(e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else {}
            raise _failure(code, details, md, self.socket) from None

    # bridges

    def create_bridge(
        self,
        name: str,
        kind: str = "linux",
        addresses: Iterable[str] = (),
        mtu: int = 0,
        vni: int = 0,
        tunnel: str = "",
    ) -> pb.Bridge:
        spec = pb.BridgeSpec(
            name=name,
            kind=KINDS.get(kind, pb.BRIDGE_KIND_UNSPECIFIED),
            addresses=list(addresses),
            mtu=mtu,
            vni=vni,
            tunnel=TUNNELS.get(tunnel, pb.TUNNEL_TYPE_UNSPECIFIED),
        )
        return self._call("CreateBridge", pb.CreateBridgeRequest(spec=spec))

    def delete_bridge(self, name: str) -> pb.DeleteBridgeResponse:
        return self._call("DeleteBridge", pb.DeleteBridgeRequest(name=name))

    def list_bridges(self) -> list[pb.Bridge]:
        return list(self._call("ListBridges", pb.ListBridgesRequest()).bridges)

    # endpoints

    def attach(
        self,
        bridge: str,
        guest: str,
        *,
        addresses: Iterable[str] = (),
        gateways: Iterable[str] = (),
        ifname: str = "",
        host_ifname: str = "",
        mac: str = "",
        mtu: int = 0,
        vlan: int = 0,
        routes: Iterable[tuple[str, str]] = (),
    ) -> pb.Endpoint:
        """Attach ``guest`` to ``bridge``; ``routes`` are (destination, via)
        pairs with via "" for on-link."""
        spec = pb.EndpointSpec(
            bridge=bridge,
            guest=guest,
            ifname=ifname,
            host_ifname=host_ifname,
            mac=mac,
            mtu=mtu,
            vlan=vlan,
            addresses=list(addresses),
            gateways=list(gateways),
            routes=[pb.Route(destination=d, via=v) for d, v in routes],
        )
        return self._call("Attach", pb.AttachRequest(spec=spec))

    def detach(self, guest: str, ifname: str = "") -> list[pb.Endpoint]:
        return list(self._call("Detach", pb.DetachRequest(guest=guest, ifname=ifname)).detached)

    def get_endpoint(self, guest: str, ifname: str = "") -> pb.Endpoint:
        return self._call("GetEndpoint", pb.GetEndpointRequest(guest=guest, ifname=ifname))

    def list_endpoints(self, bridge: str = "", guest: str = "") -> list[pb.Endpoint]:
        return list(
            self._call(
                "ListEndpoints", pb.ListEndpointsRequest(bridge=bridge, guest=guest)
            ).endpoints
        )

    def add_route(
        self, guest: str, destination: str, via: str = "", ifname: str = "", metric: int = 0
    ) -> pb.Endpoint:
        route = pb.Route(destination=destination, via=via, metric=metric)
        return self._call("AddRoute", pb.AddRouteRequest(guest=guest, ifname=ifname, route=route))

    def delete_route(self, guest: str, destination: str, ifname: str = "") -> pb.Endpoint:
        req = pb.DeleteRouteRequest(guest=guest, ifname=ifname, destination=destination)
        return self._call("DeleteRoute", req)

    # peers

    def add_peer(self, address: str, name: str = "") -> pb.Peer:
        return self._call("AddPeer", pb.AddPeerRequest(address=address, name=name))

    def add_peers(self, peers: Iterable[tuple[str, str]]) -> list[pb.Peer]:
        """Add many (address, name) peers in one call (one re-plan)."""
        req = pb.AddPeersRequest(peers=[pb.AddPeerRequest(address=a, name=n) for a, n in peers])
        return list(self._call("AddPeers", req).peers)

    def remove_peer(self, peer: str) -> pb.RemovePeerResponse:
        return self._call("RemovePeer", pb.RemovePeerRequest(peer=peer))

    def list_peers(self) -> list[pb.Peer]:
        return list(self._call("ListPeers", pb.ListPeersRequest()).peers)

    def check(self) -> list[pb.Drift]:
        return list(self._call("Check", pb.CheckRequest()).drift)

    def reconcile(self) -> pb.ReconcileResponse:
        return self._call("Reconcile", pb.ReconcileRequest())

    def status(self) -> pb.HostStatus:
        return self._call("GetStatus", pb.GetStatusRequest())


def _failure(code: Code, details: str, md: Mapping[str, Any], socket: str) -> NetplumbError:
    """One translation of a failed call, whichever the transport."""
    if code in (Code.UNAVAILABLE, Code.PERMISSION_DENIED) and "netplumb-reason" not in md:
        if code is Code.PERMISSION_DENIED:
            return NetplumbError(
                Code.UNAVAILABLE,
                f"permission denied on {socket}",
                reason="permission-denied",
                hint="run as root or as a member of the socket's group (netplumb)",
            )
        return NetplumbError(
            code,
            f"cannot reach netplumbd at {socket}",
            reason="daemon-unavailable",
            hint=UNAVAILABLE_HINT,
        )
    if code is Code.DEADLINE_EXCEEDED:
        return NetplumbError(
            code, "netplumbd did not answer in time", reason="timeout", hint="raise --timeout"
        )
    return NetplumbError(
        code,
        details,
        reason=str(md.get("netplumb-reason", "")),
        field=str(md.get("netplumb-field", "")),
        hint=str(md.get("netplumb-hint", "")),
    )
