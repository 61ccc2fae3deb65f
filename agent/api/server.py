"""The gRPC server: the Agent service, standard health checking and
reflection, on a unix socket with restrictive permissions and, when asked, on
TCP with TLS that requires a client certificate (or, explicitly, plaintext).

Who may call: on the unix socket, whoever the file mode lets connect (root
and the socket's group: mode 0660, owner root); on TCP, a client presenting a
certificate signed by the configured client CA. Every caller that gets in may
use every RPC."""

from __future__ import annotations

import grp
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from netplumb.v1 import agent_pb2, agent_pb2_grpc

from ..config import TlsFiles
from ..engine import Engine
from ..errors import PreconditionFailed
from .servicer import AgentServicer

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("netplumb.server")

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name


class _Undecodable:
    """Stands in for a request whose bytes are not the method's message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class UndecodableIsInvalid(grpc.ServerInterceptor):  # type: ignore[misc]
    """Bytes that are not a valid protobuf message of the method's request
    type get INVALID_ARGUMENT, for every method (the Agent service, health's
    Check and Watch, reflection's stream): grpcio's own answer would be
    INTERNAL, with a traceback in the log, for what is the caller's mistake."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer
        method = handler_call_details.method

        def safe_decode(raw: bytes) -> Any:
            try:
                return decode(raw)
            except Exception as e:  # DecodeError, UnicodeDecodeError, ...
                return _Undecodable(e)

        def refuse_undecodable(request: Any, context: grpc.ServicerContext) -> None:
            if isinstance(request, _Undecodable):
                log.info("%s: undecodable request refused: %s", method, request.error)
                context.set_trailing_metadata([("netplumb-reason", "invalid-message")])
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid message for {method}",
                )

        if handler.unary_unary or handler.unary_stream:
            behaviour = handler.unary_unary or handler.unary_stream

            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                refuse_undecodable(request, context)
                return behaviour(request, context)

            make = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.unary_stream_rpc_method_handler
            )
        else:
            streaming = handler.stream_unary or handler.stream_stream

            def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                for request in requests:
                    refuse_undecodable(request, context)
                    yield request

            def guarded_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return streaming(checked(requests, context), context)

            make = (
                grpc.stream_unary_rpc_method_handler
                if handler.stream_unary
                else grpc.stream_stream_rpc_method_handler
            )
        return make(
            guarded if handler.unary_unary or handler.unary_stream else guarded_stream,
            request_deserializer=safe_decode,
            response_serializer=handler.response_serializer,
        )


class Measured(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every unary Agent RPC into ``metrics``. The outcome
    is read back from the call's context, where ``status.guarded`` (or
    UndecodableIsInvalid) left it: the status code and the netplumb-reason
    trailing metadata. Errors are thus mapped once, in status.py."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        service, _, name = handler_call_details.method.lstrip("/").partition("/")
        if handler is None or not handler.unary_unary or service != SERVICE_NAME:
            return handler
        behaviour = handler.unary_unary
        metrics = self.metrics

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            failed = True
            try:
                reply = behaviour(request, context)
                failed = False
                return reply
            finally:
                seconds = time.perf_counter() - started
                code = context.code()
                if code is None:  # never set: OK, or an exception grpcio reports as UNKNOWN
                    code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
                reason = ""
                for key, value in context.trailing_metadata() or ():
                    if key == "netplumb-reason":
                        reason = str(value)
                metrics.observe_rpc(name, code.name, reason, seconds)

        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Server:
    def __init__(
        self,
        engine: Engine,
        socket_path: str,
        state_dir: str,
        group: str = "",
        workers: int = 16,
        *,
        listen: str = "",
        tls: TlsFiles | None = None,
        insecure_tcp: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        """``listen`` (ADDRESS:PORT, empty for none) is served with ``tls``
        (client certificates required); without ``tls`` only if
        ``insecure_tcp`` says so explicitly. With ``metrics``, every Agent
        RPC is counted and timed there."""
        if listen and tls is None and not insecure_tcp:
            raise ValueError("a TCP listener needs TLS files or insecure_tcp=True")
        self.socket_path = socket_path
        self.group = group
        self.listen = listen
        self.tls = tls
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)],
            # Measured first: it sees what UndecodableIsInvalid answers too.
            interceptors=[
                *([Measured(metrics)] if metrics is not None else []),
                UndecodableIsInvalid(),
            ],
        )
        agent_pb2_grpc.add_AgentServicer_to_server(AgentServicer(engine, state_dir), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc
        )

    def start(self) -> None:
        """Bind the TCP listener (if any), then the unix socket, then serve.
        Raises PreconditionFailed, with nothing left behind, when an address
        cannot be bound."""
        if self.listen:
            self._add_tcp_port()
        directory = os.path.dirname(self.socket_path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)  # a stale socket from a previous run
        # Created 0660 from the start: no window in which others may connect.
        old = os.umask(0o117)
        try:
            port = self.grpc.add_insecure_port(f"unix:{self.socket_path}")
        finally:
            os.umask(old)
        if not port:
            raise PreconditionFailed(f"cannot listen on unix:{self.socket_path}")
        self.grpc.start()
        os.chmod(self.socket_path, 0o660)
        if self.group:
            try:
                os.chown(self.socket_path, 0, grp.getgrnam(self.group).gr_gid)
            except KeyError:
                log.warning(
                    "group %s does not exist: the socket stays usable by root only "
                    "(create it with 'groupadd --system %s' and restart netplumbd)",
                    self.group,
                    self.group,
                )
        log.info("serving on unix:%s", self.socket_path)

    def _add_tcp_port(self) -> None:
        if self.tls is not None:
            creds = grpc.ssl_server_credentials(
                [(self.tls.private_key, self.tls.cert_chain)],
                root_certificates=self.tls.client_ca,
                require_client_auth=True,
            )
        try:
            # grpcio signals failure by raising (current) or by returning 0.
            if self.tls is not None:
                port = self.grpc.add_secure_port(self.listen, creds)
            else:
                port = self.grpc.add_insecure_port(self.listen)
        except RuntimeError:
            port = 0
        if not port:
            raise PreconditionFailed(
                f"cannot listen on tcp:{self.listen}",
                hint="is the port in use (ss -ltnp) or the address not on this host? "
                "choose another --listen ADDRESS:PORT",
            )
        if self.tls is not None:
            log.info("serving on tcp:%s (TLS, client certificates required)", self.listen)
        else:
            log.warning(
                "INSECURE: serving on tcp:%s in plaintext without any authentication "
                "(--insecure-tcp): anyone who can reach this port controls this host's "
                "networking; use --tls-cert, --tls-key and --tls-client-ca instead",
                self.listen,
            )

    def set_serving(self) -> None:
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace).wait(grace + 1)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
