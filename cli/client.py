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

A daemon listening on TCP (``netplumbd --listen``) is reached with
``connect="ADDRESS:PORT"`` and a client certificate, over grpcio only:

    Client(connect="198.18.0.1:7443", tls_cert="client.crt",
           tls_key="client.key", tls_ca="ca.crt")

``insecure_tcp=True`` instead of the three files talks plaintext to a daemon
run with ``--insecure-tcp``. Without arguments the client follows the
environment as the command does (see ``target``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any


def _defer_python_message() -> None:
    """protobuf's descriptor_pool imports python_message, the pure-Python
    message implementation (with text_format and the wire decoder under
    it), even when the upb C backend serves every message: ~17 ms, a fifth
    of a command's start-up. It is registered to load on first use instead
    (importlib's LazyLoader), which with upb is never; with the pure-Python
    backend it loads at once, as before."""
    import importlib.util
    import sys

    name = "google.protobuf.internal.python_message"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    # "from google.protobuf.internal import python_message" must find it as
    # an attribute of its package, or the import system touches (loads) it.
    setattr(sys.modules["google.protobuf.internal"], "python_message", module)  # noqa: B010


_defer_python_message()

from netplumb.v1 import agent_pb2 as pb  # noqa: E402

from .codes import Code  # noqa: E402

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
TCP_REFUSED_HINT = "nothing listens there: is netplumbd running with --listen ADDRESS:PORT?"
TLS_HINT = (
    "a TLS connection closed at once was refused: the client certificate (--tls-cert) "
    "must be signed by the CA the daemon trusts (its --tls-client-ca), and the daemon's "
    "certificate must be signed by --tls-ca and name the address connected to"
)
PLAINTEXT_HINT = (
    "a daemon serving TLS closes plaintext connections at once: give --tls-cert, "
    "--tls-key and --tls-ca instead of --insecure-tcp"
)
TLS_FLAGS = (("tls_cert", "--tls-cert"), ("tls_key", "--tls-key"), ("tls_ca", "--tls-ca"))


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


class Target:
    """Where the daemon is: a unix ``socket``, or ``address`` (ADDRESS:PORT)
    over TCP with a client certificate (``tls_*``), or in plaintext when
    ``insecure_tcp``. Made by ``target()``, which checks the combination."""

    __slots__ = ("address", "insecure_tcp", "socket", "tls_ca", "tls_cert", "tls_key")

    def __init__(
        self,
        socket: str = "",
        address: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        tls_ca: str = "",
        insecure_tcp: bool = False,
    ) -> None:
        self.socket = socket
        self.address = address
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_ca = tls_ca
        self.insecure_tcp = insecure_tcp

    def __str__(self) -> str:
        return self.address or self.socket


def target(
    socket: str | None = None,
    connect: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    insecure_tcp: bool = False,
    env: Mapping[str, str] | None = None,
) -> Target:
    """Resolve where to call, as the command does: ``--socket`` or
    ``--connect`` (not both), else $NETPLUMB_CONNECT or $NETPLUMB_SOCKET
    (not both), else the default socket. TCP needs ``--tls-cert``,
    ``--tls-key`` and ``--tls-ca`` (each else $NETPLUMB_TLS_CERT,
    $NETPLUMB_TLS_KEY, $NETPLUMB_TLS_CA), or ``insecure_tcp``. Raises
    ValueError saying what to change; reads no file."""
    env = os.environ if env is None else env
    given = {"--tls-cert": tls_cert, "--tls-key": tls_key, "--tls-ca": tls_ca}
    explicit_tls = [flag for flag, value in given.items() if value]
    if socket and connect:
        raise ValueError("--socket and --connect name two daemons: give one")
    if not socket and not connect:
        connect = env.get("NETPLUMB_CONNECT") or None
        if connect and env.get("NETPLUMB_SOCKET"):
            raise ValueError(
                "NETPLUMB_SOCKET and NETPLUMB_CONNECT are both set: unset one, "
                "or choose with --socket or --connect"
            )
    if not connect:
        stray = explicit_tls + (["--insecure-tcp"] if insecure_tcp else [])
        if stray:
            raise ValueError(f"{', '.join(stray)}: only with --connect ADDRESS:PORT")
        return Target(socket=socket_path(socket, env))
    _check_address(connect)
    if insecure_tcp:
        if explicit_tls:
            raise ValueError(
                f"--insecure-tcp contradicts {', '.join(explicit_tls)}: give one or the other"
            )
        return Target(address=connect, insecure_tcp=True)
    files = {flag: value or env.get(_env_name(flag), "") for flag, value in given.items()}
    missing = [flag for flag, value in files.items() if not value]
    if missing:
        raise ValueError(
            f"--connect {connect} needs {', '.join(missing)} "
            f"(or {', '.join('$' + _env_name(f) for f in missing)}): netplumbd accepts only "
            "TCP clients with a certificate signed by its CA (docs/security.md); "
            "--insecure-tcp talks plaintext to a daemon run with --insecure-tcp"
        )
    return Target(
        address=connect,
        tls_cert=files["--tls-cert"],
        tls_key=files["--tls-key"],
        tls_ca=files["--tls-ca"],
    )


def _env_name(flag: str) -> str:
    """--tls-cert -> NETPLUMB_TLS_CERT"""
    return "NETPLUMB_" + flag[2:].upper().replace("-", "_")


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"--connect {address!r}: expected ADDRESS:PORT "
            "(e.g. 198.18.0.1:7443, [2001:db8::1]:7443, host.example:7443)"
        )
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(
            f"--connect {address!r}: write an IPv6 address in brackets, [ADDRESS]:PORT"
        )


def _read_tls(t: Target) -> tuple[bytes, bytes, bytes]:
    """(CA, key, certificate chain) for grpc.ssl_channel_credentials, each
    checked first: grpcio only says 'failed to create security handshaker'."""
    import ssl

    out = []
    for attr, flag in TLS_FLAGS:
        path = getattr(t, attr)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"{flag} {path}: cannot read it: {e.strerror}") from None
        if b"-----BEGIN " not in data:
            raise ValueError(f"{flag} {path}: not a PEM file")
        out.append(data)

    def encrypted() -> bytes:
        raise ValueError(f"--tls-key {t.tls_key}: the key is encrypted; give it unencrypted")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(t.tls_cert, t.tls_key, password=encrypted)
    except ssl.SSLError as e:
        raise ValueError(
            f"--tls-cert {t.tls_cert} and --tls-key {t.tls_key}: "
            f"not a certificate and its private key ({e.reason or e})"
        ) from None
    try:
        ctx.load_verify_locations(cafile=t.tls_ca)
    except ssl.SSLError as e:
        raise ValueError(
            f"--tls-ca {t.tls_ca}: no CA certificate in it ({e.reason or e})"
        ) from None
    chain, private_key, ca = out
    return ca, private_key, chain


def _response_type(method: str) -> Any:
    desc = pb.DESCRIPTOR.services_by_name["Agent"].methods_by_name[method]
    return getattr(pb, desc.output_type.name)


class Client:
    def __init__(
        self,
        socket: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: str = "grpc",
        *,
        connect: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        insecure_tcp: bool = False,
    ) -> None:
        """Raises ValueError for a combination ``target()`` refuses, an
        unknown transport, or TLS files that cannot be used."""
        if transport not in ("grpc", "wire"):
            raise ValueError(f"unknown transport {transport!r}: use 'grpc' or 'wire'")
        self.target = target(socket, connect, tls_cert, tls_key, tls_ca, insecure_tcp)
        self.socket = self.target.socket
        self.timeout = timeout
        self._wire: Any = None
        self._channel: Any = None
        if self.target.address and transport == "wire":
            raise ValueError("the wire transport reaches a unix socket only: use 'grpc' for TCP")
        if transport == "wire":
            from .wire import WireChannel

            self._wire = WireChannel(self.socket, timeout)
            return
        import grpc
        from netplumb.v1 import agent_pb2_grpc as pb_grpc

        if not self.target.address:
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
        elif self.target.insecure_tcp:
            self._channel = grpc.insecure_channel(self.target.address)
        else:
            ca, key, chain = _read_tls(self.target)
            creds = grpc.ssl_channel_credentials(ca, key, chain)
            self._channel = grpc.secure_channel(self.target.address, creds)
        self._stub = pb_grpc.AgentStub(self._channel)

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
                raise _failure(e.code, e.message, e.metadata, self.target) from None
            return _response_type(method).FromString(raw)
        import grpc

        try:
            return getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = Code(e.code().value[0]) if hasattr(e, "code") else Code.UNKNOWN
            details = (e.details() if hasattr(e, "details") else "") or ""
            md = dict(e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else {}
            raise _failure(code, details, md, self.target) from None

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
        kind: str = "",
        parent: str = "",
        dhcp: str = "",
        dhcp_options: Iterable[str] = (),
        dhcp_keep: bool = False,
        name: str = "",
    ) -> pb.Endpoint:
        """Attach ``guest`` to ``bridge``; ``routes`` are (destination, via)
        pairs with via "" for on-link. ``kind`` "macvlan" or "phys" takes the
        host interface as ``parent`` (and no bridge); "dummy" takes neither.
        ``dhcp`` names a client ("dhcp" for any installed one)."""
        kinds = {
            "": pb.ENDPOINT_KIND_UNSPECIFIED,
            "veth": pb.ENDPOINT_KIND_VETH,
            "macvlan": pb.ENDPOINT_KIND_MACVLAN,
            "phys": pb.ENDPOINT_KIND_PHYS,
            "dummy": pb.ENDPOINT_KIND_DUMMY,
        }
        spec = pb.EndpointSpec(
            name=name,
            kind=kinds[kind],
            parent=parent,
            dhcp=pb.Dhcp(client=dhcp, options=list(dhcp_options), keep=dhcp_keep) if dhcp else None,
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

    def guest_command(
        self, guest: str, tool: str, args: Iterable[str], ifname: str = ""
    ) -> pb.Endpoint:
        """``tool`` "rule" (``ip rule`` arguments) or "tc" (tc's), applied in
        the guest and recorded with its endpoint."""
        req = pb.GuestCommandRequest(guest=guest, ifname=ifname, tool=tool, args=list(args))
        return self._call("GuestCommand", req)

    # networks (cluster mode)

    def create_network(
        self,
        name: str,
        subnet: str,
        vni: int,
        kind: str = "linux",
        tunnel: str = "",
        gateway: str = "",
        dns_address: str = "",
    ) -> pb.Network:
        spec = pb.NetworkSpec(
            name=name,
            subnet=subnet,
            vni=vni,
            kind=KINDS[kind],
            tunnel=TUNNELS[tunnel] if tunnel else pb.TUNNEL_TYPE_UNSPECIFIED,
            gateway=gateway,
            dns_address=dns_address,
        )
        return self._call("CreateNetwork", pb.CreateNetworkRequest(spec=spec))

    def delete_network(self, name: str) -> pb.DeleteNetworkResponse:
        return self._call("DeleteNetwork", pb.DeleteNetworkRequest(name=name))

    def list_networks(self) -> list[pb.Network]:
        return list(self._call("ListNetworks", pb.ListNetworksRequest()).networks)

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


def _failure(code: Code, details: str, md: Mapping[str, Any], where: Target) -> NetplumbError:
    """One translation of a failed call, whichever the transport."""
    if code in (Code.UNAVAILABLE, Code.PERMISSION_DENIED) and "netplumb-reason" not in md:
        if code is Code.PERMISSION_DENIED or "permission denied" in details.lower():
            return NetplumbError(
                Code.UNAVAILABLE,
                f"permission denied on {where}",
                reason="permission-denied",
                hint=f"run as root or as a member of the socket's group (netplumb unless "
                f"netplumbd was given --socket-group; ls -l {where} shows it)",
            )
        if where.address:
            last = details.rpartition("last error: ")[2] or details
            if "refused" in last.lower():
                hint = TCP_REFUSED_HINT
            else:
                hint = PLAINTEXT_HINT if where.insecure_tcp else TLS_HINT
            return NetplumbError(
                code,
                f"cannot reach netplumbd at {where} ({last})",
                reason="daemon-unavailable",
                hint=hint,
            )
        return NetplumbError(
            code,
            f"cannot reach netplumbd at {where}",
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
