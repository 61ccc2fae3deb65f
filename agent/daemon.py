"""netplumbd: the netplumb agent daemon.

Start-up order: load config, open the store, probe the kernel, reconcile the
host to the store (recreating what vanished while the daemon was down,
collecting tagged orphans), then serve. SIGTERM and SIGINT stop serving and
exit; the data plane is left exactly as it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from . import __version__
from . import config as config_mod
from .errors import NetplumbError

if TYPE_CHECKING:
    from .engine import Engine
    from .metrics import MetricsServer

log = logging.getLogger("netplumb.daemon")


def _key_list() -> str:
    """The configuration keys, wrapped: made from Config so it cannot drift."""
    keys = ", ".join(f.name for f in fields(config_mod.Config))
    return textwrap.fill(
        "configuration: settings come from the defaults, then the TOML file given with "
        f"--config (keys: {keys}), then these flags; flags win. Each key is also a flag "
        "(--KEY with '-' for '_'); deploy/config/netplumbd.toml documents every key with "
        "its default. --check-config checks a configuration without starting.",
        width=78,
        break_on_hyphens=False,
    )


EPILOG = (
    _key_list()
    + """

cluster mode: with --etcd the host registers itself and finds its peers
there (no 'peer add'), builds every network defined with 'netplumb network
create', allocates addresses cluster-wide and answers DNS for endpoint names
on each network's DNS address.

access: the unix socket is mode 0660, owned by root and --socket-group; only
root and that group's members can use it. TCP is off unless --listen is given,
and then needs TLS with client certificates (--tls-cert, --tls-key,
--tls-client-ca) or, explicitly, --insecure-tcp. See docs/security.md.

metrics: Prometheus metrics (names netplumb_*) are served on
http://127.0.0.1:9464/metrics by default, to any user of this host; --metrics-address
chooses another ADDRESS:PORT, 'off' turns them off.

examples:
  netplumbd                                  # defaults, as the systemd unit runs it
  netplumbd --socket /tmp/np.sock --state-dir /tmp/np-state --log-level debug
  netplumbd --listen 198.18.0.1:7443 --tls-cert /etc/netplumb/tls/server.crt \\
      --tls-key /etc/netplumb/tls/server.key --tls-client-ca /etc/netplumb/tls/ca.crt
  netplumbd --etcd http://198.18.0.1:2379,http://198.18.0.2:2379 --host-name h1
  netplumbd --metrics-address 198.18.0.1:9464   # a Prometheus server elsewhere scrapes it
  netplumbd --config /etc/netplumb/netplumbd.toml --check-config   # after editing it
"""
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netplumbd",
        description="netplumb agent: serves the netplumb gRPC API and keeps this host's "
        "bridges and container interfaces as recorded.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration (file, flags and the files they name) and exit: "
        "0 and a one-line summary when it is valid, 2 naming the key at fault; "
        "nothing is created or started",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help=f"unix socket to serve on (default {config_mod.DEFAULT_SOCKET})",
    )
    p.add_argument(
        "--socket-group", metavar="GROUP", help="group allowed to use the socket (default netplumb)"
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"where state is kept (default {config_mod.DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--ovsdb", metavar="URL", help=f"OVSDB endpoint (default {config_mod.DEFAULT_OVSDB})"
    )
    p.add_argument(
        "--docker-url", metavar="URL", help=f"Docker API (default {config_mod.DEFAULT_DOCKER_URL})"
    )
    p.add_argument(
        "--underlay-address",
        metavar="IP",
        help="local tunnel endpoint address (default: the source address towards each peer)",
    )
    p.add_argument(
        "--ovs-datapath-type",
        choices=("auto", "system", "netdev"),
        help="datapath of the OVS bridges netplumb creates (default auto: system if the "
        "kernel has the OVS datapath, else netdev)",
    )
    p.add_argument("--log-level", choices=config_mod.LOG_LEVELS, help="default info")
    p.add_argument(
        "--metrics-address",
        metavar="ADDRESS:PORT|off",
        help="serve Prometheus metrics on http://ADDRESS:PORT/metrics ([IPV6]:PORT for IPv6), "
        f"or 'off' (default {config_mod.DEFAULT_METRICS_ADDRESS}: local users only)",
    )
    tcp = p.add_argument_group("TCP (off by default)")
    tcp.add_argument(
        "--listen",
        metavar="ADDRESS:PORT",
        help="also serve on TCP ([IPV6]:PORT for IPv6); needs the three --tls-* options "
        "or --insecure-tcp",
    )
    tcp.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain) of the daemon")
    tcp.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    tcp.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="PEM CA certificate(s); only clients with a certificate it signed are accepted",
    )
    tcp.add_argument(
        "--insecure-tcp",
        action="store_true",
        default=None,
        help="serve --listen as plaintext TCP without client authentication: anyone who "
        "reaches the port controls this host's networking (tests, trusted labs only)",
    )
    cl = p.add_argument_group("cluster mode (off by default: standalone)")
    cl.add_argument(
        "--etcd",
        metavar="URL[,URL...]",
        help="etcd client URLs: join the cluster (hosts find each other, networks, addresses, names)",
    )
    cl.add_argument("--etcd-prefix", metavar="KEY", help="key prefix in etcd (default /netplumb)")
    cl.add_argument("--etcd-ca", metavar="FILE", help="PEM CA of etcd's certificate (https URLs)")
    cl.add_argument("--etcd-cert", metavar="FILE", help="PEM client certificate for etcd")
    cl.add_argument("--etcd-key", metavar="FILE", help="private key of --etcd-cert")
    cl.add_argument(
        "--host-name", metavar="NAME", help="this host's name in the cluster (default: hostname)"
    )
    cl.add_argument(
        "--cluster-ttl",
        type=int,
        metavar="SECONDS",
        help="how long a dead host stays in its peers' mesh (default 10)",
    )
    cl.add_argument(
        "--dns-upstreams",
        metavar="IP[:PORT],...",
        help="resolvers for names outside the cluster's networks (default: refuse them)",
    )
    p.add_argument("--version", action="version", version=f"netplumbd {__version__}")
    return p


def setup_logging(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Libraries (pyroute2, asyncio, grpc) log at WARNING and above only; their
    # debug output is per-message noise.
    handler.addFilter(lambda r: r.name.startswith("netplumb") or r.levelno >= logging.WARNING)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_mod.from_args(args)
        tls = config_mod.load_tls(cfg)
        config_mod.check_etcd_files(cfg)
    except config_mod.ConfigError as e:
        print(f"netplumbd: {e}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"netplumbd: {config_mod.summary(cfg, args.config)}")
        return 0
    setup_logging(config_mod.log_level(cfg))
    if os.geteuid() != 0:
        log.warning("not running as root: netlink changes will fail (EPERM)")

    # From here on SIGTERM and SIGINT stop the daemon cleanly: one that comes
    # while it starts is acted on as soon as it serves.
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info(
            "received %s, stopping (the data plane stays as it is)", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Bound first: a port in use stops the start before anything is touched.
    try:
        metrics_server = _serve_metrics(cfg)
    except OSError as e:
        log.error(
            "cannot serve metrics on %s: %s; metrics_address (--metrics-address) must be a "
            "free port on an address of this host: choose another ADDRESS:PORT, or 'off' "
            "(ss -ltnp shows who holds a port)",
            cfg.metrics_address,
            e.strerror or e,
        )
        return 1
    metrics = metrics_server.metrics if metrics_server is not None else None

    # Imported late so that --help and config errors stay fast.
    from .api.server import Server
    from .drivers.netlink import NetlinkDriver
    from .engine import Engine
    from .store import FileStore

    try:
        store = FileStore(cfg.state_dir)
    except NetplumbError as e:
        log.error("%s%s", e.message, f" ({e.hint})" if e.hint else "")
        return 1
    from .drivers.ovs import OvsDriver

    driver = NetlinkDriver(fault_inject=os.environ.get("NETPLUMB_FAULT_INJECT", ""))
    from .drivers.docker import DockerDriver

    ovs = OvsDriver(cfg.ovsdb, cfg.ovs_datapath_type)
    docker = DockerDriver(cfg.docker_url)
    from .drivers.dhcp import DhcpDriver
    from .drivers.tc import run_tc

    dhcp = DhcpDriver(cfg.state_dir)
    engine = Engine(store, driver, ovs, cfg.underlay_address, docker, dhcp=dhcp, tc=run_tc)
    if metrics is not None:
        metrics.watch(engine)  # before the start-up reconcile, which it counts
    driver.features()
    # Give a present OVS a moment to connect before the start-up reconcile
    # (OVS bridges need it) and before serving; later (re)connections
    # reconcile again by themselves.
    ovs.wait_connected(3.0)

    cluster = None
    dns = None
    if config_mod.etcd_urls(cfg):
        from .cluster import Cluster
        from .drivers.etcd import EtcdDriver

        etcd = EtcdDriver(
            config_mod.etcd_urls(cfg),
            cfg.etcd_prefix,
            ca=cfg.etcd_ca,
            cert=cfg.etcd_cert,
            key=cfg.etcd_key,
        )
        cluster = Cluster(
            etcd, cfg.host_name or os.uname().nodename, store.agent_id, __version__, cfg.cluster_ttl
        )
        engine.cluster = cluster

    repaired, failed, collected = engine.reconcile(at_start=True)
    log.info(
        "reconciled at start: %d repaired, %d failed, %d orphans collected",
        len(repaired),
        len(failed),
        len(collected),
    )
    for d in failed:
        log.warning("could not repair %s %s: %s", d.object, d.name, d.detail)
    dhcp.forget_unknown(set(store.endpoints()))  # clients of endpoints gone meanwhile

    def on_ovs_connect() -> None:
        if any(b.spec.kind.value == "ovs" for b in store.bridges().values()):
            r, f, c = engine.reconcile()
            log.info(
                "OVS (re)connected: %d repaired, %d failed, %d collected", len(r), len(f), len(c)
            )

    ovs.on_connect.append(on_ovs_connect)
    # Containers restart, die and get removed: follow them (reconnecting
    # with backoff when dockerd restarts).
    docker.watch(engine.on_docker_event)

    server = Server(
        engine,
        cfg.socket,
        cfg.state_dir,
        group=cfg.socket_group,
        listen=cfg.listen,
        tls=tls,
        insecure_tcp=cfg.insecure_tcp,
        metrics=metrics,
    )
    try:
        server.start()
    except NetplumbError as e:
        log.error("cannot serve: %s%s", e.message, f" ({e.hint})" if e.hint else "")
        return 1
    except OSError as e:
        log.error("cannot serve: %s", e)
        return 1
    if cluster is not None:
        dns = _join_cluster(cluster, engine, cfg)
    server.set_serving()
    log.info("netplumbd %s ready (state in %s)", __version__, store.path)

    from .sdnotify import notify, start_watchdog

    serving = cfg.socket + (f" and tcp:{cfg.listen}" if cfg.listen else "")
    notify(f"READY=1\nSTATUS=serving on {serving}\nMAINPID={os.getpid()}")
    start_watchdog(stop)
    while not stop.wait(1.0):
        pass
    notify("STOPPING=1")
    server.stop()
    if dns is not None:
        dns.close()
    if cluster is not None:
        # The registration is left to expire: a restart (an upgrade) re-joins
        # within the TTL and the peers' tunnels never go down meanwhile.
        cluster.etcd.close()
    if metrics_server is not None:
        metrics_server.metrics.close()
        metrics_server.close()
    ovs.close()
    docker.close()
    driver.close()
    log.info("stopped")
    return 0


def _serve_metrics(cfg: config_mod.Config) -> MetricsServer | None:
    """The metrics, served on metrics_address (None when it is off). Raises
    OSError when the address cannot be bound."""
    where = config_mod.metrics_endpoint(cfg)
    if where is None:
        return None
    from prometheus_client import disable_created_metrics

    from .metrics import Metrics, MetricsServer

    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    server = MetricsServer(Metrics(), *where)
    server.start()
    if where[0] not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "metrics on http://%s/metrics are readable by anyone who reaches that address "
            "(bridge and peer names, counts); restrict it with a firewall, or keep the "
            "default %s",
            server.address,
            config_mod.DEFAULT_METRICS_ADDRESS,
        )
    else:
        log.info("serving metrics on http://%s/metrics", server.address)
    return server


def _join_cluster(cluster: Any, engine: Engine, cfg: config_mod.Config) -> Any:
    """Register this host, follow hosts, networks and names, and answer DNS
    on every network's DNS address."""
    from .dns import DnsServer

    upstreams = config_mod.dns_upstreams(cfg)
    dns = DnsServer(cluster.lookup, upstreams, forward=bool(upstreams))

    class Members:
        def sync_cluster_peers(self, wanted: Any) -> None:
            engine.sync_cluster_peers(wanted)

        def sync_remote_endpoints(self, table: Any) -> None:
            engine.sync_remote_endpoints(table)

        def sync_networks(self, networks: Any) -> None:
            engine.sync_networks(networks)
            wanted = {n: str(net.dns) for n, net in networks.items() if net.dns is not None}
            for name, e in dns.follow(wanted).items():
                log.error("cluster: DNS for network %s not served: %s", name, e)

    try:
        underlay = cfg.underlay_address or engine._underlay()[0]
    except NetplumbError as e:
        log.error("cluster: cannot find this host's underlay address: %s", e.message)
        underlay = ""
    cluster.start(Members(), underlay)
    return dns


if __name__ == "__main__":
    sys.exit(main())
