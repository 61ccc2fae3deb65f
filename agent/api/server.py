"""The gRPC server: the Agent service, standard health checking and
reflection, on a unix socket with restrictive permissions."""

from __future__ import annotations

import grp
import logging
import os
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from netplumb.v1 import agent_pb2, agent_pb2_grpc

from ..engine import Engine
from ..errors import PreconditionFailed
from .servicer import AgentServicer

log = logging.getLogger("netplumb.server")

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name


class Server:
    def __init__(
        self, engine: Engine, socket_path: str, state_dir: str, group: str = "", workers: int = 16
    ) -> None:
        self.socket_path = socket_path
        self.group = group
        self.grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)],
        )
        agent_pb2_grpc.add_AgentServicer_to_server(AgentServicer(engine, state_dir), self.grpc)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc
        )

    def start(self) -> None:
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
                log.warning("group %s does not exist; socket stays root-only", self.group)
        log.info("serving on unix:%s", self.socket_path)

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
