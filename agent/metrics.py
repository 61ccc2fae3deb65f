"""Prometheus metrics of netplumbd, served over HTTP (``--metrics-address``).

What is counted, and where it comes from:

- RPCs: the API server's interceptor calls ``observe_rpc`` once per Agent
  RPC with the gRPC code and the netplumb reason that ``api/status.py``
  chose, so the mapping from errors to outcomes is made in one place only.
- Convergence: the engine's ``on_converged`` observers (every reconcile and
  every re-plumb after a container start).
- State: counts read from the store's in-memory snapshot at scrape time;
  dependency up/down read from the drivers' own cached connection state
  (OVSDB session, dockerd event stream, etcd's last call), never probed.
- What needs the kernel or Docker to tell (endpoints not ready, tunnel
  state) is sampled by a background thread, soon after any RPC or
  convergence and every ``sample_interval`` seconds otherwise; a scrape
  serves the last sample and never waits for it.

So a scrape answers at once even while OVS, Docker or etcd hang.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("netplumb.metrics")

PREFIX = "netplumb_"
# Attach is 10-100 ms on a Linux bridge, more on OVS; with DHCP it waits for
# the lease (seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FIRST_SAMPLE_WAIT = 60.0  # seconds: at the latest, without a start-up reconcile
# RPCs that change nothing: the state the sampler reads cannot have moved.
_READ_ONLY = ("List", "Get")  # (Check wakes it: what it found drifted is news)
# Concurrent scrapes served at once; more connections are closed unanswered.
MAX_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Tunnel:
    bridge: str
    peer: str
    type: str
    up: bool


@dataclass(frozen=True, slots=True)
class Sample:
    """What the background sampler saw last."""

    at: float  # time.time() of the sample; 0: none yet
    endpoints_not_ready: int = 0
    tunnels: tuple[Tunnel, ...] = ()


class Metrics:
    """The daemon's metrics, in a private registry (nothing global)."""

    def __init__(self, sample_interval: float = 10.0, min_sample_gap: float = 0.5) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpc_requests = Counter(
            "netplumb_rpc_requests",
            "Agent API calls handled, by method and gRPC status code",
            ["method", "code"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "netplumb_rpc_errors",
            "Agent API calls refused, by method and netplumb error reason "
            "(invalid-spec, not-found, conflict, ...)",
            ["method", "reason"],
            registry=r,
        )
        self.attach_seconds = Histogram(
            "netplumb_attach_duration_seconds",
            "Time to answer an Attach call, by gRPC status code",
            ["code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.detach_seconds = Histogram(
            "netplumb_detach_duration_seconds",
            "Time to answer a Detach call, by gRPC status code",
            ["code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reconciliations = Counter(
            "netplumb_reconciliations",
            "Convergence passes: reconcile (start-up, OVS reconnection, 'netplumb reconcile') "
            "and re-plumbs of Docker containers (container-start, container-connected)",
            ["cause"],
            registry=r,
        )
        self.repairs = Counter(
            "netplumb_repairs",
            "Objects (endpoints, bridges, tunnels) found drifted and repaired, by cause",
            ["cause"],
            registry=r,
        )
        self.repair_failures = Counter(
            "netplumb_repair_failures",
            "Objects found drifted that could not be repaired, by cause",
            ["cause"],
            registry=r,
        )
        self.orphans = Counter(
            "netplumb_orphans_collected",
            "netplumb-tagged leftovers with no record, removed, by cause",
            ["cause"],
            registry=r,
        )
        ProcessCollector(namespace="netplumb", registry=r)
        self.engine: Engine | None = None
        self.sample = Sample(at=0.0)
        self.sample_interval = sample_interval
        self.min_sample_gap = min_sample_gap
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._sample_failed = False
        r.register(_StateCollector(self))

    # -- inputs

    def observe_rpc(self, method: str, code: str, reason: str, seconds: float) -> None:
        """One Agent RPC answered: ``code`` is the gRPC status code's name
        (OK, INVALID_ARGUMENT, ...), ``reason`` the netplumb reason of a
        refusal ("" for OK)."""
        self.rpc_requests.labels(method, code).inc()
        if code != "OK":
            self.rpc_errors.labels(method, reason or code.lower().replace("_", "-")).inc()
        if method == "Attach":
            self.attach_seconds.labels(code).observe(seconds)
        elif method == "Detach":
            self.detach_seconds.labels(code).observe(seconds)
        if not method.startswith(_READ_ONLY):
            self._wake.set()

    def observe_convergence(self, cause: str, repaired: int, failed: int, collected: int) -> None:
        """An ``Engine.on_converged`` observer."""
        self.reconciliations.labels(cause).inc()
        self.repairs.labels(cause).inc(repaired)
        self.repair_failures.labels(cause).inc(failed)
        self.orphans.labels(cause).inc(collected)
        self._wake.set()

    # -- the engine's state

    def watch(self, engine: Engine) -> None:
        """Follow ``engine``: its convergences, its state at scrape time, and
        a background sampler of what needs the kernel or Docker to tell.
        Call before the start-up reconcile so that it is counted."""
        self.engine = engine
        engine.on_converged.append(self.observe_convergence)
        self._sampler = threading.Thread(target=self._sample_loop, name="metrics", daemon=True)
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    def _sample_loop(self) -> None:
        # The first sample waits for the start-up reconcile (the first
        # convergence wakes it): sampling meanwhile would compete with it
        # for the interpreter and read a host that is being repaired.
        self._wake.wait(FIRST_SAMPLE_WAIT)
        while not self._stop.is_set():
            self._wake.wait(self.sample_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            self.take_sample()
            # Many RPCs in a row (50 attaches) make one sample, not fifty; and
            # a sample that is costly (thousands of endpoints: a dump of every
            # host link) takes at most a tenth of the time.
            took = time.monotonic() - started
            self._stop.wait(max(self.min_sample_gap, 9 * took))

    def take_sample(self) -> None:
        """Sample what needs the kernel or Docker to tell. On failure the
        previous sample stays (its age shows it)."""
        engine = self.engine
        if engine is None:
            return
        try:
            not_ready = engine.status_counts()["endpoints_not_ready"]
            tunnels = tuple(
                Tunnel(t.bridge, str(p.record.address), t.type, t.state == "up")
                for p in engine.list_peers()
                for t in p.tunnels
            )
        except Exception as e:
            if not self._sample_failed:
                log.warning("metrics: sampling endpoint and tunnel state failed: %s", e)
            self._sample_failed = True
            return
        if self._sample_failed:
            log.info("metrics: sampling endpoint and tunnel state works again")
        self._sample_failed = False
        self.sample = Sample(time.time(), not_ready, tunnels)


def dependencies(engine: Engine) -> list[tuple[str, bool]]:
    """(name, up) of each dependency in use, from the drivers' cached state:
    nothing here waits on the network."""
    deps: list[tuple[str, bool]] = []
    ovs = engine.ovs
    if ovs is not None:
        connected = ovs.connected
        deps.append(("ovsdb", connected))
        vswitchd = ovs.vswitchd_up() if connected else None  # a pidfile and /proc
        if vswitchd is not None:
            deps.append(("ovs-vswitchd", vswitchd))
    if engine.docker is not None:
        deps.append(("docker", bool(engine.docker.up)))
    if engine.cluster is not None:
        deps.append(("etcd", bool(engine.cluster.up)))
    return deps


class _StateCollector(Collector):
    """Gauges computed at scrape time from cheap, cached state."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = list(self._families())
        self._fill(families)
        return families

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "netplumb_build_info", "netplumbd's version (the value is 1)", labels=["version"]
        )
        for name, text in (
            ("netplumb_endpoints", "Endpoints recorded (the desired state)"),
            ("netplumb_bridges", "Bridges recorded (created or adopted)"),
            ("netplumb_peers", "Peer hosts (added by hand or found in the cluster)"),
            (
                "netplumb_endpoints_not_ready",
                "Endpoints whose guest is gone or whose host interface is missing (sampled)",
            ),
        ):
            yield GaugeMetricFamily(name, text)
        yield GaugeMetricFamily(
            "netplumb_tunnel_up",
            "1 when the overlay tunnel of a bridge towards a peer is up, else 0 (sampled)",
            labels=["bridge", "peer", "type"],
        )
        yield GaugeMetricFamily(
            "netplumb_sample_age_seconds",
            "Seconds since endpoints_not_ready and tunnel_up were sampled",
        )
        yield GaugeMetricFamily(
            "netplumb_dependency_up",
            "1 when a dependency in use (ovsdb, ovs-vswitchd, docker, etcd) is reachable, else 0",
            labels=["dependency"],
        )

    def _fill(self, families: list[GaugeMetricFamily]) -> None:
        by_name = {f.name: f for f in families}

        def add(name: str, value: float, labels: list[str] | None = None) -> None:
            by_name[name].add_metric(labels or [], value)

        add("netplumb_build_info", 1, [__version__])
        engine = self.metrics.engine
        if engine is None:  # still starting: no state yet
            return
        store = engine.store
        add("netplumb_endpoints", len(store.endpoints()))
        add("netplumb_bridges", len(store.bridges()))
        add("netplumb_peers", len(store.peers()))
        sample = self.metrics.sample
        if sample.at:
            add("netplumb_endpoints_not_ready", sample.endpoints_not_ready)
            for t in sample.tunnels:
                add("netplumb_tunnel_up", 1 if t.up else 0, [t.bridge, t.peer, t.type])
            add("netplumb_sample_age_seconds", max(0.0, time.time() - sample.at))
        for name, up in dependencies(engine):
            add("netplumb_dependency_up", 1 if up else 0, [name])


# ------------------------------------------------------------------ HTTP


class MetricsServer:
    """``/metrics`` over plain HTTP on one address, in daemon threads."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._httpd: ThreadingWSGIServer | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        """Bind and serve. Raises OSError (its strerror says why: in use, not
        an address of this host) with nothing left open."""
        family, port = _family(self.host, self.port), self.port
        app = _only_metrics(make_wsgi_app(self.metrics.registry))

        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        class Server(ThreadingWSGIServer):
            address_family = family

            def process_request(self, request: Any, client_address: Any) -> None:
                # Any local user can open connections: a thread each, but
                # only MAX_CONNECTIONS at a time; the rest are closed at once.
                if not slots.acquire(blocking=False):
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hangs up or times out is not worth a traceback.
                log.debug("metrics: connection from %s failed", client_address, exc_info=True)

            def server_bind(self) -> None:
                # HTTPServer.server_bind resolves the host name of the bound
                # address (getfqdn): a DNS query, slow where DNS is not.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = str(self.server_address[0]), port
                self.setup_environ()

        from wsgiref.simple_server import WSGIRequestHandler

        class Handler(WSGIRequestHandler):
            timeout = 3  # a client that sends nothing does not hold a slot for long

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = Server((self.host, self.port), Handler)
        httpd.set_app(app)
        self._httpd = httpd
        threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="metrics-http",
            daemon=True,
        ).start()

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()


def _family(host: str, port: int) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name: its first address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return infos[0][0]


def _only_metrics(app: Callable[..., Any]) -> Callable[..., Any]:
    """``/metrics`` (and ``/``) serve the metrics; other paths are 404 with a
    pointer."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "/") in ("/", "/metrics"):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"netplumbd serves Prometheus metrics on /metrics\n"]

    return serve
